package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/appliance/narinfo"
	"cairn/appliance/upstream"
)

// Errors the cache service answers with, for handlers to branch on.
var (
	// ErrUnavailable: no upstream could be asked; the client should retry.
	ErrUnavailable = upstream.ErrUnavailable
	// ErrNoTrust: an upstream has no trusted key and unsigned paths were
	// not allowed.
	ErrNoTrust = errors.New("upstream has no trusted key")
)

// ServiceConfig is everything a Service needs besides its Store.
type ServiceConfig struct {
	Upstreams   []*upstream.Upstream  // tried in priority order
	TrustedKeys []signature.PublicKey // a fetched narinfo needs a valid signature from one
	// Insecure accepts narinfos without a valid trusted signature.
	Insecure bool
	Key      signature.SecretKey // cairn's signing key
	// Prefetch starts fetching a NAR when its narinfo is first served.
	Prefetch        bool
	PrefetchWorkers int           // background NAR fetches at once; default 2
	PrefetchQueue   int           // narinfos waiting for a prefetch worker; default 256
	LookupTimeout   time.Duration // bound on finding a narinfo upstream; default 60s
	PendingTTL      time.Duration // how long a served, not yet fetched narinfo is remembered; default 1h
	PendingMax      int           // bound on those; default 100000
	// UploadKeys, when set, are the keys an uploaded narinfo must be
	// signed with; otherwise any holder of a write token may upload.
	UploadKeys []signature.PublicKey
	// UploadGrace is how long an uploaded NAR waits for its narinfo before
	// it is dropped; default 1h.
	UploadGrace time.Duration
	// GCEvery is how often GC runs on its own, so that unclaimed uploads
	// and orphan chunks go without an operator; default DefaultGCEvery,
	// negative never.
	GCEvery time.Duration
	// MaxSize is the physical size (stored chunk bytes, each counted once)
	// above which least recently used paths are evicted; 0 means no limit.
	MaxSize uint64
	// LowWatermark is the share of MaxSize eviction runs down to; default 0.9.
	LowWatermark float64
	// PlainNAR points narinfos at nar/<h>.nar with Compression: none, for
	// clients older than Nix 2.4; by default they name nar/<h>.nar.zst.
	PlainNAR bool
	Logger   *slog.Logger
}

// Service is the binary cache: the store, its upstreams and its key.
type Service struct {
	cfg    ServiceConfig
	store  *Store
	ups    []*upstream.Upstream
	pubKey string
	log    *slog.Logger

	ctx    context.Context // bounds background fetches; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lookups  group[string, *narinfo.Info]
	rendered renderCache

	pendingMu    sync.Mutex
	pending      map[[32]byte]*pendingNAR // by NarHash
	pendingPaths map[string]*narinfo.Info // the same narinfos by store hash

	prefetch chan [32]byte

	lifeMu    sync.Mutex // one eviction, GC or repair at a time
	evictKick chan struct{}
	lastEvict atomic.Pointer[EvictReport]
	lastGC    atomic.Pointer[GCReport]

	stats serviceStats
}

// pendingNAR is a NAR whose narinfo was served but which is not stored yet:
// where to fetch it, and the narinfos to record once it is.
type pendingNAR struct {
	infos   []*narinfo.Info
	from    int // index of the upstream the first narinfo came from
	expires time.Time
}

type serviceStats struct {
	hits, misses, notFound atomic.Uint64
	upHits, upMisses       []atomic.Uint64 // per upstream
	fetches, fetchFailures atomic.Uint64
}

