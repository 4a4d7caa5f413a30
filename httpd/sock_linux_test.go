package httpd

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
	"cairn/kv"
)

// TestSockWriterSplicesFrames sends stored frames to a real socket through
// a pipe, in runs longer than the pipe holds, and checks every byte.
func TestSockWriterSplicesFrames(t *testing.T) {
	s, err := kv.OpenChunks(t.TempDir(), kv.ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20})
	require.NoError(t, err)
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var ids []cdc.ID
	var want []uint32
	var all []byte
	b := s.NewBatch()
	for i := range 300 {
		frame := make([]byte, 1000+rng.IntN(40<<10))
		for j := range frame {
			frame[j] = byte(rng.Uint32())
		}
		ids = append(ids, cdc.ID{byte(i), byte(i >> 8), 9})
		want = append(want, uint32(len(frame)))
		all = append(all, frame...)
		require.NoError(t, b.Put(ids[i], frame))
	}
	require.NoError(t, b.Flush())
	total := int64(len(all))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	for _, tc := range []struct {
		name    string
		skip, n int64
	}{
		{"all", 0, total},
		{"a middle range", 777, total / 2},
		{"one byte", total / 3, 1},
		{"the tail", total - 5000, 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					got <- nil
					return
				}
				defer c.Close()
				b, _ := io.ReadAll(c)
				got <- b
			}()
			c, err := ln.Accept()
			require.NoError(t, err)
			sw := newSockWriter(c)
			require.NotNil(t, sw)
			run, err := s.LocateFrames(context.Background(), ids, want)
			require.NoError(t, err)
			defer run.Close()
			k, err := run.Send(sw, tc.skip, tc.n)
			require.NoError(t, err)
			require.Equal(t, tc.n, k)
			c.Close()
			require.Equal(t, all[tc.skip:tc.skip+tc.n], <-got)
		})
	}
}
