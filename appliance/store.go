// Package appliance is the cache service: it owns the ingest pipeline, reads,
// coalescing and every policy decision over the kv and cdc layers.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"cairn/cdc"
	"cairn/kv"
)

// NarInfo is the metadata of one store path, as stored.
type NarInfo = kv.NarInfo

// Config is everything a Store needs; the zero value of each field means
// its default.
type Config struct {
	Dir        string        // data directory
	Chunker    cdc.Params    // chunker parameters for a new store; must match an existing one
	Level      cdc.Level     // zstd level frames are recompressed to (or written at, with CompressOnIngest)
	Workers    int           // chunk hashing goroutines per ingest
	MaxNARSize uint64        // largest NAR accepted when the expected size is unknown
	XZ         string        // xz decoder: XZLibrary, the xz binary's path, or "-" for pure Go; "" picks the first of these this build and PATH have
	FlushEvery time.Duration // how often batched access times are written
	// CompressOnIngest writes new chunks compressed at Level right away.
	// Otherwise ingest writes stored-block frames, which cost no compression
	// CPU, and the recompressor rewrites them RecompressDelay later.
	CompressOnIngest bool
	// RecompressDelay is how long new frames keep their stored-block form,
	// so that a client resuming a .nar.zst download with Range sees the same
	// bytes. Negative turns background recompression off.
	RecompressDelay time.Duration
	// NoDeltas keeps every chunk an independent frame. Otherwise the
	// recompressor stores a chunk as a delta against a similar stored
	// chunk when that saves an eighth of its frame or more: the later
	// releases of one package then take a fraction of their frames' bytes,
	// and a read of such a chunk decodes its base too (README, "Deltas").
	NoDeltas  bool
	ChunkOpts kv.ChunkOptions
	Logger    *slog.Logger
	// Running, when set, is told how many ingests run (uploads included)
	// each time that number changes, so that the caller can make room for
	// their memory (cairn serve raises its soft memory limit with it). Calls
	// are serialised under a lock: it must be quick and not call the Store.
	Running func(ingests int)
}

// IngestHeadroom is how much heap to allow for each running ingest on top
// of a soft memory limit (see Config.Running): about what one holds (its
// read blocks, chunk buffers and the frames waiting to be written), twice
// over. BenchmarkConcurrentIngests measures it against a fixed limit.
const IngestHeadroom = 16 << 20

// Defaults for Config fields left zero.
const (
	DefaultLevel           = zstd.SpeedBestCompression
	DefaultMaxNARSize      = 64 << 30
	DefaultFlushEvery      = 30 * time.Second
	DefaultRecompressDelay = 2 * time.Minute
)

