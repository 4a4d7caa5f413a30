package kv

import (
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// Badger's errors (a memtable flush that keeps failing, say) reach the log
// whether or not the sizes are left to their defaults.
func TestOpenChunksKeepsTheLogger(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, o := range []ChunkOptions{
		{Logger: log},
		{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 16 << 20, Logger: log},
	} {
		s, err := OpenChunks(t.TempDir(), o)
		require.NoError(t, err)
		got, ok := s.db.Opts().Logger.(badgerLogger)
		require.True(t, ok)
		require.Same(t, log, got.l, "sizes %d/%d/%d", o.MemTableSize, o.IndexCacheSize, o.ValueLogFileSize)
		require.NoError(t, s.Close())
	}
}
