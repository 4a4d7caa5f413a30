package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cairn/cdc"
	"cairn/kv"
)

// RecompressStats counts the work of one recompression run.
type RecompressStats struct {
	NARs       int    // queued NARs processed
	Chunks     int    // frames rewritten
	Deltas     int    // of which stored as deltas
	RawBytes   uint64 // plaintext bytes of the rewritten chunks
	BytesSaved uint64 // stored bytes given back
}

func (s *Store) kickRecompress() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// recompressLoop drains the recompress queue as entries come due.
func (s *Store) recompressLoop() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.stop; cancel() }()
	tick := time.NewTicker(max(s.cfg.RecompressDelay/4, time.Second))
	defer tick.Stop()
	reclaim := false // replaced frames wait for Reclaim to give their space back
	for {
		st, err := s.RecompressDue(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("recompress", "err", err)
		}
		if st.Chunks > 0 {
			s.cfg.Logger.Info("recompressed", "nars", st.NARs, "chunks", st.Chunks, "deltas", st.Deltas, "saved", st.BytesSaved)
			reclaim = true
		}
		if reclaim && ctx.Err() == nil {
			files, err := s.Reclaim(ctx)
			switch {
			case errors.Is(err, kv.ErrBusy):
				s.cfg.Logger.Info("reclaim: memtable flush deferred, ingests kept writing; retrying", "vlog_files_rewritten", files)
			case err != nil && ctx.Err() == nil:
				s.cfg.Logger.Error("reclaim after recompress", "err", err)
			default:
				reclaim = false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.kick:
		}
	}
}

// ReclaimRatio is the share of dead bytes that makes Reclaim rewrite a
// value-log file: after a Reclaim no file but the newest has more dead.
// With five toolchain releases stored and recompressed, 0.5 left 10 MB of
// 139 MB dead (a file ends up holding the last stored frames of an ingest
// and the first recompressed ones); 0.2 and 0.1 both leave none. The price
// is paid when deletes are scattered, as an eviction's are: a rewrite then
// copies up to four live bytes per byte it frees, against one at 0.5. The
// eviction limit counts frame bytes, so 0.2 also keeps the value log
// within 1.25 times that limit, where 0.5 allowed twice it.
const ReclaimRatio = 0.2

// Reclaim gives the disk space of deleted and replaced frames back to the
// file system. It returns the number of value-log files rewritten.
func (s *Store) Reclaim(ctx context.Context) (int, error) {
	return s.chunks.Reclaim(ctx, ReclaimRatio)
}

// errBusyChunks: a running ingest holds some of the NAR's chunks; its
// late-flushed stored frames could land on top of recompressed ones, so
// the NAR waits for a later run.
var errBusyChunks = errors.New("chunks in use by an ingest")

// RecompressDue rewrites, at the configured level, the stored-block frames
// of every queued NAR committed at least RecompressDelay before now. A
// damaged chunk is logged and left as it is, for scrub to report; an error
// that may pass (I/O, the index) stops the run and keeps the NAR queued.
func (s *Store) RecompressDue(ctx context.Context, now time.Time) (RecompressStats, error) {
	var total RecompressStats
	enc := &recompressor{codec: s.codec, level: s.cfg.Level}
	defer enc.close()
	cutoff := now.Add(-max(s.cfg.RecompressDelay, 0))
	var after []byte
	for {
		items, err := s.ix.DueRecompress(cutoff, after, 16)
		if err != nil || len(items) == 0 {
			return total, err
		}
		for _, it := range items {
			after = it.Key
			st, err := s.recompressNAR(ctx, it, enc)
			if errors.Is(err, errBusyChunks) {
				continue
			}
			if err != nil {
				return total, err
			}
			total.NARs++
			total.Chunks += st.Chunks
			total.Deltas += st.Deltas
			total.RawBytes += st.RawBytes
			total.BytesSaved += st.BytesSaved
		}
	}
}

// recompressSegment is how many bytes of new frames a recompression
// writes before it records them. Until they are recorded, a .nar.zst of
// the NAR still promises the stored-block frames, and a read rebuilds each
// replaced one (decode, then store again): at a whole large NAR at a time
// that cost 7–13 s of CPU per GB sent for as long as the run took.
const recompressSegment = 4 << 20

