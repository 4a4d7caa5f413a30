package appliance

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"

	"cairn/cdc"
	"cairn/kv"
)

// ErrNotFound reports a NAR or store path the store does not hold.
var ErrNotFound = kv.ErrNotFound

// NAR is an open stored NAR: its manifest and a reader over its chunks.
type NAR struct {
	*cdc.NAR
	Manifest *kv.Manifest
	codec    *cdc.Codec
}

// OpenNAR returns a reader over the stored NAR with the given sha256. Reads
// fail cleanly when a chunk is missing or corrupt: every frame carries a
// checksum that each decode checks, and Verify re-hashes chunks with SHA-256.
func (s *Store) OpenNAR(ctx context.Context, narHash [32]byte) (*NAR, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, err := s.ix.Manifest(narHash)
	if err != nil {
		return nil, fmt.Errorf("open nar %s: %w", FormatHash(narHash), err)
	}
	return &NAR{NAR: cdc.NewNAR(m.Chunks, frameSource{s}, s.codec), Manifest: m, codec: s.codec}, nil
}

// Listing returns the NAR's listing as Nix's .ls JSON.
func (n *NAR) Listing() ([]byte, error) {
	b, err := n.codec.Decompress(nil, n.Manifest.Listing, -1)
	if err != nil {
		return nil, fmt.Errorf("listing of %s: %w", FormatHash(n.Manifest.NarHash), err)
	}
	return b, nil
}

// WritePacked writes the NAR as a .nar.zst stream for a copy that keeps
// no promise of byte-identical frames, such as a seed drive's: stored frames
// as they are, but each chunk stored as a delta packed anew at the fastest
// level rather than sent as its stored-block frame. It returns the bytes
// written.
func (n *NAR) WritePacked(ctx context.Context, w io.Writer) (int64, error) {
	chunks := n.Chunks()
	var written, off int64
	var raw, frame []byte
	for first := 0; first < len(chunks); {
		last := first
		for last < len(chunks) && chunks[last].Level != cdc.DeltaLevel {
			last++
		}
		if last > first {
			k, err := n.WriteFrames(ctx, w, first, last-1)
			written += k
			if err != nil {
				return written, err
			}
			for _, c := range chunks[first:last] {
				off += int64(c.Raw)
			}
			first = last
			continue
		}
		c := chunks[first]
		raw = slices.Grow(raw[:0], int(c.Raw))[:c.Raw]
		if _, err := n.ReadAtContext(ctx, raw, off); err != nil {
			return written, err
		}
		if frame = n.codec.CompressFast(frame[:0], raw); len(frame) >= int(c.Comp) {
			frame = cdc.Store(frame[:0], raw)
		}
		k, err := w.Write(frame)
		written += int64(k)
		if err != nil {
			return written, err
		}
		off += int64(c.Raw)
		first++
	}
	return written, nil
}

// Verify re-reads a stored NAR: every chunk's SHA-256 against its id, and
// the whole NAR against its NarHash and NarSize.
func (s *Store) Verify(ctx context.Context, narHash [32]byte) error {
	n, err := s.OpenNAR(ctx, narHash)
	if err != nil {
		return err
	}
	h := sha256.New()
	var size uint64
	err = n.WriteRange(ctx, writerFunc(func(b []byte) (int, error) {
		size += uint64(len(b))
		return h.Write(b)
	}), 0, n.Size())
	if err != nil {
		return fmt.Errorf("verify %s: %w", FormatHash(narHash), err)
	}
	for i, c := range n.Manifest.Chunks {
		if _, _, err := s.plain(ctx, c); err != nil {
			return fmt.Errorf("verify %s: chunk %d: %w", FormatHash(narHash), i, err)
		}
	}
	var got [32]byte
	h.Sum(got[:0])
	if size != n.Manifest.NarSize {
		return fmt.Errorf("verify %s: %w: reassembled %d bytes, want %d", FormatHash(narHash), ErrSizeMismatch, size, n.Manifest.NarSize)
	}
	if got != narHash {
		return fmt.Errorf("verify %s: %w: reassembled %s", FormatHash(narHash), ErrHashMismatch, FormatHash(got))
	}
	return nil
}

