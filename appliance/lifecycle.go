package appliance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cairn/appliance/narinfo"
	"cairn/kv"
)

// DefaultLowWatermark is the share of MaxSize eviction runs down to.
const DefaultLowWatermark = 0.9

// evictBatch bounds the paths one eviction transaction removes.
const evictBatch = 256

// EvictReport describes one eviction run.
type EvictReport struct {
	Start          time.Time     `json:"start"`
	Duration       time.Duration `json:"duration_ns"`
	Reason         string        `json:"reason"` // "size" or "demand"
	PathsEvicted   int           `json:"paths_evicted"`
	NARsDeleted    int           `json:"nars_deleted"`
	ChunksDeleted  int           `json:"chunks_deleted"`
	PhysicalBefore uint64        `json:"physical_before"`
	PhysicalAfter  uint64        `json:"physical_after"`
	SkippedPinned  int           `json:"skipped_pinned"`
}

// GCReport describes one garbage collection.
type GCReport struct {
	Start          time.Time     `json:"start"`
	Duration       time.Duration `json:"duration_ns"`
	Evict          *EvictReport  `json:"evict,omitempty"`
	UploadsDropped int           `json:"uploads_dropped"`
	OrphanChunks   int           `json:"orphan_chunks"`
	LogRewrites    int           `json:"value_log_rewrites"`
}

// overLimit reports the physical size and whether it exceeds MaxSize.
func (s *Service) overLimit() (uint64, bool, error) {
	st, err := s.store.ix.Stats()
	if err != nil {
		return 0, false, err
	}
	return st.PhysicalBytes, s.cfg.MaxSize > 0 && st.PhysicalBytes > s.cfg.MaxSize, nil
}

// Evict removes least recently used unpinned paths until the physical size
// is at the low watermark of MaxSize. Without force it does nothing below
// MaxSize; with force (on demand) it runs whenever a limit is set. When it
// deleted chunks, the space they held in the chunk store's value log is
// given back afterwards, outside the lifecycle lock and the report's
// Duration: that can take minutes on a large store, and needs nothing the
// lock keeps still.
func (s *Service) Evict(ctx context.Context, force bool) (*EvictReport, error) {
	s.lifeMu.Lock()
	rep, err := s.evict(ctx, force)
	s.lifeMu.Unlock()
	if rep != nil && rep.ChunksDeleted > 0 && ctx.Err() == nil {
		if _, err := s.giveSpaceBack(ctx, "evict"); err != nil && ctx.Err() == nil {
			s.log.Warn("evict: give value-log space back", "err", err)
		}
	}
	return rep, err
}

// giveSpaceBack runs the chunk store's Reclaim for who. ErrBusy, ingests
// that never paused long enough, is logged and is no error: the next GC,
// eviction or recompression gives the space back.
func (s *Service) giveSpaceBack(ctx context.Context, who string) (int, error) {
	n, err := s.store.Reclaim(ctx)
	if errors.Is(err, kv.ErrBusy) {
		s.log.Info(who+": value-log space not given back yet, ingests kept writing", "err", err)
		return n, nil
	}
	return n, err
}

