package kv_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
	"cairn/kv"
)

func sketchOf(vals ...uint64) *cdc.Sketch {
	var sk cdc.Sketch
	copy(sk[:], vals)
	return &sk
}

// A delta's base is reserved, and counted, before the delta exists, and
// goes only with the last delta and manifest that need it.
func TestIndexDeltaBases(t *testing.T) {
	ix, err := kv.OpenIndex(filepath.Join(t.TempDir(), "index.db"), cdc.DefaultParams)
	require.NoError(t, err)
	defer ix.Close()
	stored := func(ids ...byte) []cdc.ChunkRef {
		var out []cdc.ChunkRef
		for _, b := range ids {
			out = append(out, cdc.ChunkRef{ID: id(b), Raw: 90, Comp: 100, Level: cdc.StoredLevel})
		}
		return out
	}
	a := &kv.Manifest{NarHash: [32]byte{0xa}, NarSize: 180, Chunks: stored(1, 2)}
	b := &kv.Manifest{NarHash: [32]byte{0xb}, NarSize: 180, Chunks: stored(3, 4)}
	for _, m := range []*kv.Manifest{a, b} {
		_, err := ix.CommitNAR(m, nil, nil)
		require.NoError(t, err)
	}
	s1 := sketchOf(1, 2, 3, 4, 5, 6, 7, 8)
	s2 := sketchOf(11, 12, 13, 14, 15, 16, 17, 8)
	require.NoError(t, ix.RecordFrames([]kv.FrameUpdate{
		{ID: id(1), From: 100, Comp: 40, Level: 16, Sketch: s1},
		{ID: id(2), From: 100, Comp: 30, Level: 16, Sketch: s2},
	}))

	for _, tc := range []struct {
		name string
		sk   *cdc.Sketch
		skip cdc.ID
		want cdc.ID
		ok   bool
	}{
		{"most shared super-features", sketchOf(1, 2, 3, 0, 0, 0, 0, 8), id(3), id(1), true},
		{"the other", sketchOf(0, 0, 0, 0, 15, 16, 0, 8), id(3), id(2), true},
		{"skipped", s1, id(1), id(2), true},
		{"nothing shared", sketchOf(9, 9, 9, 9, 9, 9, 9, 9), id(3), cdc.ID{}, false},
	} {
		got, ok, err := ix.SimilarChunk(*tc.sk, func(c cdc.ID) bool { return c == tc.skip })
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.ok, ok, tc.name)
		require.Equal(t, tc.want, got, tc.name)
	}

	ok, err := ix.ReserveBases([]kv.BaseRef{
		{ID: id(3), Base: id(1)},
		{ID: id(4), Base: id(3)}, // a base must be stored as a compressed frame
		{ID: id(2), Base: id(1)}, // only stored-block frames become deltas
		{ID: id(5), Base: id(1)}, // not referenced
		{ID: id(4), Base: id(4)},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, false, false, false}, ok)
	ok, err = ix.ReserveBases([]kv.BaseRef{{ID: id(3), Base: id(1)}, {ID: id(3), Base: id(2)}})
	require.NoError(t, err)
	require.Equal(t, []bool{true, false}, ok, "a reservation is kept, and counted once")
	counts := func() map[cdc.ID]uint64 {
		c := map[cdc.ID]uint64{}
		require.NoError(t, ix.ForEachRef(func(r kv.RefInfo) error { c[r.ID] = r.Count; return nil }))
		return c
	}
	require.Equal(t, map[cdc.ID]uint64{id(1): 2, id(2): 1, id(3): 1, id(4): 1}, counts())
	base, has, err := ix.ChunkBase(id(3))
	require.NoError(t, err)
	require.True(t, has)
	require.Equal(t, id(1), base)

	// Recording a delta needs its reservation.
	require.ErrorIs(t, ix.RecordFrames([]kv.FrameUpdate{{ID: id(4), From: 100, Comp: 10, Level: cdc.DeltaLevel}}), kv.ErrBadRecord)
	require.NoError(t, ix.RecordFrames([]kv.FrameUpdate{{ID: id(3), From: 100, Comp: 10, Level: cdc.DeltaLevel, Sketch: s1}}))
	got, err := ix.Manifest(b.NarHash)
	require.NoError(t, err)
	require.Equal(t, cdc.ChunkRef{ID: id(3), Raw: 90, Comp: 100, Level: cdc.DeltaLevel}, got.Chunks[0], "served as its stored-block frame")
	st, err := ix.Stats()
	require.NoError(t, err)
	require.EqualValues(t, 40+30+10+100, st.PhysicalBytes, "a delta counts its stored bytes")
	similar, _, err := ix.SimilarChunk(*s1, nil)
	require.NoError(t, err)
	require.Equal(t, id(1), similar, "a delta is never a base")

	// The base outlives the NAR it came with while a delta needs it.
	freed, err := ix.DeleteNAR(a.NarHash)
	require.NoError(t, err)
	require.Equal(t, []cdc.ID{id(2)}, freed)
	require.Equal(t, map[cdc.ID]uint64{id(1): 1, id(2): 0, id(3): 1, id(4): 1}, counts(), "2 is dormant until its frame is deleted")
	bases, err := ix.Forget([]cdc.ID{id(2), id(3)})
	require.NoError(t, err)
	require.Empty(t, bases)
	require.Equal(t, map[cdc.ID]uint64{id(1): 1, id(3): 1, id(4): 1}, counts(), "forgetting skips what is referenced")

	// The delta's last NAR goes: the delta is dormant and still holds its
	// base, so an ingest that found it stored may commit it again...
	freed, err = ix.DeleteNAR(b.NarHash)
	require.NoError(t, err)
	require.Equal(t, []cdc.ID{id(3), id(4)}, freed)
	require.Equal(t, map[cdc.ID]uint64{id(1): 1, id(3): 0, id(4): 0}, counts())
	ok3, err := ix.Unreferenced([]cdc.ID{id(1), id(3)})
	require.NoError(t, err)
	require.Equal(t, []cdc.ID{id(3)}, ok3)
	_, _, found, err := ix.ChunkFrame(id(3))
	require.NoError(t, err)
	require.False(t, found, "a dormant chunk is written again, not found")
	c := &kv.Manifest{NarHash: [32]byte{0xc}, NarSize: 90, Chunks: []cdc.ChunkRef{{ID: id(3), Raw: 90, Comp: 100, Level: cdc.DeltaLevel}}}
	_, err = ix.CommitNAR(c, nil, nil)
	require.NoError(t, err)
	base, has, err = ix.ChunkBase(id(3))
	require.NoError(t, err)
	require.True(t, has)
	require.Equal(t, id(1), base, "the revived delta keeps its base")
	require.Equal(t, map[cdc.ID]uint64{id(1): 1, id(3): 1, id(4): 0}, counts())
	st, err = ix.Stats()
	require.NoError(t, err)
	require.EqualValues(t, 40+10, st.PhysicalBytes)

	// ...and once its frame is deleted, forgetting it releases the base.
	freed, err = ix.DeleteNAR(c.NarHash)
	require.NoError(t, err)
	require.Equal(t, []cdc.ID{id(3)}, freed)
	bases, err = ix.Forget([]cdc.ID{id(3), id(4)})
	require.NoError(t, err)
	require.Equal(t, []cdc.ID{id(1)}, bases)
	dormant, err := ix.Dormant()
	require.NoError(t, err)
	require.Equal(t, []cdc.ID{id(1)}, dormant)
	bases, err = ix.Forget(dormant)
	require.NoError(t, err)
	require.Empty(t, bases)
	require.Empty(t, counts())
	st, err = ix.Stats()
	require.NoError(t, err)
	require.Equal(t, kv.Stats{}, st)
	_, found, err = ix.SimilarChunk(*s1, nil)
	require.NoError(t, err)
	require.False(t, found, "sketch keys go with their chunk")
}