func (c *Config) setDefaults() {
	if c.Chunker == (cdc.Params{}) {
		c.Chunker = cdc.DefaultParams
	}
	if c.Level == 0 {
		c.Level = DefaultLevel
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.MaxNARSize == 0 {
		c.MaxNARSize = DefaultMaxNARSize
	}
	if c.FlushEvery == 0 {
		c.FlushEvery = DefaultFlushEvery
	}
	if c.RecompressDelay == 0 {
		c.RecompressDelay = DefaultRecompressDelay
	}
	switch {
	case c.XZ == "":
		c.XZ = defaultXZ()
	case c.XZ == "-", c.XZ == XZLibrary && !xzLibBuiltIn:
		c.XZ = ""
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Store is the deduplicated NAR store: chunks in Badger, metadata in bbolt.
type Store struct {
	cfg    Config
	ix     *kv.Index
	chunks *kv.ChunkStore
	codec  *cdc.Codec
	frames *framePool // stored frames' buffers, reused across ingests

	flightMu sync.Mutex
	flights  map[[32]byte]*flight
	runMu    sync.Mutex // orders Config.Running calls
	runs     int        // ingests running, uploads included

	// pinMu guards pinned, the chunks an unfinished ingest or recompression
	// relies on; writing, those an unfinished ingest may still write as
	// stored frames; and deleting, those being deleted right now. A chunk
	// is marked for deletion only under pinMu with no pin, and nobody pins
	// it until the deletion is over (unpinned signals that), so the index
	// read and the chunk delete run without the lock. A recompression
	// starts on a chunk only while no ingest may write it; an ingest that
	// writes it later all the same (its NAR was deleted and asked for again
	// meanwhile) marks it in every recompression holding it, which must then
	// not record its frame over the new one.
	pinMu          sync.Mutex
	unpinned       *sync.Cond
	pinned         map[cdc.ID]int
	writing        map[cdc.ID]int
	deleting       map[cdc.ID]bool
	recompressions map[*recompressRun]bool

	atimeMu sync.Mutex
	atimes  map[string]int64
	narUses map[[32]byte]int64 // NAR reads, credited to every path naming the NAR

	// recompressSegment is the constant of that name; tests lower it.
	recompressSegment int

	kick      chan struct{} // wakes the recompressor
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Data directory layout.
const (
	indexFile = "index.db"
	chunkDir  = "chunks"
)

// Open opens or creates the store in cfg.Dir.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if cfg.Dir == "" {
		return nil, errors.New("open store: no data directory given")
	}
	if err := cfg.Chunker.Validate(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Dir, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Dir, err)
	}
	ix, err := kv.OpenIndex(filepath.Join(cfg.Dir, indexFile), cfg.Chunker)
	if err != nil {
		return nil, err
	}
	opts := cfg.ChunkOpts
	opts.Logger = cfg.Logger
	chunks, err := kv.OpenChunks(filepath.Join(cfg.Dir, chunkDir), opts)
	if err != nil {
		ix.Close()
		return nil, err
	}
	encoders := 1 // the recompressor compresses one frame at a time
	if cfg.CompressOnIngest {
		encoders = cfg.Workers
	}
	codec, err := cdc.NewCodec(cfg.Level, encoders)
	if err != nil {
		chunks.Close()
		ix.Close()
		return nil, err
	}
	s := &Store{
		cfg: cfg, ix: ix, chunks: chunks, codec: codec, frames: newFramePool(cdc.StoredSize(cfg.Chunker.Max)),
		flights: map[[32]byte]*flight{},
		pinned:  map[cdc.ID]int{},
		writing: map[cdc.ID]int{},
		atimes:  map[string]int64{}, narUses: map[[32]byte]int64{},
		deleting:          map[cdc.ID]bool{},
		recompressions:    map[*recompressRun]bool{},
		kick:              make(chan struct{}, 1),
		stop:              make(chan struct{}),
		recompressSegment: recompressSegment,
	}
	s.unpinned = sync.NewCond(&s.pinMu)
	s.wg.Add(1)
	go s.flushLoop()
	if cfg.RecompressDelay > 0 {
		s.wg.Add(1)
		go s.recompressLoop()
	}
	return s, nil
}

// Close stops the background work, flushes access times and closes both
// stores. Ingests still running must have ended; a second Close is a no-op.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		errs := []error{s.FlushAtimes()}
		s.codec.Close()
		errs = append(errs, s.chunks.Close(), s.ix.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Index exposes the metadata index to the rest of the appliance.
func (s *Store) Index() *kv.Index { return s.ix }

// Chunks exposes the chunk store to the rest of the appliance.
func (s *Store) Chunks() *kv.ChunkStore { return s.chunks }

// Codec returns the store's zstd codec.
func (s *Store) Codec() *cdc.Codec { return s.codec }

func (s *Store) flushLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.FlushAtimes(); err != nil {
				s.cfg.Logger.Error("flush access times", "err", err)
			}
		}
	}
}

// Touch records a use of a store path. It is kept in memory and written in
// batches, never one write per hit.
func (s *Store) Touch(storeHash string) {
	now := time.Now().UnixMilli()
	s.atimeMu.Lock()
	s.atimes[storeHash] = now
	s.atimeMu.Unlock()
}

// TouchNAR records a read of a NAR, as a use of every path naming it.
func (s *Store) TouchNAR(narHash [32]byte) {
	now := time.Now().UnixMilli()
	s.atimeMu.Lock()
	s.narUses[narHash] = now
	s.atimeMu.Unlock()
}

// FlushAtimes writes the batched access times.
func (s *Store) FlushAtimes() error {
	s.atimeMu.Lock()
	batch, nars := s.atimes, s.narUses
	s.atimes, s.narUses = map[string]int64{}, map[[32]byte]int64{}
	s.atimeMu.Unlock()
	if err := s.ix.Touch(batch); err != nil {
		return fmt.Errorf("flush %d access times: %w", len(batch), err)
	}
	if err := s.ix.TouchNARs(nars); err != nil {
		return fmt.Errorf("flush %d NAR access times: %w", len(nars), err)
	}
	return nil
}

// Stats are the store's counters with the dedup ratio derived from them.
type Stats struct {
	kv.Stats
	DedupRatio float64 // logical bytes over physical bytes
}

// Stats returns the store's counters.
func (s *Store) Stats() (Stats, error) {
	st, err := s.ix.Stats()
	if err != nil {
		return Stats{}, fmt.Errorf("stats: %w", err)
	}
	out := Stats{Stats: st}
	if st.PhysicalBytes > 0 {
		out.DedupRatio = float64(st.LogicalBytes) / float64(st.PhysicalBytes)
	}
	return out, nil
}

// pinForWrite marks a chunk as relied on, and as one the ingest may write,
// before the ingest looks it up.
func (s *Store) pinForWrite(id cdc.ID) {
	s.pinMu.Lock()
	for s.deleting[id] {
		s.unpinned.Wait()
	}
	s.pinned[id]++
	s.writing[id]++
	s.pinMu.Unlock()
}