// NewService returns a cache over store. Close stops it; the caller closes
// the store afterwards.
func NewService(store *Store, cfg ServiceConfig) (*Service, error) {
	if cfg.PrefetchWorkers <= 0 {
		cfg.PrefetchWorkers = 2
	}
	if cfg.PrefetchQueue <= 0 {
		cfg.PrefetchQueue = 256
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 60 * time.Second
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = time.Hour
	}
	if cfg.PendingMax <= 0 {
		cfg.PendingMax = 100000
	}
	if cfg.LowWatermark <= 0 || cfg.LowWatermark > 1 {
		cfg.LowWatermark = DefaultLowWatermark
	}
	if cfg.UploadGrace <= 0 {
		cfg.UploadGrace = time.Hour
	}
	if cfg.GCEvery == 0 {
		cfg.GCEvery = DefaultGCEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pub := cfg.Key.ToPublicKey()
	if pub.Name == "" || len(pub.Data) == 0 {
		return nil, errors.New("new service: no signing key")
	}
	if len(cfg.Upstreams) > 0 && len(cfg.TrustedKeys) == 0 && !cfg.Insecure {
		return nil, fmt.Errorf("new service: %w: pass --trusted-key NAME:BASE64 for the upstreams' keys, or --insecure-no-signatures to accept unsigned paths", ErrNoTrust)
	}
	ups := append([]*upstream.Upstream(nil), cfg.Upstreams...)
	sort.SliceStable(ups, func(i, j int) bool { return ups[i].Priority() < ups[j].Priority() })
	s := &Service{cfg: cfg, store: store, ups: ups, log: cfg.Logger,
		pubKey:  pub.String(),
		pending: map[[32]byte]*pendingNAR{}, pendingPaths: map[string]*narinfo.Info{},
		prefetch: make(chan [32]byte, cfg.PrefetchQueue), evictKick: make(chan struct{}, 1)}
	s.stats.upHits = make([]atomic.Uint64, len(ups))
	s.stats.upMisses = make([]atomic.Uint64, len(ups))
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.Insecure {
		s.log.Warn("INSECURE: accepting upstream paths without a valid trusted signature (--insecure-no-signatures)")
	}
	s.wg.Add(2)
	go s.sweepUploadsLoop()
	go s.lifecycleLoop()
	if cfg.Prefetch {
		for range cfg.PrefetchWorkers {
			s.wg.Add(1)
			go s.prefetchLoop()
		}
	}
	return s, nil
}

// Close aborts background fetches and waits for them to end. The store
// stays open.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
	for _, u := range s.ups {
		u.Close()
	}
}

// Store returns the service's store.
func (s *Service) Store() *Store { return s.store }

// PublicKey returns cairn's public key as NAME:BASE64.
func (s *Service) PublicKey() string { return s.pubKey }

// Health checks that both stores answer.
func (s *Service) Health(ctx context.Context) error {
	if _, err := s.store.ix.Stats(); err != nil {
		return fmt.Errorf("health: index: %w", err)
	}
	if _, err := s.store.chunks.Has([32]byte{}); err != nil {
		return fmt.Errorf("health: chunks: %w", err)
	}
	return ctx.Err()
}

// narURL is the URL cairn's narinfos give for a NAR.
func (s *Service) narURL(h [32]byte) (url, compression string) { return NarURL(h, s.cfg.PlainNAR) }

// render writes the narinfo cairn serves for a stored record.
func (s *Service) render(r *NarInfo) []byte {
	return SignedNarInfo(r, s.cfg.Key, s.cfg.PlainNAR).Marshal()
}

func hasSig(sigs []string, name string) bool {
	for _, sig := range sigs {
		if len(sig) > len(name) && sig[len(name)] == ':' && sig[:len(name)] == name {
			return true
		}
	}
	return false
}

// record turns a verified upstream narinfo into a store record signed by
// cairn.
func (s *Service) record(info *narinfo.Info, source string) *NarInfo {
	return NewRecord(info, s.cfg.Key, source)
}

// NarInfo returns the narinfo text for a store hash. A path not stored yet
// is looked up upstream; when found, its NAR becomes fetchable and, with
// prefetch set, starts arriving in the background. It fails with
// ErrNotFound when no upstream has it and ErrUnavailable when an upstream
// that might have it could not be asked.
func (s *Service) NarInfo(ctx context.Context, hash string, prefetch bool) ([]byte, error) {
	if !narinfo.ValidHash(hash) {
		return nil, fmt.Errorf("narinfo %q: %w", hash, narinfo.ErrBad)
	}
	gen := s.store.ix.Generation()
	if b := s.rendered.get(hash, gen); b != nil {
		s.stats.hits.Add(1)
		s.store.Touch(hash)
		return b, nil
	}
	r, err := s.store.ix.LookupNarInfo(hash)
	if err != nil {
		return nil, err
	}
	if r != nil {
		s.stats.hits.Add(1)
		s.store.Touch(hash)
		b := s.render(r)
		s.rendered.put(hash, gen, b)
		return b, nil
	}
	info := s.pendingPath(hash)
	if info == nil && s.missEverywhere(hash) {
		s.stats.notFound.Add(1)
		return nil, ErrNotFound // no error chain to build: the hot 404
	}
	if info == nil {
		info, err = s.lookups.do(hash, func() (*narinfo.Info, error) { return s.lookup(hash) })
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			s.stats.notFound.Add(1)
		}
		return nil, err
	}
	s.stats.misses.Add(1)
	if r, err := s.store.ix.NarInfo(hash); err == nil {
		return s.render(r), nil // recorded meanwhile, or the NAR was stored already
	}
	if prefetch && s.cfg.Prefetch {
		select {
		case s.prefetch <- info.NarHash:
		default:
			s.log.Debug("prefetch queue full", "nar", FormatHash(info.NarHash))
		}
	}
	out := *info
	out.Sigs = append([]string(nil), info.Sigs...)
	out.Sign(s.cfg.Key)
	out.URL, out.Compression = s.narURL(info.NarHash)
	out.FileHash, out.FileSize = "", 0
	return out.Marshal(), ctx.Err()
}

