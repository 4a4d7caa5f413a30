package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"cairn/cdc"
)

// ChunkOptions bound the chunk store's memory and on-disk file sizes. With
// MemTableSize zero, the sizes are DefaultChunkOptions'.
type ChunkOptions struct {
	MemTableSize     int64        // bytes per memtable (keys and small values only)
	IndexCacheSize   int64        // bytes of table index cache
	ValueLogFileSize int64        // bytes per value-log file
	Logger           *slog.Logger // Badger's warnings and errors go here; nil drops them
}

// DefaultChunkOptions suit a small appliance: tens of MiB of RAM at most.
// Value-log files are small because a GC rewrite reads a whole file
// through Badger's mapping, and every page it touches counts in RSS until
// the file is deleted.
var DefaultChunkOptions = ChunkOptions{
	MemTableSize:     16 << 20,
	IndexCacheSize:   16 << 20,
	ValueLogFileSize: 16 << 20,
}

// ErrBusy reports work skipped because writes never paused; try it later.
var ErrBusy = errors.New("chunk store busy")

// ChunkStore holds chunk frames in Badger, keyed by chunk id.
type ChunkStore struct {
	db   *badger.DB
	logs *logFiles // frames are read with pread, not through Badger's mapping
	// spans keeps where frames lie for LocateFrames; every write, delete
	// and value-log rewrite tells it once the change can be seen.
	spans *spanCache
	// writeMu is held shared by every open batch and delete, and exclusively
	// while Reclaim flushes the memtable: Badger fails writes made during
	// that flush instead of making them wait.
	writeMu sync.RWMutex
	// syncMu orders Syncs; value-log files below syncedFrom were synced
	// whole by one (or were there at open) and are never written again.
	syncMu     sync.Mutex
	syncedFrom uint32
	syncFile   func(name string) error // fsyncs a file; tests watch it
	// reclaiming holds a token while a Reclaim runs: Badger's compaction
	// pause and resume (Flatten, DropPrefix) must not run twice at once.
	reclaiming chan struct{}
}

// OpenChunks opens or creates the chunk store in dir. The caller holds the
// data directory's lock (appliance opens the index first), because crash
// leftovers are cleaned up before Badger takes its own.
func OpenChunks(dir string, o ChunkOptions) (*ChunkStore, error) {
	if o.MemTableSize == 0 {
		log := o.Logger
		o = DefaultChunkOptions
		o.Logger = log
	}
	if err := removeEmptyLogs(dir, o.Logger); err != nil {
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	opts := badger.DefaultOptions(dir).
		// Frames are already zstd: block compression would only burn CPU.
		WithCompression(options.None).
		// Every frame of a real chunk goes to the value log, so LSM
		// compaction moves 40-byte pointers, never the frames themselves.
		WithValueThreshold(valueThreshold).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(4 << 20).
		WithBlockCacheSize(0).
		WithIndexCacheSize(o.IndexCacheSize).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		// Durability comes from an explicit Sync before each manifest commit.
		WithSyncWrites(false).
		WithLogger(badgerLogger{o.Logger})
	db, err := badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open chunk store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	s := &ChunkStore{db: db, logs: newLogFiles(dir), spans: newSpanCache(spanCacheEntries), syncFile: syncFile,
		reclaiming: make(chan struct{}, 1)}
	_, fids, err := s.listLogs()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	if len(fids) > 0 {
		s.syncedFrom = fids[len(fids)-1]
	}
	return s, nil
}

// removeEmptyLogs deletes zero-length value-log and memtable log files. A
// kill between Badger creating such a file and sizing it leaves one, and
// Badger then refuses to open ("… Create a new file"). An empty file holds
// nothing: each starts with a header written before its first entry.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	var paths []string
	for _, pattern := range []string{"*.vlog", "*" + memLogExt} {
		p, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return err
		}
		paths = append(paths, p...)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove empty log file %s: %w", p, err)
		}
		if log != nil {
			log.Warn("removed an empty log file left by a crash", "file", p)
		}
	}
	return nil
}

// Close flushes and closes the chunk store.
func (s *ChunkStore) Close() error {
	s.logs.shut()
	return s.db.Close()
}

// Frame appends the stored frame of chunk id to dst.
func (s *ChunkStore) Frame(ctx context.Context, id cdc.ID, dst []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(id[:])
		if err != nil {
			return err
		}
		dst, err = s.appendValue(item, dst)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return dst, fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return dst, fmt.Errorf("chunk %s: %w", id, err)
	}
	return dst, nil
}

