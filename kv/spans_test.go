package kv

import (
	"bytes"
	"context"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

// spanStore is a chunk store holding n frames of about 20 KiB.
func spanStore(t *testing.T, n int) (*ChunkStore, []cdc.ID, [][]byte) {
	t.Helper()
	s, err := OpenChunks(t.TempDir(), ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	var ids []cdc.ID
	var frames [][]byte
	b := s.NewBatch()
	for i := range n {
		ids = append(ids, cdc.ID{byte(i), 0x5a})
		frames = append(frames, bytes.Repeat([]byte{byte(i), 0x5a}, 10<<10+i))
		require.NoError(t, b.Put(ids[i], frames[i]))
	}
	require.NoError(t, b.Flush())
	return s, ids, frames
}

// sendAll locates ids with the promised lengths of frames and returns the
// bytes the run sends, and how many frames it located.
func sendAll(t *testing.T, s *ChunkStore, ids []cdc.ID, frames [][]byte) ([]byte, int) {
	t.Helper()
	want := make([]uint32, len(frames))
	var total int64
	for i, f := range frames {
		want[i] = uint32(len(f))
		total += int64(len(f))
	}
	run, err := s.LocateFrames(context.Background(), ids, want)
	require.NoError(t, err)
	defer run.Close()
	var buf bytes.Buffer
	_, err = run.Send(&buf, 0, total)
	require.NoError(t, err)
	return buf.Bytes(), run.Len()
}

// A second send of the same frames finds them in the cache, and every
// change to a frame is seen by the next send: a rewrite of another length,
// a delete, and a value-log rewrite that moves it.
func TestLocateFramesCachesLocations(t *testing.T) {
	s, ids, frames := spanStore(t, 120)
	all := bytes.Join(frames, nil)

	got, n := sendAll(t, s, ids, frames)
	require.Equal(t, all, got)
	require.Equal(t, len(ids), n)
	require.Equal(t, len(ids), s.spans.len(), "every location looked up is kept")
	rewrote, err := s.Reclaim(context.Background(), 0.1)
	require.NoError(t, err)
	require.Zero(t, rewrote)
	require.Equal(t, len(ids), s.spans.len(), "a Reclaim that moved nothing keeps them")

	// Dropped behind the cache's back: the send still finds it, so it
	// did not ask Badger.
	require.NoError(t, s.db.Update(func(txn *badger.Txn) error { return txn.Delete(ids[7][:]) }))
	got, n = sendAll(t, s, ids, frames)
	require.Equal(t, len(ids), n)
	require.Equal(t, all, got)

	// Rewritten shorter, as a recompression does, in a batch large enough
	// to write through before its Flush: the new frame is sent.
	b := s.NewBatch()
	short := bytes.Repeat([]byte{9}, 5000)
	require.NoError(t, b.Put(ids[9], short))
	for i := range 9 {
		require.NoError(t, b.Put(cdc.ID{byte(i), 0xa5}, make([]byte, 1<<20)))
	}
	require.NoError(t, b.Flush())
	_, n = sendAll(t, s, ids, frames)
	require.Equal(t, 9, n, "the old length is no longer vouched for")
	rewritten := append([][]byte(nil), frames...)
	rewritten[9] = short
	got, n = sendAll(t, s, ids, rewritten)
	require.Equal(t, len(ids), n)
	require.Equal(t, bytes.Join(rewritten, nil), got)

	// Deleted: the send stops there.
	require.NoError(t, s.Delete(ids[40:41]))
	_, n = sendAll(t, s, ids, rewritten)
	require.Equal(t, 40, n)

	// Most frames deleted and the value log rewritten: the rest moved, and
	// the cache is empty until a send looks them up again.
	var keep []cdc.ID
	var kept [][]byte
	var drop []cdc.ID
	for i := range 9 {
		drop = append(drop, cdc.ID{byte(i), 0xa5})
	}
	for i, id := range ids {
		if i%5 == 0 && i != 40 {
			keep = append(keep, id)
			kept = append(kept, rewritten[i])
		} else {
			drop = append(drop, id)
		}
	}
	require.NoError(t, s.Delete(drop))
	rewrote, err = s.Reclaim(context.Background(), 0.1)
	require.NoError(t, err)
	require.Positive(t, rewrote)
	require.Zero(t, s.spans.len())
	got, n = sendAll(t, s, keep, kept)
	require.Equal(t, len(keep), n)
	require.Equal(t, bytes.Join(kept, nil), got)
}

// A cached location whose file is gone stops the run there, and the whole
// cache goes: the next send looks everything up again.
func TestLocateFramesDropsAStaleCache(t *testing.T) {
	s, ids, frames := spanStore(t, 20)
	_, n := sendAll(t, s, ids, frames)
	require.Equal(t, len(ids), n)
	cs, ok := s.spans.m[ids[5]]
	require.True(t, ok)
	cs.fid += 1000
	s.spans.m[ids[5]] = cs

	_, n = sendAll(t, s, ids, frames)
	require.Equal(t, 5, n)
	require.Zero(t, s.spans.len())
	got, n := sendAll(t, s, ids, frames)
	require.Equal(t, len(ids), n)
	require.Equal(t, bytes.Join(frames, nil), got)
}

func TestSpanCache(t *testing.T) {
	ids := make([]cdc.ID, 20)
	spans := make([]span, 20)
	for i := range ids {
		ids[i] = cdc.ID{byte(i)}
		spans[i] = span{fid: 1, entry: uint32(i) * 100, vlen: 50}
	}
	for _, tc := range []struct {
		name string
		max  int
		fill func(c *spanCache)
		want int
	}{
		{"kept", 64, func(c *spanCache) { c.add(c.generation(), ids, spans) }, 20},
		{"looked up before a write was seen", 64, func(c *spanCache) {
			gen := c.generation()
			c.forget(ids[3:4])
			c.add(gen, ids, spans)
		}, 0},
		{"looked up before a rewrite", 64, func(c *spanCache) {
			gen := c.generation()
			c.clear()
			c.add(gen, ids, spans)
		}, 0},
		{"forgotten", 64, func(c *spanCache) {
			c.add(c.generation(), ids, spans)
			c.forget(ids[:5])
		}, 15},
		{"bounded", 8, func(c *spanCache) {
			c.add(c.generation(), ids[:6], spans[:6])
			c.add(c.generation(), ids[6:], spans[6:])
		}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newSpanCache(tc.max)
			tc.fill(c)
			require.Equal(t, tc.want, c.len())
		})
	}
}
