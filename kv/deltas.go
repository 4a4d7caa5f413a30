package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"cairn/cdc"
)

// bucketSketch indexes candidate delta bases: super-feature slot (1 byte)
// + its value (8, big-endian) + chunk id (32) -> "". Only chunks stored as
// independent frames are in it, so a delta's base is never a delta.
var bucketSketch = []byte("sketch")

// similarPerFeature bounds how many chunks SimilarChunk weighs per
// super-feature, so that a value shared by many chunks (a run of zeros)
// costs no more than a few.
const similarPerFeature = 16

// BaseRef pairs a chunk with the base its delta is compressed against.
type BaseRef struct {
	ID, Base cdc.ID
}

// RefInfo is a chunk's reference entry as ForEachRef reports it.
type RefInfo struct {
	ID      cdc.ID
	Count   uint64 // manifests and deltas that reference it
	Level   uint8
	Base    cdc.ID // its delta base, when HasBase
	HasBase bool
}

func sketchKey(slot int, v uint64, id cdc.ID) []byte {
	k := make([]byte, 0, 41)
	k = append(k, byte(slot))
	k = binary.BigEndian.AppendUint64(k, v)
	return append(k, id[:]...)
}

// getRef returns a chunk's reference entry, and false when it has none.
func getRef(refs *bolt.Bucket, id cdc.ID) (ref, bool, error) {
	v := refs.Get(id[:])
	if v == nil {
		return ref{}, false, nil
	}
	r, err := decodeRef(v)
	if err != nil {
		return r, false, fmt.Errorf("chunk %s: %w", id, err)
	}
	return r, true, nil
}

// baseEligible reports whether a chunk may be a delta base: referenced,
// stored as an independent, compressed frame, and not waiting for a delta
// of its own.
func baseEligible(r ref) bool {
	return r.count > 0 && r.level != cdc.StoredLevel && r.level != cdc.DeltaLevel && r.level != cdc.IncompressibleLevel && !r.hasBase
}

// SimilarChunk returns the candidate base that shares the most
// super-features with sk, skipping those skip reports (nil: none); false
// when none shares any.
func (ix *Index) SimilarChunk(sk cdc.Sketch, skip func(cdc.ID) bool) (cdc.ID, bool, error) {
	var best cdc.ID
	found := false
	err := ix.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSketch).Cursor()
		votes := map[cdc.ID]int{}
		var order []cdc.ID // first-seen order, for a stable choice
		for slot, v := range sk {
			prefix := sketchKey(slot, v, cdc.ID{})[:9]
			n := 0
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && n < similarPerFeature; k, _ = c.Next() {
				id := cdc.ID(k[9:])
				if skip != nil && skip(id) {
					continue
				}
				if votes[id] == 0 {
					order = append(order, id)
				}
				votes[id]++
				n++
			}
		}
		refs := tx.Bucket(bucketRefs)
		bestVotes := 0
		for _, id := range order {
			if votes[id] <= bestVotes {
				continue
			}
			if r, ok, err := getRef(refs, id); err != nil || !ok || !baseEligible(r) {
				continue
			}
			best, bestVotes, found = id, votes[id], true
		}
		return nil
	})
	if err != nil {
		return best, false, fmt.Errorf("similar chunk: %w", err)
	}
	return best, found, nil
}