// recompressNAR rewrites one NAR's stored-block frames. Each chunk's
// SHA-256 is checked on the way, the new frames are durable before the
// index records them, recorded every recompressSegment bytes, and the
// chunks stay pinned so GC cannot delete them meanwhile. A frame an
// interrupted run already replaced is recorded as it is.
func (s *Store) recompressNAR(ctx context.Context, it kv.QueueItem, enc *recompressor) (RecompressStats, error) {
	var st RecompressStats
	m, err := s.ix.Manifest(it.NarHash)
	if errors.Is(err, kv.ErrNotFound) {
		return st, s.ix.FinishRecompress(it.Key, nil)
	}
	if err != nil {
		return st, err
	}
	var todo []cdc.ChunkRef
	seen := make(map[cdc.ID]bool, len(m.Chunks)) // the NAR's own chunks
	for _, c := range m.Chunks {
		if !seen[c.ID] {
			seen[c.ID] = true
			if c.Level == cdc.StoredLevel {
				todo = append(todo, c)
			}
		}
	}
	ids := make([]cdc.ID, len(todo))
	for i, c := range todo {
		ids[i] = c.ID
	}
	run := s.startRecompress(ids)
	if run == nil {
		return st, errBusyChunks
	}
	defer s.endRecompress(run) // after finishRecompress, a no-op
	batch := s.chunks.NewBatch()
	defer func() { batch.Cancel() }() // the batch of the moment
	var updates []kv.FrameUpdate
	var deltas []pendingDelta // chosen, not written until their bases are reserved
	written := 0              // bytes of new frames not recorded yet
	record := func(c cdc.ChunkRef, comp int, level uint8, sk *cdc.Sketch) {
		updates = append(updates, kv.FrameUpdate{ID: c.ID, From: c.Comp, Comp: uint32(comp), Level: level, Sketch: sk})
		if level != cdc.IncompressibleLevel {
			st.Chunks++
			st.RawBytes += uint64(c.Raw)
			st.BytesSaved += uint64(int(c.Comp) - comp)
		}
		if level == cdc.DeltaLevel {
			st.Deltas++
		}
	}
	// plain stores a chunk as an independent frame, or leaves a stored-block
	// frame that compression does not shrink as it is.
	plain := func(c cdc.ChunkRef, packed []byte, sk *cdc.Sketch) error {
		if len(packed) >= int(c.Comp) {
			record(c, int(c.Comp), cdc.IncompressibleLevel, nil)
			return nil
		}
		record(c, len(packed), uint8(s.cfg.Level), sk)
		return batch.Put(c.ID, packed)
	}
	// flush makes the segment's frames durable and records them: the
	// deltas' bases are reserved first, and a delta whose base cannot be is
	// stored plain instead.
	flush := func() error {
		if len(deltas) > 0 {
			pairs := make([]kv.BaseRef, len(deltas))
			for i, d := range deltas {
				pairs[i] = kv.BaseRef{ID: d.c.ID, Base: d.base}
			}
			ok, err := s.ix.ReserveBases(pairs)
			if err != nil {
				return err
			}
			for i, d := range deltas {
				if !ok[i] {
					// Rare: the base went meanwhile. Store the chunk whole.
					if d.packed == nil {
						_, raw, err := s.plain(ctx, d.c)
						if err != nil {
							return err
						}
						if d.packed, err = enc.compress(raw); err != nil {
							return err
						}
					}
					if err := plain(d.c, d.packed, &d.sketch); err != nil {
						return err
					}
					continue
				}
				record(d.c, len(d.value), cdc.DeltaLevel, nil)
				if err := batch.Put(d.c.ID, d.value); err != nil {
					return err
				}
			}
			deltas = deltas[:0]
		}
		if err := batch.Flush(); err != nil {
			return err
		}
		if err := s.chunks.Sync(); err != nil {
			return err
		}
		batch = s.chunks.NewBatch()
		return nil
	}
	for _, c := range todo {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		frame, raw, err := s.plain(ctx, c)
		if errors.Is(err, cdc.ErrCorrupt) || errors.Is(err, kv.ErrNotFound) {
			s.cfg.Logger.Error("recompress: damaged chunk left as it is", "nar", FormatHash(it.NarHash), "err", err)
			continue
		}
		if err != nil {
			return st, err
		}
		if len(frame) != int(c.Comp) {
			// An interrupted run replaced it and did not record it.
			record(c, len(frame), uint8(s.cfg.Level), nil)
			continue
		}
		sk := cdc.SketchOf(raw)
		var delta []byte
		if !s.cfg.NoDeltas {
			if delta, err = s.deltaOf(ctx, c, raw, sk, seen, enc); err != nil {
				return st, err
			}
		}
		// A delta of at most an eighth of the chunk is kept without making
		// the plain frame too: one so small that the plain frame could beat
		// it by an eighth would take a chunk that packs more than 9 to 1.
		// That halves the compression work of a later release.
		var packed []byte
		if delta == nil || len(delta) > len(raw)/deltaSaving {
			if packed, err = enc.compress(raw); err != nil {
				return st, err
			}
			if delta != nil && len(delta)+len(packed)/deltaSaving >= len(packed) {
				delta = nil
			}
		}
		if delta != nil {
			base, _, _ := cdc.ParseDelta(delta)
			deltas = append(deltas, pendingDelta{c: c, base: base, value: delta, packed: packed, sketch: sk})
			written += max(len(packed), len(delta)) // what it may yet take
		} else {
			if err := plain(c, packed, &sk); err != nil {
				return st, err
			}
			written += len(packed)
		}
		if written >= s.recompressSegment {
			if err := flush(); err != nil {
				return st, err
			}
			if err := s.recordRecompress(run, updates); err != nil {
				return st, err
			}
			updates, written = updates[:0], 0
			// A NAR deleted meanwhile needs no more: what was written is
			// recorded below (chunks other NARs share keep their new
			// frames), and its queue entry goes.
			if kept, err := s.ix.HasManifest(it.NarHash); err == nil && !kept {
				break
			}
		}
	}
	if err := flush(); err != nil {
		return st, err
	}
	return st, s.finishRecompress(run, it.Key, updates)
}

