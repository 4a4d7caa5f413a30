package kv_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"cairn/cdc"
	"cairn/kv"
)

func id(b byte) cdc.ID { return cdc.ID{b} }

func TestRecordsRoundTrip(t *testing.T) {
	ni := &kv.NarInfo{StorePath: "/nix/store/00000000000000000000000000000000-a", NarHash: [32]byte{1}, NarSize: 99,
		References: []string{"00000000000000000000000000000000-a", "11111111111111111111111111111111-b"},
		Deriver:    "22222222222222222222222222222222-a.drv", CA: "fixed:r:sha256:xyz",
		Sigs: []string{"k-1:AAAA", "k-2:BBBB"}, Source: "http://up", Added: 1700000000}
	b, err := ni.MarshalBinary()
	require.NoError(t, err)
	var got kv.NarInfo
	require.NoError(t, got.UnmarshalBinary(b))
	require.Equal(t, *ni, got)

	m := &kv.Manifest{NarHash: [32]byte{2}, NarSize: 300, FileSize: 120, FileHash: [32]byte{3}, Listing: []byte("ls"),
		Chunks: []cdc.ChunkRef{{ID: id(1), Raw: 100, Comp: 40}, {ID: id(2), Raw: 200, Comp: 80}}}
	b, err = m.MarshalBinary()
	require.NoError(t, err)
	var gm kv.Manifest
	require.NoError(t, gm.UnmarshalBinary(b))
	require.Equal(t, *m, gm)

	// Every truncation is an error, never a panic or a short record.
	for i := range b {
		require.ErrorIs(t, new(kv.Manifest).UnmarshalBinary(b[:i]), kv.ErrBadRecord, "cut at %d", i)
	}
}

func TestIndexRefcountsAndStats(t *testing.T) {
	ix, err := kv.OpenIndex(filepath.Join(t.TempDir(), "index.db"), cdc.DefaultParams)
	require.NoError(t, err)
	defer ix.Close()
	a := &kv.Manifest{NarHash: [32]byte{0xa}, NarSize: 1000, Chunks: []cdc.ChunkRef{{ID: id(1), Raw: 500, Comp: 50}, {ID: id(2), Raw: 500, Comp: 60}}}
	b := &kv.Manifest{NarHash: [32]byte{0xb}, NarSize: 1500, Chunks: []cdc.ChunkRef{{ID: id(2), Raw: 500, Comp: 60}, {ID: id(3), Raw: 500, Comp: 70}, {ID: id(3), Raw: 500, Comp: 70}}}
	for _, m := range []*kv.Manifest{a, b} {
		created, err := ix.CommitNAR(m, nil)
		require.NoError(t, err)
		require.True(t, created)
	}
	created, err := ix.CommitNAR(a, nil)
	require.NoError(t, err)
	require.False(t, created, "a second commit of one NAR changes nothing")

	st, err := ix.Stats()
	require.NoError(t, err)
	require.Equal(t, kv.Stats{NARs: 2, Chunks: 3, LogicalBytes: 2500, PhysicalBytes: 180}, st)
	n, err := ix.RefCount(id(2))
	require.NoError(t, err)
	require.EqualValues(t, 2, n)

	freed, err := ix.DeleteNAR(b.NarHash)
	require.NoError(t, err)
	require.Equal(t, []cdc.ID{id(3)}, freed, "only the chunk b alone held")
	st, err = ix.Stats()
	require.NoError(t, err)
	require.Equal(t, kv.Stats{NARs: 1, Chunks: 2, LogicalBytes: 1000, PhysicalBytes: 110}, st)
	_, err = ix.DeleteNAR(b.NarHash)
	require.ErrorIs(t, err, kv.ErrNotFound)

	// A narinfo must name a committed NAR.
	ni := &kv.NarInfo{StorePath: "/nix/store/00000000000000000000000000000000-a", NarHash: b.NarHash}
	require.ErrorIs(t, ix.PutNarInfo(ni), kv.ErrNotFound)
	ni.NarHash = a.NarHash
	require.NoError(t, ix.PutNarInfo(ni))
	got, err := ix.NarInfo("00000000000000000000000000000000")
	require.NoError(t, err)
	require.Equal(t, a.NarHash, got.NarHash)
}

func TestIndexRefusesOtherFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	ix, err := kv.OpenIndex(path, cdc.DefaultParams)
	require.NoError(t, err)
	require.NoError(t, ix.Close())

	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte("999")) }))
	require.NoError(t, db.Close())

	_, err = kv.OpenIndex(path, cdc.DefaultParams)
	require.ErrorIs(t, err, kv.ErrFormat)
	require.Contains(t, err.Error(), "index format 999")
}

func TestChunkStoreGCGivesSpaceBack(t *testing.T) {
	s, err := kv.OpenChunks(t.TempDir(), kv.ChunkOptions{MemTableSize: 1 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(t, err)
	defer s.Close()
	var ids []cdc.ID
	b := s.NewBatch()
	for i := range 200 {
		frame := make([]byte, 32<<10)
		frame[0] = byte(i)
		ids = append(ids, cdc.ID{byte(i), byte(i >> 8), 1})
		require.NoError(t, b.Put(ids[i], frame))
	}
	require.NoError(t, b.Flush())
	require.NoError(t, s.Sync())
	ok, err := s.Has(ids[7])
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.Delete(ids))
	_, err = s.Frame(context.Background(), ids[7], nil)
	require.ErrorIs(t, err, kv.ErrNotFound)
	_, err = s.GC(context.Background(), 0.5)
	require.NoError(t, err)
}