// ReserveBases records each pair's base as the chunk's delta base and
// counts it as a reference of the base, in one transaction, before any
// delta is written: a crash then leaves at most a reservation, never a
// delta whose base may go. A pair is refused unless the chunk is still a
// stored-block frame with no other base and the base may be one; a chunk
// already reserved for the same base is accepted as it is.
func (ix *Index) ReserveBases(pairs []BaseRef) ([]bool, error) {
	ok := make([]bool, len(pairs))
	err := ix.update(func(tx *bolt.Tx, _ *Stats) error {
		refs := tx.Bucket(bucketRefs)
		for i, p := range pairs {
			r, found, err := getRef(refs, p.ID)
			if err != nil {
				return err
			}
			if !found || p.ID == p.Base || r.count == 0 || r.level != cdc.StoredLevel {
				continue
			}
			if r.hasBase {
				ok[i] = r.base == p.Base
				continue
			}
			b, bok, err := getRef(refs, p.Base)
			if err != nil {
				return err
			}
			if !bok || !baseEligible(b) {
				continue
			}
			b.count++
			r.base, r.hasBase = p.Base, true
			if err := refs.Put(p.Base[:], b.encode()); err != nil {
				return err
			}
			if err := refs.Put(p.ID[:], r.encode()); err != nil {
				return err
			}
			ok[i] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reserve %d delta bases: %w", len(pairs), err)
	}
	return ok, nil
}

// ChunkBase returns the delta base reserved for a chunk, if any.
func (ix *Index) ChunkBase(id cdc.ID) (cdc.ID, bool, error) {
	var r ref
	err := ix.db.View(func(tx *bolt.Tx) error {
		var err error
		r, _, err = getRef(tx.Bucket(bucketRefs), id)
		return err
	})
	if err != nil {
		return cdc.ID{}, false, err
	}
	return r.base, r.hasBase, nil
}

// ForEachRef calls fn with every referenced chunk's entry.
func (ix *Index) ForEachRef(fn func(RefInfo) error) error {
	return ix.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRefs).ForEach(func(k, v []byte) error {
			r, err := decodeRef(v)
			if err != nil {
				return err
			}
			return fn(RefInfo{ID: cdc.ID(k), Count: r.count, Level: r.level, Base: r.base, HasBase: r.hasBase})
		})
	})
}

// setSketch makes a chunk a candidate base.
func setSketch(tx *bolt.Tx, id cdc.ID, r *ref, sk cdc.Sketch) error {
	b := tx.Bucket(bucketSketch)
	for slot, v := range sk {
		if err := b.Put(sketchKey(slot, v, id), nil); err != nil {
			return err
		}
	}
	r.sketch, r.hasSketch = sk, true
	return nil
}

// dropRef drops one reference to a chunk inside tx. The last one leaves the
// entry dormant (count 0) and appends the chunk to freed: the entry, and
// its hold on its delta base, go only once the chunk's frame is deleted
// (Forget), so a stored delta never outlives its base, whatever deletes,
// ingests and crashes come between.
func dropRef(tx *bolt.Tx, id cdc.ID, st *Stats, freed []cdc.ID) ([]cdc.ID, error) {
	refs := tx.Bucket(bucketRefs)
	r, ok, err := getRef(refs, id)
	switch {
	case err != nil:
		return freed, err
	case !ok:
		return freed, fmt.Errorf("chunk %s: reference missing", id)
	case r.count == 0:
		return freed, fmt.Errorf("chunk %s: reference missing (dormant)", id)
	}
	if r.count--; r.count == 0 {
		st.Chunks--
		st.PhysicalBytes -= uint64(r.stored())
		freed = append(freed, id)
	}
	return freed, refs.Put(id[:], r.encode())
}

// Forget removes the dormant entries of chunks whose frames are deleted,
// with their sketch keys and their holds on their delta bases, in one
// transaction. It returns the bases whose last reference that dropped,
// for the caller to delete in turn. Entries referenced again meanwhile
// are left as they are.
func (ix *Index) Forget(ids []cdc.ID) ([]cdc.ID, error) {
	var freed []cdc.ID
	err := ix.update(func(tx *bolt.Tx, st *Stats) error {
		refs, sketches := tx.Bucket(bucketRefs), tx.Bucket(bucketSketch)
		for _, id := range ids {
			r, ok, err := getRef(refs, id)
			if err != nil {
				return err
			}
			if !ok || r.count > 0 {
				continue
			}
			if err := refs.Delete(id[:]); err != nil {
				return err
			}
			if r.hasSketch {
				for slot, v := range r.sketch {
					if err := sketches.Delete(sketchKey(slot, v, id)); err != nil {
						return err
					}
				}
			}
			if r.hasBase {
				// A base never has a base of its own.
				if freed, err = dropRef(tx, r.base, st, freed); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("forget %d deleted chunks: %w", len(ids), err)
	}
	return freed, nil
}

// Dormant returns the chunks no manifest references whose entries remain:
// their frames may still be stored, or a crash came between deleting them
// and Forget.
func (ix *Index) Dormant() ([]cdc.ID, error) {
	var out []cdc.ID
	err := ix.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRefs).ForEach(func(k, v []byte) error {
			r, err := decodeRef(v)
			if err != nil {
				return fmt.Errorf("chunk %x: %w", k, err)
			}
			if r.count == 0 {
				out = append(out, cdc.ID(k))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dormant chunks: %w", err)
	}
	return out, nil
}
