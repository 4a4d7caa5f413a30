package kv

import (
	"context"
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

// Reclaim deletes a rewritten value-log file only after a Sync has made
// the copies of its live frames durable: each file it deletes was still
// there when a Sync during the rewrites ran.
func TestReclaimSyncsBeforeDeleting(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenChunks(dir, ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(t, err)
	defer s.Close()
	var ids []cdc.ID
	b := s.NewBatch()
	for i := range 400 {
		ids = append(ids, cdc.ID{byte(i), byte(i >> 8), 4})
		require.NoError(t, b.Put(ids[i], make([]byte, 32<<10)))
	}
	require.NoError(t, b.Flush())
	require.NoError(t, s.Sync())
	require.NoError(t, s.Delete(ids[:390]))
	_, before, err := s.listLogs()
	require.NoError(t, err)

	seen := map[uint32]bool{} // value-log files present when a Sync ran
	s.syncFile = func(name string) error {
		_, fids, err := s.listLogs()
		require.NoError(t, err)
		for _, fid := range fids {
			seen[fid] = true
		}
		return syncFile(name)
	}
	rewrote, err := s.Reclaim(context.Background(), 0.5)
	require.NoError(t, err)
	require.Positive(t, rewrote)
	_, after, err := s.listLogs()
	require.NoError(t, err)
	deleted := 0
	for _, fid := range before {
		if !slices.Contains(after, fid) {
			deleted++
			require.True(t, seen[fid], "value-log file %d deleted with no Sync before", fid)
		}
	}
	require.Positive(t, deleted)
}