func (s *Service) evict(ctx context.Context, force bool) (*EvictReport, error) {
	phys, over, err := s.overLimit()
	if err != nil || s.cfg.MaxSize == 0 || (!over && !force) {
		return nil, err
	}
	rep := &EvictReport{Start: time.Now(), Reason: "size", PhysicalBefore: phys}
	if !over {
		rep.Reason = "demand"
	}
	if err := s.store.FlushAtimes(); err != nil {
		return nil, err
	}
	target := uint64(float64(s.cfg.MaxSize) * s.cfg.LowWatermark)
	cands, err := s.store.ix.Candidates()
	if err != nil {
		return nil, err
	}
	protected, err := s.pinnedClosure(cands)
	if err != nil {
		return nil, err
	}
	// Paths go in batches, one index transaction each: a batch holds the
	// least recently used paths whose NARs add up to what must go (their
	// stored size is usually smaller, so the loop comes round again),
	// and at most evictBatch of them.
	var batch []string
	for i := 0; i < len(cands) && phys > target; {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		batch = batch[:0]
		var want uint64
		for ; i < len(cands) && len(batch) < evictBatch && want < phys-target; i++ {
			if protected[cands[i].Base] {
				rep.SkippedPinned++
				continue
			}
			batch = append(batch, cands[i].StoreHash)
			want += cands[i].NarSize
		}
		if len(batch) == 0 {
			break
		}
		paths, nars, chunks, err := s.store.DeletePaths(ctx, batch...)
		if err != nil {
			return rep, fmt.Errorf("evict: %w", err)
		}
		rep.PathsEvicted += paths
		rep.NARsDeleted += nars
		rep.ChunksDeleted += chunks
		if phys, _, err = s.overLimit(); err != nil {
			return rep, err
		}
	}
	rep.PhysicalAfter, rep.Duration = phys, time.Since(rep.Start)
	s.lastEvict.Store(rep)
	s.log.Info("evicted", "paths", rep.PathsEvicted, "nars", rep.NARsDeleted, "chunks", rep.ChunksDeleted,
		"physical_before", rep.PhysicalBefore, "physical_after", rep.PhysicalAfter, "reason", rep.Reason,
		"duration", rep.Duration.Round(time.Millisecond))
	return rep, nil
}

// pinnedClosure is the set of basenames every pinned root reaches through
// references, among the cached paths.
func (s *Service) pinnedClosure(cands []kv.Candidate) (map[string]bool, error) {
	pins, err := s.store.ix.Pins()
	if err != nil || len(pins) == 0 {
		return map[string]bool{}, err
	}
	byBase := candidatesByBase(cands)
	roots := make([]string, len(pins))
	for i, p := range pins {
		roots[i] = p.Path
	}
	seen := map[string]bool{}
	walkClosure(roots, byBase, seen, nil)
	return seen, nil
}

func candidatesByBase(cands []kv.Candidate) map[string]*kv.Candidate {
	byBase := make(map[string]*kv.Candidate, len(cands))
	for i := range cands {
		byBase[cands[i].Base] = &cands[i]
	}
	return byBase
}

// walkClosure marks in seen every basename roots reach through the
// references of cached paths, calling visit (when set) with each one and
// its candidate, nil when it is not cached.
func walkClosure(roots []string, byBase map[string]*kv.Candidate, seen map[string]bool, visit func(string, *kv.Candidate)) {
	stack := append([]string(nil), roots...)
	for len(stack) > 0 {
		b := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[b] {
			continue
		}
		seen[b] = true
		c := byBase[b]
		if visit != nil {
			visit(b, c)
		}
		if c != nil {
			stack = append(stack, c.References...)
		}
	}
}

// GC evicts if the store is over its limit, drops uploads whose narinfo
// never came, sweeps orphan chunks, and runs value-log GC until nothing is
// left to rewrite.
func (s *Service) GC(ctx context.Context) (*GCReport, error) {
	rep := &GCReport{Start: time.Now()}
	if err := s.gcLocked(ctx, rep); err != nil {
		return rep, err
	}
	// The value-log GC runs outside the lifecycle lock, so that a long one
	// holds up no delete or eviction. It waits for a Reclaim the
	// recompressor may be running, whose rewrites it does not count.
	var err error
	if rep.LogRewrites, err = s.giveSpaceBack(ctx, "gc"); err != nil {
		return rep, err
	}
	rep.Duration = time.Since(rep.Start)
	s.lastGC.Store(rep)
	s.log.Info("gc", "uploads_dropped", rep.UploadsDropped, "orphan_chunks", rep.OrphanChunks,
		"value_log_rewrites", rep.LogRewrites, "duration", rep.Duration.Round(time.Millisecond))
	return rep, nil
}

// gcLocked is the part of GC that runs under the lifecycle lock.
func (s *Service) gcLocked(ctx context.Context, rep *GCReport) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	var err error
	if rep.Evict, err = s.evict(ctx, false); err != nil {
		return err
	}
	if rep.UploadsDropped, err = s.SweepUploads(ctx, s.cfg.UploadGrace); err != nil {
		return err
	}
	rep.OrphanChunks, err = s.store.SweepOrphans(ctx)
	return err
}

