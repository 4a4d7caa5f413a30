package kv_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"cairn/cdc"
	"cairn/internal/nixtest"
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

	// Frame sizes live in the ref entries, not in the manifest record.
	m := &kv.Manifest{NarHash: [32]byte{2}, NarSize: 300, Listing: []byte("ls"),
		Chunks: []cdc.ChunkRef{{ID: id(1), Raw: 100}, {ID: id(2), Raw: 200}}}
	b, err = m.MarshalBinary()
	require.NoError(t, err)
	var gm kv.Manifest
	require.NoError(t, gm.UnmarshalBinary(b))
	require.Equal(t, *m, gm)
	// A record's bytes live in bbolt's map only as long as its transaction,
	// and that map moves when the file grows: a record keeps nothing of it.
	// (A listing read after its transaction crashed cairn serve once.)
	clear(b)
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
		created, err := ix.CommitNAR(m, nil, nil)
		require.NoError(t, err)
		require.True(t, created)
	}
	created, err := ix.CommitNAR(a, nil, nil)
	require.NoError(t, err)
	require.False(t, created, "a second commit of one NAR changes nothing")

	st, err := ix.Stats()
	require.NoError(t, err)
	require.Equal(t, kv.Stats{NARs: 2, Chunks: 3, LogicalBytes: 2500, PhysicalBytes: 180}, st)
	counts := map[cdc.ID]uint64{}
	require.NoError(t, ix.ForEachRef(func(r kv.RefInfo) error { counts[r.ID] = r.Count; return nil }))
	require.EqualValues(t, 2, counts[id(2)])

	got, err := ix.Manifest(b.NarHash)
	require.NoError(t, err)
	require.Equal(t, b.Chunks, got.Chunks, "frame sizes come back from the ref entries")
	require.EqualValues(t, 200, got.FileSize())

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
	gotInfo, err := ix.NarInfo("00000000000000000000000000000000")
	require.NoError(t, err)
	require.Equal(t, a.NarHash, gotInfo.NarHash)

	// Deleting a NAR deletes the narinfos that name it, in the same commit.
	_, err = ix.DeleteNAR(a.NarHash)
	require.NoError(t, err)
	_, err = ix.NarInfo("00000000000000000000000000000000")
	require.ErrorIs(t, err, kv.ErrNotFound)
	st, err = ix.Stats()
	require.NoError(t, err)
	require.Zero(t, st.NarInfos)
}

// A NAR's upload name is committed with the NAR or not at all: an upload
// entry is what lets GC drop a NAR no narinfo came to name.
func TestCommitNARRecordsUploadWithIt(t *testing.T) {
	ix, err := kv.OpenIndex(filepath.Join(t.TempDir(), "index.db"), cdc.DefaultParams)
	require.NoError(t, err)
	defer ix.Close()
	at := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name    string
		m       *kv.Manifest
		ni      *kv.NarInfo
		wantErr bool
	}{
		{"committed", &kv.Manifest{NarHash: [32]byte{0xa}, NarSize: 10, Chunks: []cdc.ChunkRef{{ID: id(1), Raw: 10, Comp: 10}}}, nil, false},
		{"refused", &kv.Manifest{NarHash: [32]byte{0xb}, NarSize: 10, Chunks: []cdc.ChunkRef{{ID: id(2), Raw: 10, Comp: 10}}},
			&kv.NarInfo{StorePath: "/nix/store/00000000000000000000000000000000-x", NarHash: [32]byte{0xc}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &kv.Upload{Name: "nar/" + tc.name + ".nar.xz", At: at}
			_, err := ix.CommitNAR(tc.m, tc.ni, up)
			uploads, lerr := ix.Uploads()
			require.NoError(t, lerr)
			has, herr := ix.HasManifest(tc.m.NarHash)
			require.NoError(t, herr)
			if tc.wantErr {
				require.Error(t, err)
				require.False(t, has)
				for _, u := range uploads {
					require.NotEqual(t, up.Name, u.Name, "no upload entry without its NAR")
				}
				return
			}
			require.NoError(t, err)
			require.True(t, has)
			require.Contains(t, uploads, kv.UploadEntry{Name: up.Name, NarHash: tc.m.NarHash, At: at})
		})
	}
}