// Frames appends the stored frames of ids to dst, in order, in one read
// transaction, and returns the offset in dst just past each one.
func (s *ChunkStore) Frames(ctx context.Context, ids []cdc.ID, dst []byte, ends []int) ([]byte, []int, error) {
	if err := ctx.Err(); err != nil {
		return dst, ends, err
	}
	err := s.db.View(func(txn *badger.Txn) error {
		for _, id := range ids {
			item, err := txn.Get(id[:])
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("chunk %s: %w", id, ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("chunk %s: %w", id, err)
			}
			if dst, err = s.appendValue(item, dst); err != nil {
				return fmt.Errorf("chunk %s: %w", id, err)
			}
			ends = append(ends, len(dst))
		}
		return nil
	})
	return dst, ends, err
}

// appendValue appends item's value to dst: read from the value-log file
// when it can be, else through Badger's mapping, whose pages it then drops
// from the resident set.
func (s *ChunkStore) appendValue(item *badger.Item, dst []byte) ([]byte, error) {
	if out, ok := s.logs.appendValue(item, dst); ok {
		return out, nil
	}
	err := item.Value(func(v []byte) error {
		dst = append(dst, v...)
		releaseValue(item, v)
		return nil
	})
	return dst, err
}

// release drops the pages of the stored frames of ids from the resident
// set, after a value-log rewrite read them through Badger's mapping. Writes
// put no pages there: kv/third_party/badger writes the value log with
// pwrite. It is best effort: a chunk not found has no pages to drop.
func (s *ChunkStore) release(ids []cdc.ID) {
	_ = s.db.View(func(txn *badger.Txn) error {
		items := make([]*badger.Item, 0, len(ids))
		for _, id := range ids {
			if item, err := txn.Get(id[:]); err == nil {
				items = append(items, item)
			}
		}
		releaseItems(items)
		return nil
	})
}

// releaseAll drops the pages of every stored frame from the resident set,
// after a value-log rewrite touched them all. It walks the keys only, to
// find the frame that sits last in each value-log file, and releases those.
// Like release, it is best effort.
func (s *ChunkStore) releaseAll(ctx context.Context) {
	type place struct {
		offset uint32
		id     cdc.ID
	}
	last := map[uint32]place{} // by value-log file
	_ = s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid() && ctx.Err() == nil; it.Next() {
			item := it.Item()
			vp, ok := valuePointer(item)
			if cur, seen := last[vp.Fid]; ok && len(item.Key()) == len(cdc.ID{}) && (!seen || vp.Offset > cur.offset) {
				last[vp.Fid] = place{vp.Offset, cdc.ID(item.Key())}
			}
		}
		return nil
	})
	ids := make([]cdc.ID, 0, len(last))
	for _, p := range last {
		ids = append(ids, p.id)
	}
	s.release(ids)
}

// Has reports whether chunk id is stored.
func (s *ChunkStore) Has(id cdc.ID) (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(id[:])
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Batch collects chunk writes. Call Flush, then ChunkStore.Sync, before any
// index record refers to the chunks; Flush or Cancel ends the batch. Put is
// safe for concurrent use; the batch writes through every batchBytes in the
// background, at most one write-through at a time, so its memory stays
// bounded (about twice batchBytes) however large the NAR. A write-through's
// error comes back from a later Put or from Flush.
type Batch struct {
	s        *ChunkStore
	mu       sync.Mutex
	wb       *badger.WriteBatch
	ids      []cdc.ID // written by wb, for the span cache to forget once it flushes
	written  []func() // PutFunc's callbacks for the frames in wb
	pending  int
	ended    bool
	err      error          // first error of a write-through
	through  sync.WaitGroup // write-throughs still running
	throttle chan struct{}  // one slot per write-through running
}

// batchBytes is how many frame bytes a Batch holds before writing through.
const batchBytes = 8 << 20

// errBatchEnded reports a Put or Flush after the batch ended.
var errBatchEnded = errors.New("chunk batch already ended")

// NewBatch starts a batch of chunk writes.
func (s *ChunkStore) NewBatch() *Batch {
	s.writeMu.RLock()
	return &Batch{s: s, wb: s.db.NewWriteBatch(), throttle: make(chan struct{}, 1)}
}

// Put adds a frame to the batch. The batch owns frame afterwards.
func (b *Batch) Put(id cdc.ID, frame []byte) error { return b.PutFunc(id, frame, nil) }

// PutFunc is Put, and written, when set, runs once the frame is written and
// the batch holds it no more, so that its buffer can be used again. It does
// not run if the write fails: the frame is then left to the garbage
// collector, as Badger may still hold it.
func (b *Batch) PutFunc(id cdc.ID, frame []byte, written func()) error {
	b.mu.Lock()
	switch {
	case b.ended:
		b.mu.Unlock()
		return errBatchEnded
	case b.err != nil:
		b.mu.Unlock()
		return b.err
	}
	if err := b.wb.Set(append([]byte(nil), id[:]...), frame); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("put chunk %s: %w", id, err)
	}
	b.pending += len(frame)
	b.ids = append(b.ids, id)
	if written != nil {
		b.written = append(b.written, written)
	}
	var full *badger.WriteBatch
	var ids []cdc.ID
	var done []func()
	if b.pending >= batchBytes {
		full, b.wb, b.pending = b.wb, b.s.db.NewWriteBatch(), 0
		ids, b.ids = b.ids, nil
		done, b.written = b.written, nil
		b.through.Add(1)
	}
	b.mu.Unlock()
	if full == nil {
		return nil
	}
	// The write-through runs while the next frames fill the new batch;
	// only one more full batch may wait for it. A caller blocked here
	// would hold up every chunk behind its own.
	b.throttle <- struct{}{}
	go func() {
		defer b.through.Done()
		defer func() { <-b.throttle }()
		err := full.Flush()
		full.Cancel()         // a failed Flush returns before commits in flight land
		b.s.spans.forget(ids) // even a failed flush may have written some
		if err != nil {
			b.mu.Lock()
			if b.err == nil {
				b.err = fmt.Errorf("write chunks: %w", err)
			}
			b.mu.Unlock()
			return
		}
		runAll(done)
	}()
	return nil
}