// DefaultGCEvery is how often GC runs on its own unless configured.
const DefaultGCEvery = 6 * time.Hour

// lifecycleLoop evicts when an ingest or the clock says the store may have
// outgrown its limit, and runs GC every cfg.GCEvery.
func (s *Service) lifecycleLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	var gc <-chan time.Time
	if s.cfg.GCEvery > 0 {
		gcTick := time.NewTicker(s.cfg.GCEvery)
		defer gcTick.Stop()
		gc = gcTick.C
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-gc:
			if _, err := s.GC(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Error("gc", "err", err)
			}
			continue
		case <-t.C:
		case <-s.evictKick:
		}
		if _, over, err := s.overLimit(); err != nil || !over {
			continue
		}
		if _, err := s.Evict(s.ctx, false); err != nil && s.ctx.Err() == nil {
			s.log.Error("evict", "err", err)
		}
	}
}

// kickEvict asks the lifecycle loop to check the size.
func (s *Service) kickEvict() {
	select {
	case s.evictKick <- struct{}{}:
	default:
	}
}

// PinEvent is progress of a pin: one closure member checked or fetched.
type PinEvent struct {
	Path   string `json:"path"`
	Action string `json:"action"` // "cached", "fetched" or "failed"
	Bytes  uint64 `json:"bytes,omitempty"`
	Error  string `json:"error,omitempty"`
	Done   int    `json:"done"`
	Queued int    `json:"queued"` // members known so far, done included
}

// ErrBadPath reports a store path argument that is not one.
var ErrBadPath = errors.New("not a store path")

// parseBase accepts /nix/store/<hash>-<name> or <hash>-<name>.
func parseBase(p string) (string, error) {
	base := strings.TrimPrefix(p, "/nix/store/")
	if err := narinfo.ValidStorePath("/nix/store/" + base); err != nil {
		return "", fmt.Errorf("%w: %q", ErrBadPath, p)
	}
	return base, nil
}