// missEverywhere reports whether every upstream remembers a miss for hash.
func (s *Service) missEverywhere(hash string) bool {
	for _, u := range s.ups {
		if !u.Remembers(hash) {
			return false
		}
	}
	return true
}

// lookup finds hash at the first upstream, in priority order, that has it
// with a trusted signature, and makes its NAR fetchable.
func (s *Service) lookup(hash string) (*narinfo.Info, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.LookupTimeout)
	defer cancel()
	info, from, err := s.find(ctx, hash, -1, nil)
	if err != nil {
		return nil, err
	}
	if err := s.store.Record(s.record(info, s.ups[from].String())); err == nil {
		return info, nil // the NAR is stored under another path already
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	s.addPending(info, from)
	return info, nil
}

// find asks the upstreams after index skip, in priority order, for hash,
// and returns the first narinfo with a trusted signature (and, when want is
// set, the same NAR). Untrusted narinfos are logged and passed over.
func (s *Service) find(ctx context.Context, hash string, skip int, want *narinfo.Info) (*narinfo.Info, int, error) {
	var unavailable error
	for i := skip + 1; i < len(s.ups); i++ {
		u := s.ups[i]
		b, err := u.NarInfo(ctx, hash)
		if errors.Is(err, upstream.ErrNotFound) {
			s.stats.upMisses[i].Add(1)
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, -1, ctx.Err()
			}
			s.log.Warn("upstream narinfo", "upstream", u.String(), "hash", hash, "err", err)
			unavailable = err
			continue
		}
		info, err := narinfo.Parse(b)
		if err == nil && info.Hash() != hash {
			err = fmt.Errorf("StorePath %s does not match the requested hash", info.StorePath)
		}
		if err == nil {
			_, err = parseCompression(info)
		}
		if err != nil {
			s.log.Warn("upstream narinfo refused", "upstream", u.String(), "hash", hash, "err", err)
			continue
		}
		if !s.cfg.Insecure {
			if _, ok := info.Verify(s.cfg.TrustedKeys); !ok {
				s.log.Warn("upstream narinfo refused: no valid signature from a trusted key", "upstream", u.String(), "path", info.StorePath)
				continue
			}
		}
		if want != nil && (info.NarHash != want.NarHash || info.NarSize != want.NarSize) {
			continue
		}
		s.stats.upHits[i].Add(1)
		return info, i, nil
	}
	if unavailable != nil {
		return nil, -1, fmt.Errorf("narinfo %s: %w", hash, unavailable)
	}
	return nil, -1, fmt.Errorf("narinfo %s: %w", hash, ErrNotFound)
}

func parseCompression(info *narinfo.Info) (Compression, error) {
	return ParseCompression(info.Compression)
}

func (s *Service) addPending(info *narinfo.Info, from int) {
	now := time.Now()
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	s.pendingPaths[info.Hash()] = info
	if p := s.pending[info.NarHash]; p != nil {
		p.expires = now.Add(s.cfg.PendingTTL)
		for _, have := range p.infos {
			if have.StorePath == info.StorePath {
				return
			}
		}
		p.infos = append(p.infos, info)
		return
	}
	if len(s.pending) >= s.cfg.PendingMax {
		for h, p := range s.pending {
			if now.After(p.expires) {
				s.dropPending(h, p)
			}
		}
		for h, p := range s.pending { // still full: make room
			if len(s.pending) < s.cfg.PendingMax {
				break
			}
			s.dropPending(h, p)
		}
	}
	s.pending[info.NarHash] = &pendingNAR{infos: []*narinfo.Info{info}, from: from, expires: now.Add(s.cfg.PendingTTL)}
}