// end marks the batch ended and waits for running write-throughs.
func (b *Batch) end() bool {
	b.mu.Lock()
	if b.ended {
		b.mu.Unlock()
		return false
	}
	b.ended = true
	b.mu.Unlock()
	b.through.Wait()
	return true
}

// Flush writes the rest of the batch and ends it.
func (b *Batch) Flush() error {
	if !b.end() {
		return errBatchEnded
	}
	defer b.s.writeMu.RUnlock()
	err := b.wb.Flush()
	b.wb.Cancel() // a failed Flush returns before commits in flight land
	b.s.spans.forget(b.ids)
	if b.err != nil {
		return b.err
	}
	if err == nil {
		runAll(b.written)
	}
	return err
}

// runAll calls each of fns.
func runAll(fns []func()) {
	for _, fn := range fns {
		fn()
	}
}

// Cancel abandons what the batch has not written through yet, unless it
// has ended already.
func (b *Batch) Cancel() {
	if b.end() {
		b.wb.Cancel()
		b.s.spans.forget(b.ids) // a write batch commits as it fills
		b.s.writeMu.RUnlock()
	}
}

// Sync makes every write so far durable. Badger's Sync reaches the newest
// value-log file and the active memtable's log only, and leaves two gaps a
// power cut could turn into a committed manifest naming lost chunks:
//   - a memtable that filled up waits for its flush to a table with its log
//     not synced, holding keys of frames written before it filled;
//   - a value-log file Badger moved on from is synced when it is closed,
//     except when one write grew it past its preallocated size: then the
//     last entries of that write are not.
//
// So every memtable log is synced too, and every value-log file written
// since the last Sync.
func (s *ChunkStore) Sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync chunk store: %w", err)
	}
	mems, fids, err := s.listLogs()
	if err != nil {
		return fmt.Errorf("sync chunk store: %w", err)
	}
	for _, fid := range fids {
		if fid >= s.syncedFrom {
			mems = append(mems, s.logs.path(fid))
		}
	}
	for _, name := range mems {
		if err := s.syncFile(name); err != nil {
			return fmt.Errorf("sync chunk store: %w", err)
		}
	}
	if len(fids) > 0 {
		s.syncedFrom = fids[len(fids)-1] // the newest may still grow
	}
	return nil
}

// listLogs reads Badger's directory once for the paths of the memtable
// logs and the numbers of the value-log files, in order.
func (s *ChunkStore) listLogs() (mems []string, fids []uint32, err error) {
	entries, err := os.ReadDir(s.logs.dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, memLogExt):
			mems = append(mems, filepath.Join(s.logs.dir, name))
		case strings.HasSuffix(name, ".vlog"):
			if n, err := strconv.ParseUint(strings.TrimSuffix(name, ".vlog"), 10, 32); err == nil {
				fids = append(fids, uint32(n))
			}
		}
	}
	slices.Sort(fids)
	return mems, fids, nil
}

// memLogExt ends the name of a memtable's log file in Badger's directory.
const memLogExt = ".mem"

