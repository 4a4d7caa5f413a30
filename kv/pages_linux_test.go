package kv

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

// valueLogRSS is how many KiB of this process's value-log mappings are
// resident.
func valueLogRSS(t *testing.T) int {
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	kib, inLog := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			inLog = strings.HasSuffix(fields[len(fields)-1], ".vlog")
		case inLog && len(fields) > 1 && fields[0] == "Rss:":
			n, err := strconv.Atoi(fields[1])
			require.NoError(t, err)
			kib += n
		}
	}
	return kib
}

func TestWrittenAndReadFramesLeaveNoResidentPages(t *testing.T) {
	s, err := OpenChunks(t.TempDir(), ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 16 << 20})
	require.NoError(t, err)
	defer s.Close()
	const frames, size = 600, 64 << 10 // write-throughs and a rest
	var ids []cdc.ID
	b := s.NewBatch()
	for i := range frames {
		ids = append(ids, cdc.ID{byte(i), byte(i >> 8), 7})
		require.NoError(t, b.Put(ids[i], testFrame(byte(i), size)))
	}
	require.NoError(t, b.Flush())
	require.NoError(t, s.Sync())
	require.Less(t, valueLogRSS(t), 2<<10, "written frames stay out of RSS")

	buf, ends, err := s.Frames(context.Background(), ids, nil, nil)
	require.NoError(t, err)
	require.Len(t, ends, frames)
	require.Equal(t, testFrame(9, size), buf[ends[8]:ends[9]])
	require.Less(t, valueLogRSS(t), 2<<10, "read frames stay out of RSS")

	// Every tenth frame survives, so every file the rewrite moves holds
	// some: about 3.8 MiB go through new mappings.
	var gone []cdc.ID
	for i, id := range ids {
		if i%10 != 0 {
			gone = append(gone, id)
		}
	}
	require.NoError(t, s.Delete(gone))
	rewrote, err := s.Reclaim(context.Background(), 0.5)
	require.NoError(t, err)
	require.Positive(t, rewrote)
	require.Less(t, valueLogRSS(t), 2<<10, "frames a value-log rewrite moved stay out of RSS")
	for i := 0; i < frames; i += 10 {
		f, err := s.Frame(context.Background(), ids[i], nil)
		require.NoError(t, err)
		require.Equal(t, testFrame(byte(i), size), f)
	}
}

// TestValueLogWritesBypassTheMapping guards the one change in kv/third_party/badger (see
// its CAIRN.md): Badger writes value-log entries with pwrite, so written pages
// never enter this process's page tables. Upstream Badger copies them into
// its mapping, which would leave all 8 MiB resident here.
func TestValueLogWritesBypassTheMapping(t *testing.T) {
	s, err := OpenChunks(t.TempDir(), ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 16 << 20})
	require.NoError(t, err)
	defer s.Close()
	const values, size = 128, 64 << 10
	wb := s.db.NewWriteBatch()
	for i := range values {
		require.NoError(t, wb.Set([]byte{byte(i), 1, 2, 3}, testFrame(byte(i), size)))
	}
	require.NoError(t, wb.Flush())
	require.Less(t, valueLogRSS(t), 256, "value-log writes went through Badger's mapping: is kv/third_party/badger's change missing?")

	// Reads through the mapping see what pwrite wrote: one page cache.
	require.NoError(t, s.db.View(func(txn *badger.Txn) error {
		for _, i := range []int{0, 77, values - 1} {
			item, err := txn.Get([]byte{byte(i), 1, 2, 3})
			require.NoError(t, err)
			require.NoError(t, item.Value(func(v []byte) error {
				require.Equal(t, testFrame(byte(i), size), v)
				return nil
			}))
		}
		return nil
	}))
}

// Entries written with pwrite (kv/third_party/badger's change) are whole
// when the store opens again: Badger checks every entry of the newest
// value-log file on open and cuts the file at the first bad one.
func TestValueLogEntriesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	opts := ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 16 << 20}
	s, err := OpenChunks(dir, opts)
	require.NoError(t, err)
	var ids []cdc.ID
	var want [][]byte
	b := s.NewBatch()
	for i := range 400 { // several files, and sizes that are not page multiples
		ids = append(ids, cdc.ID{byte(i), byte(i >> 8), 9})
		want = append(want, testFrame(byte(i), 1000+i*331))
		require.NoError(t, b.Put(ids[i], bytes.Clone(want[i])))
	}
	require.NoError(t, b.Flush())
	require.NoError(t, s.Sync())
	require.NoError(t, s.Close())
	logs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	require.Greater(t, len(logs), 1)
	newest := logs[len(logs)-1]
	st, err := os.Stat(newest)
	require.NoError(t, err)
	written := st.Size()

	s, err = OpenChunks(dir, opts)
	require.NoError(t, err)
	defer s.Close()
	st, err = os.Stat(newest)
	require.NoError(t, err)
	require.GreaterOrEqual(t, st.Size(), written, "Badger cut the newest value-log file: an entry's checksum is wrong")
	require.NoError(t, s.db.View(func(txn *badger.Txn) error {
		for i, id := range ids {
			item, err := txn.Get(id[:])
			require.NoError(t, err, i)
			require.NoError(t, item.Value(func(v []byte) error {
				require.Equal(t, want[i], v, i)
				return nil
			}))
		}
		return nil
	}))
}
