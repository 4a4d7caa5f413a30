package kv

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

// Sync reaches every value-log file written since the last Sync, not only
// the newest (Badger's own Sync): one write that grows a file past its
// preallocated size leaves that file's last entries unsynced when Badger
// moves on. And every memtable log, filled ones waiting for their flush
// included.
func TestSyncReachesEveryLogWrittenSince(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenChunks(dir, ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(t, err)
	defer s.Close()
	var synced []string
	s.syncFile = func(name string) error {
		synced = append(synced, filepath.Base(name))
		return syncFile(name)
	}
	vlogs := func() []string {
		names, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
		require.NoError(t, err)
		for i, n := range names {
			names[i] = filepath.Base(n)
		}
		return names
	}
	before := vlogs()

	b := s.NewBatch() // 5 MiB in one write-through: past a 1 MiB file's 2 MiB preallocation
	for i := range 80 {
		require.NoError(t, b.Put(cdc.ID{byte(i), 3}, make([]byte, 64<<10)))
	}
	require.NoError(t, b.Flush())
	require.NoError(t, s.Sync())
	after := vlogs()
	require.Greater(t, len(after), len(before), "the write moved on to a new value-log file")
	for _, name := range after {
		require.Contains(t, synced, name, "every value-log file written since the last Sync")
	}
	require.True(t, slices.ContainsFunc(synced, func(n string) bool { return strings.HasSuffix(n, memLogExt) }), "the memtable logs")

	synced = nil
	require.NoError(t, s.Sync())
	for _, name := range after[:len(after)-1] {
		require.NotContains(t, synced, name, "files synced whole are not synced again")
	}
	require.Contains(t, synced, after[len(after)-1], "the newest, which may still grow")
}