// syncFile fsyncs the file at name; one deleted meanwhile (its memtable
// was flushed to a synced table) needs nothing.
func syncFile(name string) error {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Delete removes chunks. Call it only after the index transaction that
// dropped their last references has committed.
func (s *ChunkStore) Delete(ids []cdc.ID) error {
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	wb := s.db.NewWriteBatch()
	defer func() {
		wb.Cancel()
		s.spans.forget(ids) // a write batch commits as it fills
	}()
	for _, id := range ids {
		if err := wb.Delete(append([]byte(nil), id[:]...)); err != nil {
			return fmt.Errorf("delete chunk %s: %w", id, err)
		}
	}
	return wb.Flush()
}

// ForEach calls fn with the id of every stored chunk.
func (s *ChunkStore) ForEach(ctx context.Context, fn func(id cdc.ID) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.Item().Key()
			if len(k) != len(cdc.ID{}) {
				continue
			}
			if err := fn(cdc.ID(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// flushKey is a key no chunk can have (ids are 32 bytes); writing and
// dropping it is how Reclaim makes Badger flush its memtable on demand.
var flushKey = []byte("\x00cairn-flush")

// Reclaim gives the disk space of deleted and overwritten frames back. Badger
// learns which value-log bytes are dead only when its LSM tree compacts, and
// a memtable of 40-byte pointers rarely fills, so Reclaim flushes the
// memtable, compacts the tree, then rewrites every value-log file with more
// than discardRatio of dead bytes. It returns the number of files rewritten;
// ErrBusy means ingests never paused long enough to flush. Reclaims run one
// at a time; a second waits for the first.
func (s *ChunkStore) Reclaim(ctx context.Context, discardRatio float64) (int, error) {
	select {
	case s.reclaiming <- struct{}{}:
		defer func() { <-s.reclaiming }()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Without the flush, compaction still finds what earlier flushes
	// brought down, so the rest runs either way.
	flushErr := s.flushMemtable(ctx)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err := s.db.Flatten(1); err != nil {
		return 0, fmt.Errorf("reclaim: compact: %w", err)
	}
	n, err := s.gc(ctx, discardRatio)
	if err == nil {
		err = flushErr
	}
	return n, err
}

// flushMemtable waits for a moment with no batch open, without ever
// blocking new batches (a waiting RWMutex writer would, and an ingest that
// waits on a lock another goroutine holds while opening a batch would then
// deadlock), and flushes the memtable then. ErrBusy: no such moment came.
func (s *ChunkStore) flushMemtable(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for !s.writeMu.TryLock() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reclaim: flush memtable: %w", ErrBusy)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer s.writeMu.Unlock()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(flushKey, nil) }); err != nil {
		return fmt.Errorf("reclaim: %w", err)
	}
	if err := s.db.DropPrefix(flushKey); err != nil {
		return fmt.Errorf("reclaim: flush memtable: %w", err)
	}
	return nil
}

// releaseEvery is how many value-log files gc rewrites between releases of
// the pages the rewrites mapped: about 64 MiB of them at most.
const releaseEvery = 4

// gc rewrites value-log files until none has more than discardRatio of
// dead bytes by Badger's current discard stats. It returns the number of
// files rewritten.
func (s *ChunkStore) gc(ctx context.Context, discardRatio float64) (int, error) {
	n := 0
	defer func() {
		if n%releaseEvery != 0 {
			s.releaseAll(ctx) // the rewrites since the last release
		}
	}()
	for ctx.Err() == nil {
		err := s.rewriteOneLog(discardRatio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("value log gc: %w", err)
		}
		n++
		// The rewritten file is gone, and the live frames it held were
		// copied through the mapping of another. Releasing walks every key,
		// so it waits for a few rewrites.
		s.logs.closeAll()
		if n%releaseEvery == 0 {
			s.releaseAll(ctx)
		}
	}
	return n, ctx.Err()
}

// rewriteOneLog has Badger rewrite one value-log file, and makes the copies
// of its live frames durable before the file is deleted. Badger copies them
// through its ordinary, unsynced write path and deletes the old file at
// once, unless an iterator is open: then it waits for the last one to
// close. So one is held open until Sync has run.
func (s *ChunkStore) rewriteOneLog(discardRatio float64) error {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: flushKey})
	err := s.db.RunValueLogGC(discardRatio)
	if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
		s.spans.clear() // the frames it copied are elsewhere now
	}
	if err == nil {
		err = s.Sync()
	}
	it.Close() // the rewritten file goes now, unless another iterator holds it
	return err
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) log(level slog.Level, f string, a ...any) {
	if b.l != nil {
		b.l.Log(context.Background(), level, "badger: "+strings.TrimSpace(fmt.Sprintf(f, a...)))
	}
}
func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a...) }
func (b badgerLogger) Infof(string, ...any)        {}
func (b badgerLogger) Debugf(string, ...any)       {}
