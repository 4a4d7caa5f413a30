package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"cairn/cdc"
)

// ChunkOptions bound the chunk store's memory and on-disk file sizes.
type ChunkOptions struct {
	MemTableSize     int64 // bytes per memtable (keys and small values only)
	IndexCacheSize   int64 // bytes of table index cache
	ValueLogFileSize int64 // bytes per value-log file
	Logger           *slog.Logger
}

// DefaultChunkOptions suit a small appliance: tens of MiB of RAM at most.
var DefaultChunkOptions = ChunkOptions{
	MemTableSize:     16 << 20,
	IndexCacheSize:   16 << 20,
	ValueLogFileSize: 64 << 20,
}

// ErrBusy reports work skipped because writes never paused; try it later.
var ErrBusy = errors.New("chunk store busy")

// ChunkStore holds chunk frames in Badger, keyed by chunk id.
type ChunkStore struct {
	db *badger.DB
	// writeMu is held shared by every open batch and delete, and exclusively
	// while Reclaim flushes the memtable: Badger fails writes made during
	// that flush instead of making them wait.
	writeMu sync.RWMutex
}

// OpenChunks opens or creates the chunk store in dir. The caller holds the
// data directory's lock (appliance opens the index first), because crash
// leftovers are cleaned up before Badger takes its own.
func OpenChunks(dir string, o ChunkOptions) (*ChunkStore, error) {
	if o.MemTableSize == 0 {
		o = DefaultChunkOptions
	}
	if err := removeEmptyLogs(dir, o.Logger); err != nil {
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	opts := badger.DefaultOptions(dir).
		// Frames are already zstd: block compression would only burn CPU.
		WithCompression(options.None).
		// Every frame of a real chunk goes to the value log, so LSM
		// compaction moves 40-byte pointers, never the frames themselves.
		WithValueThreshold(64).
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
	return &ChunkStore{db: db}, nil
}

// removeEmptyLogs deletes zero-length value-log and memtable log files. A
// kill between Badger creating such a file and sizing it leaves one, and
// Badger then refuses to open ("… Create a new file"). An empty file holds
// nothing: each starts with a header written before its first entry.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	var paths []string
	for _, pattern := range []string{"*.vlog", "*.mem"} {
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
func (s *ChunkStore) Close() error { return s.db.Close() }

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
		return item.Value(func(v []byte) error {
			dst = append(dst, v...)
			return nil
		})
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
			if err := item.Value(func(v []byte) error {
				dst = append(dst, v...)
				return nil
			}); err != nil {
				return fmt.Errorf("chunk %s: %w", id, err)
			}
			ends = append(ends, len(dst))
		}
		return nil
	})
	return dst, ends, err
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
// safe for concurrent use; the batch writes through every batchBytes, so
// its memory stays bounded however large the NAR.
type Batch struct {
	s       *ChunkStore
	mu      sync.Mutex
	wb      *badger.WriteBatch
	pending int
	ended   bool
	err     error          // first error of a write-through
	through sync.WaitGroup // write-throughs still running
}

// batchBytes is how many frame bytes a Batch holds before writing through.
const batchBytes = 32 << 20

// errBatchEnded reports a Put or Flush after the batch ended.
var errBatchEnded = errors.New("chunk batch already ended")

// NewBatch starts a batch of chunk writes.
func (s *ChunkStore) NewBatch() *Batch {
	s.writeMu.RLock()
	return &Batch{s: s, wb: s.db.NewWriteBatch()}
}

// Put adds a frame to the batch. The batch owns frame afterwards.
func (b *Batch) Put(id cdc.ID, frame []byte) error {
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
	var full *badger.WriteBatch
	if b.pending >= batchBytes {
		full, b.wb, b.pending = b.wb, b.s.db.NewWriteBatch(), 0
		b.through.Add(1)
	}
	b.mu.Unlock()
	if full == nil {
		return nil
	}
	defer b.through.Done()
	if err := full.Flush(); err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = fmt.Errorf("write chunks: %w", err)
		}
		err = b.err
		b.mu.Unlock()
		return err
	}
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
	if b.err != nil {
		return b.err
	}
	return err
}

// Cancel abandons what the batch has not written through yet, unless it
// has ended already.
func (b *Batch) Cancel() {
	if b.end() {
		b.wb.Cancel()
		b.s.writeMu.RUnlock()
	}
}

// Sync makes every write so far durable.
func (s *ChunkStore) Sync() error { return s.db.Sync() }

// Delete removes chunks. Call it only after the index transaction that
// dropped their last references has committed.
func (s *ChunkStore) Delete(ids []cdc.ID) error {
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
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
// ErrBusy means ingests never paused long enough to flush.
func (s *ChunkStore) Reclaim(ctx context.Context, discardRatio float64) (int, error) {
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

// gc rewrites value-log files until none has more than discardRatio of
// dead bytes by Badger's current discard stats. It returns the number of
// files rewritten.
func (s *ChunkStore) gc(ctx context.Context, discardRatio float64) (int, error) {
	n := 0
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(discardRatio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("value log gc: %w", err)
		}
		n++
	}
	return n, ctx.Err()
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