// Pin protects the closures of paths from eviction, fetching members that
// are not cached yet from the upstreams. Each root is recorded before its
// closure is filled, so a failure leaves it pinned with what did arrive.
func (s *Service) Pin(ctx context.Context, paths []string, progress func(PinEvent)) error {
	var roots []string
	for _, p := range paths {
		base, err := parseBase(p)
		if err != nil {
			return err
		}
		roots = append(roots, base)
	}
	// Under lifeMu, so a running eviction, which reads the pins once,
	// finishes before the new roots count.
	s.lifeMu.Lock()
	for _, r := range roots {
		if err := s.store.ix.PutPin(r, time.Now()); err != nil {
			s.lifeMu.Unlock()
			return err
		}
	}
	s.lifeMu.Unlock()
	seen := map[string]bool{}
	queue := append([]string(nil), roots...)
	var errs []error
	for done := 0; len(queue) > 0; done++ {
		base := queue[0]
		queue = queue[1:]
		if seen[base] {
			done--
			continue
		}
		seen[base] = true
		ev := PinEvent{Path: base}
		refs, action, size, err := s.ensure(ctx, base)
		ev.Action, ev.Bytes = action, size
		if err != nil {
			ev.Action, ev.Error = "failed", err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", base, err))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		for _, r := range refs {
			if !seen[r] {
				queue = append(queue, r)
			}
		}
		ev.Done, ev.Queued = done+1, done+1+len(queue)
		if progress != nil {
			progress(ev)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("pin: %d closure members are missing: %w", len(errs), errors.Join(errs...))
	}
	return nil
}

// ensure makes a path cached, fetching it if needed, and returns its
// references.
func (s *Service) ensure(ctx context.Context, base string) (refs []string, action string, size uint64, err error) {
	hash := base[:32]
	if r, err := s.store.ix.NarInfo(hash); err == nil {
		return r.References, "cached", r.NarSize, nil
	}
	text, err := s.NarInfo(ctx, hash, false)
	if err != nil {
		return nil, "", 0, err
	}
	info, err := narinfo.Parse(text)
	if err != nil {
		return nil, "", 0, err
	}
	if _, err := s.WaitNAR(ctx, info.NarHash); err != nil {
		return nil, "", 0, err
	}
	s.recordPending(info.NarHash)
	if _, err := s.store.ix.NarInfo(hash); err != nil {
		return nil, "", 0, fmt.Errorf("fetched but not recorded: %w", err)
	}
	return info.References, "fetched", info.NarSize, nil
}

// Unpin releases a pinned root; its closure becomes evictable unless
// another pin reaches it.
func (s *Service) Unpin(path string) error {
	base, err := parseBase(path)
	if err != nil {
		return err
	}
	return s.store.ix.DeletePin(base)
}

// PinReport is one pinned root and its cached closure.
type PinReport struct {
	Path    string    `json:"path"`
	At      time.Time `json:"pinned_at"`
	Members int       `json:"closure_paths"`
	Bytes   uint64    `json:"closure_nar_bytes"`
	Missing int       `json:"missing"` // closure members not cached
}

// Pins lists the pinned roots with their closures' sizes.
func (s *Service) Pins() ([]PinReport, error) {
	pins, err := s.store.ix.Pins()
	if err != nil {
		return nil, err
	}
	cands, err := s.store.ix.Candidates()
	if err != nil {
		return nil, err
	}
	byBase := candidatesByBase(cands)
	out := []PinReport{}
	for _, p := range pins {
		rep := PinReport{Path: p.Path, At: p.At}
		walkClosure([]string{p.Path}, byBase, map[string]bool{}, func(_ string, c *kv.Candidate) {
			if c == nil {
				rep.Missing++
				return
			}
			rep.Members++
			rep.Bytes += c.NarSize
		})
		out = append(out, rep)
	}
	return out, nil
}

// VerifyEvent is progress of a scrub: one NAR checked.
type VerifyEvent struct {
	NarHash string   `json:"nar"`
	Paths   []string `json:"paths,omitempty"`
	OK      bool     `json:"ok"`
	Error   string   `json:"error,omitempty"`
	Dropped bool     `json:"dropped,omitempty"`
	Bytes   uint64   `json:"bytes"`
	Done    int      `json:"done"`
	Total   int      `json:"total"`
}

// VerifyReport sums up a scrub.
type VerifyReport struct {
	NARs     int           `json:"nars"`
	Bytes    uint64        `json:"bytes"`
	Damaged  int           `json:"damaged"`
	Dropped  int           `json:"dropped"`
	Duration time.Duration `json:"duration_ns"`
}

// Verify re-hashes every chunk of every NAR and every NAR against its
// NarHash. With repair, each damaged NAR is dropped with its narinfos, so
// the next request fetches it from upstream again, and a damaged chunk
// goes with the last NAR that named it.
func (s *Service) Verify(ctx context.Context, repair bool, progress func(VerifyEvent)) (*VerifyReport, error) {
	start := time.Now()
	type nar struct {
		hash [32]byte
		size uint64
	}
	var nars []nar
	if err := s.store.ix.ForEachManifest(func(m *kv.Manifest) error {
		nars = append(nars, nar{m.NarHash, m.NarSize})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	rep := &VerifyReport{}
	for i, n := range nars {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		ev := VerifyEvent{NarHash: FormatHash(n.hash), Bytes: n.size, Done: i + 1, Total: len(nars), OK: true}
		err := s.store.Verify(ctx, n.hash)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		rep.NARs++
		rep.Bytes += n.size
		if err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rep.Damaged++
			ev.OK, ev.Error = false, err.Error()
			ev.Paths, _ = s.store.ix.NarPaths(n.hash)
			if repair {
				s.lifeMu.Lock()
				_, derr := s.store.DeleteNAR(ctx, n.hash)
				s.lifeMu.Unlock()
				if derr != nil && !errors.Is(derr, ErrNotFound) {
					return rep, fmt.Errorf("repair %s: %w", FormatHash(n.hash), derr)
				}
				ev.Dropped = true
				rep.Dropped++
			}
			s.log.Warn("verify: damaged NAR", "nar", ev.NarHash, "paths", ev.Paths, "err", err, "dropped", ev.Dropped)
		}
		if progress != nil {
			progress(ev)
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}
