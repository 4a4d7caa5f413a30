package kv

import (
	"bytes"
	"context"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

// testFrame is a value of n bytes that differs for every seed.
func testFrame(seed byte, n int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = seed + byte(i*7)
	}
	return f
}

func TestReleaseKeepsValuesAndSparesInlineOnes(t *testing.T) {
	s, err := OpenChunks(t.TempDir(), DefaultChunkOptions)
	require.NoError(t, err)
	defer s.Close()
	tests := []struct {
		name  string
		size  int
		inLog bool
	}{
		{"tiny inline", 14, false},
		{"just under the threshold", valueThreshold - 1, false},
		{"at the threshold", valueThreshold, true},
		{"one-byte value length", 127, true},
		{"two-byte value length", 128, true},
		{"largest two-byte value length", 16383, true},
		{"three-byte value length", 16384, true},
		{"one page", 4096, true},
		{"a large frame", 300 << 10, true},
	}
	b := s.NewBatch()
	for i, tc := range tests {
		require.NoError(t, b.Put(cdc.ID{byte(i + 1)}, testFrame(byte(i), tc.size)), tc.name)
	}
	require.NoError(t, b.Flush())
	require.NoError(t, s.Sync())
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := cdc.ID{byte(i + 1)}
			require.NoError(t, s.db.View(func(txn *badger.Txn) error {
				item, err := txn.Get(id[:])
				require.NoError(t, err)
				read, ok := s.logs.appendValue(item, []byte("x"))
				require.Equal(t, tc.inLog, ok, "read with pread")
				if ok {
					require.True(t, bytes.Equal(append([]byte("x"), testFrame(byte(i), tc.size)...), read))
				}
				return item.Value(func(v []byte) error {
					require.Equal(t, tc.inLog, inValueLog(item, v))
					return nil
				})
			}))
			for range 2 { // the second read maps the dropped pages again
				f, err := s.Frame(context.Background(), id, nil)
				require.NoError(t, err)
				require.True(t, bytes.Equal(testFrame(byte(i), tc.size), f))
			}
		})
	}
}

func TestEntryLayout(t *testing.T) {
	tests := []struct {
		vlen, hlen int
	}{
		{0, 5}, {127, 5}, {128, 6}, {16383, 6}, {16384, 7}, {1<<21 - 1, 7}, {1 << 21, 8},
	}
	for _, tc := range tests {
		entry := uint32(tc.hlen + 40 + tc.vlen + vlogCRCSize)
		hlen, vlen, ok := entryLayout(entry, 40)
		require.True(t, ok, "value of %d bytes", tc.vlen)
		require.Equal(t, tc.hlen, hlen, "value of %d bytes", tc.vlen)
		require.Equal(t, tc.vlen, vlen)
	}
}