// dropPending forgets a pending NAR; pendingMu is held.
func (s *Service) dropPending(narHash [32]byte, p *pendingNAR) {
	delete(s.pending, narHash)
	for _, info := range p.infos {
		delete(s.pendingPaths, info.Hash())
	}
}

// pendingPath returns the served, not yet stored narinfo of a store hash.
func (s *Service) pendingPath(hash string) *narinfo.Info {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	info := s.pendingPaths[hash]
	if info == nil {
		return nil
	}
	p := s.pending[info.NarHash]
	if p == nil || time.Now().After(p.expires) {
		return nil
	}
	// Served again: its NAR must stay fetchable as long as after a lookup.
	p.expires = time.Now().Add(s.cfg.PendingTTL)
	return info
}

// getPending returns what is known about fetching narHash.
func (s *Service) getPending(narHash [32]byte) (*pendingNAR, bool) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	p := s.pending[narHash]
	if p == nil || time.Now().After(p.expires) {
		return nil, false
	}
	cp := *p
	cp.infos = append([]*narinfo.Info(nil), p.infos...)
	return &cp, true
}

// NARSource is where a NAR's bytes come from: the store, or an ingest in
// progress that the response follows.
type NARSource struct {
	Stored *NAR
	Live   *Live
}

// OpenNAR returns the stored NAR, or the live view of its ingest, starting
// the fetch from upstream if its narinfo was served and nobody fetches it
// yet. It fails with ErrNotFound for a NAR cairn knows nothing about.
func (s *Service) OpenNAR(ctx context.Context, narHash [32]byte) (NARSource, error) {
	n, err := s.store.OpenNAR(ctx, narHash)
	if err == nil {
		s.store.TouchNAR(narHash)
		return NARSource{Stored: n}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return NARSource{}, err
	}
	if live := s.store.Follow(narHash); live != nil {
		return NARSource{Live: live}, nil
	}
	live, err := s.fetch(narHash)
	if err != nil {
		return NARSource{}, err
	}
	if live == nil { // stored meanwhile
		n, err := s.store.OpenNAR(ctx, narHash)
		return NARSource{Stored: n}, err
	}
	return NARSource{Live: live}, nil
}

// WaitNAR returns the stored NAR, waiting for its fetch if one runs or can
// start.
func (s *Service) WaitNAR(ctx context.Context, narHash [32]byte) (*NAR, error) {
	src, err := s.OpenNAR(ctx, narHash)
	if err != nil {
		return nil, err
	}
	if src.Live != nil {
		if err := src.Live.Wait(ctx); err != nil {
			return nil, err
		}
		return s.store.OpenNAR(ctx, narHash)
	}
	return src.Stored, nil
}

// fetch starts fetching a pending NAR from its upstreams, or joins the
// fetch that runs. It returns nil when the NAR is stored already.
func (s *Service) fetch(narHash [32]byte) (*Live, error) {
	p, ok := s.getPending(narHash)
	if !ok {
		if live := s.store.Follow(narHash); live != nil {
			return live, nil
		}
		if stored, err := s.store.ix.HasManifest(narHash); err != nil || stored {
			return nil, err // committed just now: the caller opens it
		}
		return nil, fmt.Errorf("nar %s: %w", FormatHash(narHash), ErrNotFound)
	}
	first := p.infos[0]
	want := Want{Info: s.record(first, s.ups[p.from].String())}
	src := &failover{s: s, info: first, from: p.from}
	live, started, err := s.store.Start(s.ctx, want, src.open)
	if err != nil || live == nil {
		if err == nil {
			s.recordPending(narHash)
		}
		return live, err
	}
	if !started {
		return live, nil // whoever started it records the outcome
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.stats.fetches.Add(1)
		start := time.Now()
		if err := live.Wait(s.ctx); err != nil {
			s.stats.fetchFailures.Add(1)
			s.log.Warn("fetch nar", "nar", FormatHash(narHash), "path", first.StorePath, "err", err)
			return
		}
		s.log.Info("fetched nar", "nar", FormatHash(narHash), "path", first.StorePath,
			"size", first.NarSize, "duration", time.Since(start).Round(time.Millisecond))
		s.recordPending(narHash)
		s.kickEvict()
	}()
	return live, nil
}

// recordPending stores every narinfo served for a NAR that is now stored.
func (s *Service) recordPending(narHash [32]byte) {
	s.pendingMu.Lock()
	p := s.pending[narHash]
	if p != nil {
		s.dropPending(narHash, p)
	}
	s.pendingMu.Unlock()
	if p == nil {
		return
	}
	for _, info := range p.infos {
		if err := s.store.Record(s.record(info, s.ups[p.from].String())); err != nil {
			s.log.Warn("record narinfo", "path", info.StorePath, "err", err)
		}
	}
}