func TestRecompressQueue(t *testing.T) {
	ix, err := kv.OpenIndex(filepath.Join(t.TempDir(), "index.db"), cdc.DefaultParams)
	require.NoError(t, err)
	defer ix.Close()
	stored := &kv.Manifest{NarHash: [32]byte{1}, NarSize: 10, Chunks: []cdc.ChunkRef{{ID: id(1), Raw: 10, Comp: 25, Level: cdc.StoredLevel}}}
	packed := &kv.Manifest{NarHash: [32]byte{2}, NarSize: 10, Chunks: []cdc.ChunkRef{{ID: id(2), Raw: 10, Comp: 5, Level: 4}}}
	for _, m := range []*kv.Manifest{stored, packed} {
		_, err := ix.CommitNAR(m, nil, nil)
		require.NoError(t, err)
	}
	due, err := ix.DueRecompress(time.Now().Add(time.Second), nil, 10)
	require.NoError(t, err)
	require.Len(t, due, 1, "only a NAR with stored-block frames is queued")
	require.Equal(t, stored.NarHash, due[0].NarHash)
	none, err := ix.DueRecompress(due[0].Queued, nil, 10)
	require.NoError(t, err)
	require.Empty(t, none, "not due before its delay")

	require.NoError(t, ix.FinishRecompress(due[0].Key, []kv.FrameUpdate{
		{ID: id(1), From: 25, Comp: 12, Level: 4},
		{ID: id(2), From: 99, Comp: 1, Level: 4}, // stale: skipped
	}))
	m, err := ix.Manifest(stored.NarHash)
	require.NoError(t, err)
	require.Equal(t, cdc.ChunkRef{ID: id(1), Raw: 10, Comp: 12, Level: 4}, m.Chunks[0])
	st, err := ix.Stats()
	require.NoError(t, err)
	require.EqualValues(t, 12+5, st.PhysicalBytes)
	due, err = ix.DueRecompress(time.Now().Add(time.Second), nil, 10)
	require.NoError(t, err)
	require.Empty(t, due)
}

func TestIndexRefusesOtherFormat(t *testing.T) {
	for _, tc := range []struct {
		format  string
		wantErr string // empty: opens
	}{
		{"999", "index format 999"},
		{"1", ""}, // version 1 is upgraded in place: it has no deltas yet
		{"2", ""},
	} {
		path := filepath.Join(t.TempDir(), "index.db")
		ix, err := kv.OpenIndex(path, cdc.DefaultParams)
		require.NoError(t, err)
		require.NoError(t, ix.Close())

		setFormat := func(v string) {
			db, err := bolt.Open(path, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte(v)) }))
			require.NoError(t, db.Close())
		}
		setFormat(tc.format)
		ix, err = kv.OpenIndex(path, cdc.DefaultParams)
		if tc.wantErr != "" {
			require.ErrorIs(t, err, kv.ErrFormat, tc.format)
			require.Contains(t, err.Error(), tc.wantErr)
			continue
		}
		require.NoError(t, err, tc.format)
		require.NoError(t, ix.Close())
		db, err := bolt.Open(path, 0o600, nil)
		require.NoError(t, err)
		require.NoError(t, db.View(func(tx *bolt.Tx) error {
			require.Equal(t, strconv.Itoa(kv.FormatVersion), string(tx.Bucket([]byte("meta")).Get([]byte("format"))))
			return nil
		}))
		require.NoError(t, db.Close())
	}
}