// doneWriting drops write marks: after a look-up found the chunk stored, or
// once the ingest that wrote it has committed or given up.
func (s *Store) doneWriting(ids ...cdc.ID) {
	s.pinMu.Lock()
	for _, id := range ids {
		if s.writing[id]--; s.writing[id] <= 0 {
			delete(s.writing, id)
		}
	}
	s.pinMu.Unlock()
}

// recompressRun is one recompression's hold on its chunks.
type recompressRun struct {
	holds       map[cdc.ID]bool
	overwritten map[cdc.ID]bool // written by an ingest since the run began
}

// startRecompress pins ids for a recompression, unless an ingest may still
// write one of them: its late stored frame would land on the new one. It
// returns nil then.
func (s *Store) startRecompress(ids []cdc.ID) *recompressRun {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	for _, id := range ids {
		if s.writing[id] > 0 || s.deleting[id] {
			return nil
		}
	}
	run := &recompressRun{holds: make(map[cdc.ID]bool, len(ids)), overwritten: map[cdc.ID]bool{}}
	for _, id := range ids {
		s.pinned[id]++
		run.holds[id] = true
	}
	s.recompressions[run] = true
	return run
}

// willWrite records that an ingest is about to write id, having found it
// unstored: a recompression holding id must not record its frame.
func (s *Store) willWrite(id cdc.ID) {
	s.pinMu.Lock()
	for run := range s.recompressions {
		if run.holds[id] {
			run.overwritten[id] = true
		}
	}
	s.pinMu.Unlock()
}

// finishRecompress records run's new frames, except those an ingest
// overwrote meanwhile (what that ingest recorded is then right, or the next
// recompression of its NAR finds the frame the store holds), and ends run.
// The lock keeps an ingest from marking a chunk between the check and the
// commit.
func (s *Store) finishRecompress(run *recompressRun, key []byte, updates []kv.FrameUpdate) error {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	defer s.endRecompressLocked(run)
	return s.ix.FinishRecompress(key, run.unwritten(updates))
}

// recordRecompress records part of run's new frames, as finishRecompress
// does, and run goes on.
func (s *Store) recordRecompress(run *recompressRun, updates []kv.FrameUpdate) error {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	return s.ix.RecordFrames(run.unwritten(updates))
}

// unwritten returns the updates of chunks no ingest overwrote meanwhile, in
// updates' own array. The caller holds pinMu.
func (run *recompressRun) unwritten(updates []kv.FrameUpdate) []kv.FrameUpdate {
	kept := updates[:0]
	for _, u := range updates {
		if !run.overwritten[u.ID] {
			kept = append(kept, u)
		}
	}
	return kept
}

// endRecompress releases run's pins.
func (s *Store) endRecompress(run *recompressRun) {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	s.endRecompressLocked(run)
}

func (s *Store) endRecompressLocked(run *recompressRun) {
	if !s.recompressions[run] {
		return
	}
	delete(s.recompressions, run)
	for id := range run.holds {
		if s.pinned[id]--; s.pinned[id] <= 0 {
			delete(s.pinned, id)
		}
	}
}

// unpin releases pins.
func (s *Store) unpin(ids []cdc.ID) {
	s.pinMu.Lock()
	for _, id := range ids {
		if s.pinned[id]--; s.pinned[id] <= 0 {
			delete(s.pinned, id)
		}
	}
	s.pinMu.Unlock()
}

// deleteUnreferenced deletes those of ids that no manifest references and no
// running ingest relies on. The index transaction that dropped the last
// references has committed before this is called.
func (s *Store) deleteUnreferenced(ids []cdc.ID) (int, error) {
	var free []cdc.ID
	s.pinMu.Lock()
	for _, id := range ids {
		if s.pinned[id] == 0 && !s.deleting[id] {
			free = append(free, id)
			s.deleting[id] = true
		}
	}
	s.pinMu.Unlock()
	if len(free) == 0 {
		return 0, nil
	}
	defer func() {
		s.pinMu.Lock()
		for _, id := range free {
			delete(s.deleting, id)
		}
		s.unpinned.Broadcast()
		s.pinMu.Unlock()
	}()
	dead, err := s.ix.Unreferenced(free)
	if err != nil {
		return 0, err
	}
	if len(dead) == 0 {
		return 0, nil
	}
	if err := s.chunks.Delete(dead); err != nil {
		return 0, err
	}
	// Their index entries go now, and with them their holds on their
	// delta bases: a base nothing else holds is deleted in turn.
	bases, err := s.ix.Forget(dead)
	if err != nil {
		return len(dead), err
	}
	n, err := s.deleteUnreferenced(bases)
	return len(dead) + n, err
}