// plain reads a chunk's stored frame and its plaintext, checked against the
// chunk's SHA-256.
func (s *Store) plain(ctx context.Context, c cdc.ChunkRef) (frame, raw []byte, err error) {
	frame, err = s.Frame(ctx, c.ID, nil)
	if err != nil {
		return nil, nil, err
	}
	raw, err = s.codec.Decompress(nil, frame, int(c.Raw))
	if err != nil {
		return nil, nil, fmt.Errorf("chunk %s: %w", c.ID, err)
	}
	if cdc.Sum(raw) != c.ID {
		return nil, nil, fmt.Errorf("chunk %s: %w: plaintext hash differs", c.ID, cdc.ErrCorrupt)
	}
	return frame, raw, nil
}

// DeleteNAR removes a NAR: first its manifest and chunk references in one
// index transaction, then the chunks nothing references any more. It
// returns how many chunks were deleted.
func (s *Store) DeleteNAR(ctx context.Context, narHash [32]byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	freed, err := s.ix.DeleteNAR(narHash)
	if err != nil {
		return 0, err
	}
	n, err := s.deleteUnreferenced(freed)
	if err != nil {
		return 0, fmt.Errorf("delete nar %s: %w (orphans are swept by GC)", FormatHash(narHash), err)
	}
	return n, nil
}

// DeleteUnnamedNAR removes a NAR, and then its unreferenced chunks, only
// if no narinfo names it at that moment. It reports whether it did.
func (s *Store) DeleteUnnamedNAR(ctx context.Context, narHash [32]byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	deleted, freed, err := s.ix.DeleteUnnamedNAR(narHash)
	if err != nil || !deleted {
		return false, err
	}
	if _, err := s.deleteUnreferenced(freed); err != nil {
		return true, fmt.Errorf("delete nar %s: %w (orphans are swept by GC)", FormatHash(narHash), err)
	}
	return true, nil
}

// DeletePaths removes store paths' narinfos, and each NAR no other
// narinfo names, in one index transaction; then the chunks nothing
// references any more. It returns how many paths, NARs and chunks went;
// hashes with no narinfo are skipped.
func (s *Store) DeletePaths(ctx context.Context, storeHashes ...string) (paths, nars, chunks int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, 0, err
	}
	paths, nars, freed, err := s.ix.DeletePaths(storeHashes)
	if err != nil {
		return 0, 0, 0, err
	}
	chunks, err = s.deleteUnreferenced(freed)
	if err != nil {
		return paths, nars, 0, fmt.Errorf("delete %d paths: %w (orphans are swept by GC)", len(storeHashes), err)
	}
	return paths, nars, chunks, nil
}

// SweepOrphans deletes stored chunks that no manifest references, such as
// those a crash left between writing chunks and committing a manifest. It
// goes through the chunk store sweepBatch ids at a time, so its memory does
// not grow with the store.
func (s *Store) SweepOrphans(ctx context.Context) (int, error) {
	ids := make([]cdc.ID, 0, sweepBatch)
	deleted := 0
	sweep := func() error {
		candidates, err := s.ix.Unreferenced(ids)
		if err != nil {
			return err
		}
		n, err := s.deleteUnreferenced(candidates)
		deleted += n
		ids = ids[:0]
		return err
	}
	err := s.chunks.ForEach(ctx, func(id cdc.ID) error {
		if ids = append(ids, id); len(ids) == sweepBatch {
			return sweep()
		}
		return nil
	})
	if err == nil && len(ids) > 0 {
		err = sweep()
	}
	if err == nil {
		// Entries left dormant by a crash between deleting a chunk and
		// forgetting it: deleting again is harmless, and forgetting them
		// releases their delta bases.
		var dormant []cdc.ID
		if dormant, err = s.ix.Dormant(); err == nil && len(dormant) > 0 {
			ids = dormant
			err = sweep()
		}
	}
	if err != nil {
		return deleted, fmt.Errorf("sweep orphans: %w", err)
	}
	return deleted, nil
}

// sweepBatch is how many chunk ids SweepOrphans checks at once.
const sweepBatch = 8192

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

var _ io.Writer = writerFunc(nil)