func TestChunkStoreReclaimGivesSpaceBack(t *testing.T) {
	dir := t.TempDir()
	s, err := kv.OpenChunks(dir, kv.ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(t, err)
	defer s.Close()
	var ids []cdc.ID
	b := s.NewBatch()
	for i := range 400 {
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
	full := nixtest.DiskUsage(t, dir)

	require.NoError(t, s.Delete(ids[:390]))
	_, err = s.Frame(context.Background(), ids[7], nil)
	require.ErrorIs(t, err, kv.ErrNotFound)
	rewrote, err := s.Reclaim(context.Background(), 0.5)
	require.NoError(t, err)
	require.Positive(t, rewrote)
	after := nixtest.DiskUsage(t, dir)
	require.Less(t, after, full/2, "disk use falls after deletes: %d -> %d", full, after)
	for _, id := range ids[390:] {
		f, err := s.Frame(context.Background(), id, nil)
		require.NoError(t, err, "live frames survive the rewrite")
		require.Len(t, f, 32<<10)
	}
}

func TestChunkStoreOpensAfterCrashLeftEmptyLogs(t *testing.T) {
	dir := t.TempDir()
	s, err := kv.OpenChunks(dir, kv.DefaultChunkOptions)
	require.NoError(t, err)
	b := s.NewBatch()
	require.NoError(t, b.Put(id(1), []byte("frame bytes")))
	require.NoError(t, b.Flush())
	require.NoError(t, s.Close())
	// What a kill between creating the next value-log or memtable file and
	// sizing it leaves behind.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "000099.vlog"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o644))

	s, err = kv.OpenChunks(dir, kv.DefaultChunkOptions)
	require.NoError(t, err)
	defer s.Close()
	f, err := s.Frame(context.Background(), id(1), nil)
	require.NoError(t, err)
	require.Equal(t, "frame bytes", string(f))
}

// Sync reaches the logs of memtables that filled up and wait for their
// flush, not only the active one's (Badger's own Sync). A power cut is not
// something a test can make here; this runs Sync while such a memtable
// exists, and while the flusher deletes logs under it.
func TestSyncWithFilledMemtablesWaiting(t *testing.T) {
	dir := t.TempDir()
	s, err := kv.OpenChunks(dir, kv.ChunkOptions{MemTableSize: 1 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(t, err)
	defer s.Close()
	waiting := 0
	for round := 0; round < 200 && waiting < 3; round++ {
		b := s.NewBatch()
		for i := range 500 {
			frame := make([]byte, 200) // small values live in the memtable: it fills quickly
			frame[0], frame[1] = byte(i), byte(round)
			require.NoError(t, b.Put(cdc.ID{byte(i), byte(i >> 8), byte(round), 2}, frame))
		}
		require.NoError(t, b.Flush())
		logs, err := filepath.Glob(filepath.Join(dir, "*.mem"))
		require.NoError(t, err)
		if len(logs) > 1 {
			waiting++
		}
		require.NoError(t, s.Sync())
	}
	require.Positive(t, waiting, "no filled memtable was ever seen waiting for its flush")
}

// Reclaims from the recompressor, an eviction and a GC may overlap. Badger's
// compaction pause and resume, which Flatten and DropPrefix both do, is not
// safe to run twice at once: a second resume starts compactors that nothing
// stops, and -race reports the shared field.
func TestChunkStoreReclaimsAtOnce(t *testing.T) {
	frames := make([][]byte, 200)
	for i := range frames {
		frames[i] = bytes.Repeat([]byte{byte(i)}, 16<<10)
	}
	s, ids, _, _ := nixtest.StoredFrames(t, frames)
	require.NoError(t, s.Delete(ids[:150]))

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			for range 10 {
				if _, err := s.Reclaim(context.Background(), 0.1); err != nil {
					errs[i] = err
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	for _, id := range ids[150:] {
		f, err := s.Frame(context.Background(), id, nil)
		require.NoError(t, err)
		require.Len(t, f, 16<<10)
	}
}
