package nixtest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
	"cairn/kv"
)

// StoredFrames opens a chunk store with 1 MiB value-log files in a
// temporary directory, closed when the test ends, and stores frames in it
// under made-up ids. It returns the store, the ids and lengths of the
// frames in order, and all their bytes back to back.
func StoredFrames(tb testing.TB, frames [][]byte) (s *kv.ChunkStore, ids []cdc.ID, lens []uint32, all []byte) {
	tb.Helper()
	s, err := kv.OpenChunks(tb.TempDir(), kv.ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(tb, err)
	tb.Cleanup(func() { s.Close() })
	b := s.NewBatch()
	for i, f := range frames {
		ids = append(ids, cdc.ID{byte(i), byte(i >> 8), byte(i >> 16), 0xfe})
		lens = append(lens, uint32(len(f)))
		all = append(all, f...)
		require.NoError(tb, b.Put(ids[i], f))
	}
	require.NoError(tb, b.Flush())
	require.NoError(tb, s.Sync())
	return s, ids, lens, all
}