// pendingDelta is a chunk whose delta waits for its base's reservation.
type pendingDelta struct {
	c      cdc.ChunkRef
	base   cdc.ID
	value  []byte // the stored delta
	packed []byte // its independent frame, if made, should the base not be reserved
	sketch cdc.Sketch
}

// recompressor compresses the frames of one recompression run. A
// best-level encoder holds MiBs of match tables (tens of them in
// klauspost's), so a run makes one only once it has a frame to compress,
// and lets it go when it ends.
type recompressor struct {
	codec *cdc.Codec
	level cdc.Level
	enc   *cdc.Encoder
}

// compressDelta returns a zstd frame of raw against base as a prefix.
func (r *recompressor) compressDelta(raw, base []byte) ([]byte, error) {
	if err := r.ensure(); err != nil {
		return nil, err
	}
	frame, err := r.enc.CompressDelta(nil, raw, base)
	if err != nil {
		return nil, fmt.Errorf("recompress: %w", err)
	}
	return frame, nil
}

// ensure makes the run's encoder, once it has a frame to compress.
func (r *recompressor) ensure() error {
	if r.enc != nil {
		return nil
	}
	e, err := r.codec.NewEncoder(r.level)
	if err != nil {
		return fmt.Errorf("recompress: %w", err)
	}
	r.enc = e
	return nil
}

// compress returns a new zstd frame of raw.
func (r *recompressor) compress(raw []byte) ([]byte, error) {
	if err := r.ensure(); err != nil {
		return nil, err
	}
	frame, err := r.enc.Compress(nil, raw)
	if err != nil {
		return nil, fmt.Errorf("recompress: %w", err)
	}
	return frame, nil
}

// close releases the encoder, if one was made.
func (r *recompressor) close() {
	if r.enc != nil {
		r.enc.Close()
		r.enc = nil
	}
}
