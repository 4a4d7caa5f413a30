package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"cairn/cdc"
)

// frameSource serves the frames of stored chunks to readers. A chunk
// stored as a delta comes back as its Store frame, rebuilt from the delta
// and its base: every reader, and every .nar.zst, sees independent frames
// of the sizes the index records.
type frameSource struct{ s *Store }

var _ cdc.FrameSender = frameSource{}
var _ cdc.BatchSource = frameSource{}

// Frame appends the frame of chunk id to dst.
func (f frameSource) Frame(ctx context.Context, id cdc.ID, dst []byte) ([]byte, error) {
	start := len(dst)
	dst, err := f.s.chunks.Frame(ctx, id, dst)
	if err != nil {
		return dst, err
	}
	return f.s.undelta(ctx, id, dst, start)
}

// Frames appends the frames of ids to dst and where each ends. The deltas
// among them are rebuilt in parallel: each costs two decodes.
func (f frameSource) Frames(ctx context.Context, ids []cdc.ID, dst []byte, ends []int) ([]byte, []int, error) {
	start, first := len(dst), len(ends)
	dst, ends, err := f.s.chunks.Frames(ctx, ids, dst, ends)
	if err != nil {
		return dst, ends, err
	}
	value := func(i int) []byte {
		from := start
		if i > 0 {
			from = ends[first+i-1]
		}
		return dst[from:ends[first+i]]
	}
	isDelta := func(i int) bool { _, _, ok := cdc.ParseDelta(value(i)); return ok }
	if !anyIndex(len(ids), isDelta) {
		return dst, ends, nil // the common case: nothing to rebuild, nothing allocated
	}
	rebuilt := make([][]byte, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, id := range ids {
		if !isDelta(i) {
			continue
		}
		v := bytes.Clone(value(i))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rebuilt[i], errs[i] = f.s.undelta(ctx, id, v, 0)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return dst[:start], ends[:first], err
	}
	values, vends := bytes.Clone(dst[start:]), slices.Clone(ends[first:])
	dst, ends = dst[:start], ends[:first]
	from := 0
	for i := range ids {
		if rebuilt[i] != nil {
			dst = append(dst, rebuilt[i]...)
		} else {
			dst = append(dst, values[from:vends[i]-start]...)
		}
		ends = append(ends, len(dst))
		from = vends[i] - start
	}
	return dst, ends, nil
}

// anyIndex reports whether f holds for any of 0..n-1.
func anyIndex(n int, f func(int) bool) bool {
	for i := range n {
		if f(i) {
			return true
		}
	}
	return false
}

// LocateFrames finds frames to send straight from the value-log files. A
// stored delta is shorter than the frame promised for it, so it is never
// located: the copy falls back to Frames.
func (f frameSource) LocateFrames(ctx context.Context, ids []cdc.ID, want []uint32) (cdc.FrameRun, error) {
	return f.s.chunks.LocateFrames(ctx, ids, want)
}

// Frame appends the frame of chunk id to dst, as readers see it: a chunk
// stored as a delta comes back as its Store frame.
func (s *Store) Frame(ctx context.Context, id cdc.ID, dst []byte) ([]byte, error) {
	return frameSource{s}.Frame(ctx, id, dst)
}

// undelta replaces the stored value dst[start:] of chunk id, if it is a
// delta, with the chunk's Store frame.
func (s *Store) undelta(ctx context.Context, id cdc.ID, dst []byte, start int) ([]byte, error) {
	baseID, frame, ok := cdc.ParseDelta(dst[start:])
	if !ok {
		return dst, nil
	}
	base, err := s.basePlain(ctx, baseID)
	if err != nil {
		return dst[:start], fmt.Errorf("chunk %s: delta base: %w", id, err)
	}
	raw, err := s.codec.DecompressDelta(nil, frame, base, -1)
	if err != nil {
		return dst[:start], fmt.Errorf("chunk %s: %w", id, err)
	}
	return cdc.Store(dst[:start], raw), nil
}

// basePlain returns the plaintext of a delta base. A base is an
// independent frame; a base that is itself a delta is damage.
func (s *Store) basePlain(ctx context.Context, id cdc.ID) ([]byte, error) {
	frame, err := s.chunks.Frame(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id, err)
	}
	if _, _, ok := cdc.ParseDelta(frame); ok {
		return nil, fmt.Errorf("chunk %s: %w: a delta base is a delta", id, cdc.ErrCorrupt)
	}
	raw, err := s.codec.Decompress(nil, frame, -1)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id, err)
	}
	return raw, nil
}

// deltaSaving is the least share of its plain frame a delta must save to
// be stored instead: below it, the extra read of the base on every read of
// the chunk buys too little.
const deltaSaving = 8 // one eighth

// deltaOf returns the stored delta of a chunk being recompressed, against
// its reserved base or the most similar candidate, or nil when there is
// none. A candidate from the chunk's own NAR (own) is passed over: the
// first copy of anything is stored as independent frames, so reading or
// serving a NAR whose like the store never held costs no delta decoding,
// and deltas are where the savings are, in the later releases of a
// package.
func (s *Store) deltaOf(ctx context.Context, c cdc.ChunkRef, raw []byte, sk cdc.Sketch, own map[cdc.ID]bool, enc *recompressor) ([]byte, error) {
	baseID, ok, err := s.ix.ChunkBase(c.ID)
	if err == nil && !ok {
		baseID, ok, err = s.ix.SimilarChunk(sk, func(id cdc.ID) bool { return own[id] })
	}
	if err != nil || !ok {
		return nil, err
	}
	base, err := s.basePlain(ctx, baseID)
	if err != nil || cdc.Sum(base) != baseID {
		// A damaged candidate: scrub reports it; this chunk stays plain.
		s.cfg.Logger.Warn("recompress: delta base unreadable, chunk kept whole", "chunk", c.ID.String(), "base", baseID.String(), "err", err)
		return nil, nil
	}
	frame, err := enc.compressDelta(raw, base)
	if err != nil {
		return nil, err
	}
	v := cdc.AppendDelta(nil, baseID, frame)
	// Check the delta decodes before it replaces the only copy; one that
	// does not is a bug to report, and the chunk stays whole.
	got, err := s.codec.DecompressDelta(nil, frame, base, len(raw))
	if err != nil || cdc.Sum(got) != c.ID {
		s.cfg.Logger.Error("recompress: delta does not decode to its chunk, chunk kept whole", "chunk", c.ID.String(), "base", baseID.String(), "err", err)
		return nil, nil
	}
	return v, nil
}