func (s *Service) prefetchLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case h := <-s.prefetch:
			live, err := s.fetch(h)
			if err != nil || live == nil {
				continue
			}
			_ = live.Wait(s.ctx) // bounds how many prefetches run at once
		}
	}
}

// Listing returns the .ls listing of a store path's NAR, fetching the NAR
// first when only its narinfo is known.
func (s *Service) Listing(ctx context.Context, hash string) ([]byte, error) {
	if _, err := s.NarInfo(ctx, hash, false); err != nil {
		return nil, err
	}
	var narHash [32]byte
	if r, err := s.store.ix.NarInfo(hash); err == nil {
		narHash = r.NarHash
	} else if info := s.pendingPath(hash); info != nil {
		narHash = info.NarHash
	} else {
		return nil, fmt.Errorf("listing %s: %w", hash, ErrNotFound)
	}
	n, err := s.WaitNAR(ctx, narHash)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", hash, err)
	}
	return n.Listing()
}

// Paths returns the basenames (hash-name) of every stored store path, in
// store hash order.
func (s *Service) Paths() ([]string, error) {
	var out []string
	err := s.store.ix.ForEachNarInfo(func(n *NarInfo) error {
		out = append(out, strings.TrimPrefix(n.StorePath, "/nix/store/"))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list paths: %w", err)
	}
	return out, nil
}

// Report is what `cairn stats` shows.
type Report struct {
	Paths         uint64           `json:"paths"`
	NARs          uint64           `json:"nars"`
	Chunks        uint64           `json:"chunks"`
	LogicalBytes  uint64           `json:"logical_bytes"`
	PhysicalBytes uint64           `json:"physical_bytes"`
	DedupRatio    float64          `json:"dedup_ratio"`
	Hits          uint64           `json:"hits"`
	Misses        uint64           `json:"misses"`
	NotFound      uint64           `json:"not_found"`
	Fetches       uint64           `json:"fetches"`
	FetchFailures uint64           `json:"fetch_failures"`
	Upstreams     []UpstreamReport `json:"upstreams"`
	MaxSize       uint64           `json:"max_size,omitempty"`
	PinnedRoots   int              `json:"pinned_roots"`
	PinnedPaths   int              `json:"pinned_paths"`
	PinnedBytes   uint64           `json:"pinned_nar_bytes"`
	LastEviction  *EvictReport     `json:"last_eviction,omitempty"`
	LastGC        *GCReport        `json:"last_gc,omitempty"`
}

// UpstreamReport is one upstream's share of the lookups.
type UpstreamReport struct {
	URL      string `json:"url"`
	Priority int    `json:"priority"`
	Hits     uint64 `json:"hits"`
	Misses   uint64 `json:"misses"`
}

// Report gathers the store's counters and the service's.
func (s *Service) Report() (*Report, error) {
	st, err := s.store.Stats()
	if err != nil {
		return nil, err
	}
	r := &Report{Paths: st.NarInfos, NARs: st.NARs, Chunks: st.Chunks, LogicalBytes: st.LogicalBytes,
		PhysicalBytes: st.PhysicalBytes, DedupRatio: st.DedupRatio,
		Hits: s.stats.hits.Load(), Misses: s.stats.misses.Load(), NotFound: s.stats.notFound.Load(),
		Fetches: s.stats.fetches.Load(), FetchFailures: s.stats.fetchFailures.Load()}
	for i, u := range s.ups {
		r.Upstreams = append(r.Upstreams, UpstreamReport{URL: u.String(), Priority: u.Priority(),
			Hits: s.stats.upHits[i].Load(), Misses: s.stats.upMisses[i].Load()})
	}
	r.MaxSize, r.LastEviction, r.LastGC = s.cfg.MaxSize, s.lastEvict.Load(), s.lastGC.Load()
	cands, err := s.store.ix.Candidates()
	if err != nil {
		return nil, err
	}
	pinned, err := s.pinnedClosure(cands)
	if err != nil {
		return nil, err
	}
	pins, err := s.store.ix.Pins()
	if err != nil {
		return nil, err
	}
	r.PinnedRoots = len(pins)
	for _, c := range cands {
		if pinned[c.Base] {
			r.PinnedPaths++
			r.PinnedBytes += c.NarSize
		}
	}
	return r, nil
}
