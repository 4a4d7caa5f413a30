package kv_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
	"cairn/internal/nixtest"
)

func TestLocateAndSendFrames(t *testing.T) {
	var frames [][]byte
	for i := range 100 {
		frames = append(frames, bytes.Repeat([]byte{byte(i)}, 20<<10+i*37))
	}
	s, ids, want, all := nixtest.StoredFrames(t, frames)
	ctx := context.Background()
	total := int64(len(all))
	wrong := append([]uint32(nil), want...)
	wrong[60]++
	missing := append([]cdc.ID(nil), ids...)
	missing[30] = cdc.ID{0xff}
	stopAt := func(i int) int64 { return int64(bytes.Index(all, bytes.Repeat([]byte{byte(i)}, 20<<10))) }

	for _, tc := range []struct {
		name    string
		ids     []cdc.ID
		want    []uint32
		skip, n int64
		sent    int64 // bytes written: n unless a frame stops it
	}{
		{"all", ids, want, 0, total, total},
		{"inside one frame", ids, want, 100, 5000, 5000},
		{"across frames", ids, want, 30000, 3 << 20, min(3<<20, total-30000)},
		{"tail", ids, want, total - 10, 10, 10},
		{"stops at a frame of another length", ids, wrong, 0, total, stopAt(60)},
		{"stops at a missing frame", missing, want, 1000, total - 1000, stopAt(30) - 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			run, err := s.LocateFrames(ctx, tc.ids, tc.want)
			require.NoError(t, err)
			defer run.Close()
			k, err := run.Send(&buf, tc.skip, tc.n)
			require.NoError(t, err)
			require.Equal(t, tc.sent, k)
			require.Equal(t, all[tc.skip:tc.skip+tc.sent], buf.Bytes())
		})
	}

	t.Run("socket", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		got := make(chan []byte)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				close(got)
				return
			}
			b, _ := io.ReadAll(c)
			c.Close()
			got <- b
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		run, err := s.LocateFrames(ctx, ids, want)
		require.NoError(t, err)
		defer run.Close()
		k, err := run.Send(c, 12345, total-12345)
		require.NoError(t, err)
		require.Equal(t, total-12345, k)
		c.Close()
		require.Equal(t, all[12345:], <-got)
	})
}

// TestSendStopsWhereGCTruncatedAFile: the value-log GC truncates a file
// before deleting it, even while a located run holds it open. Send then
// stops short without an error, and what it sent is right.
func TestSendStopsWhereGCTruncatedAFile(t *testing.T) {
	var frames [][]byte
	for i := range 200 {
		frames = append(frames, bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 8<<10))
	}
	s, ids, _, _ := nixtest.StoredFrames(t, frames)
	var gone, kept []cdc.ID
	var want []uint32
	var keptBytes []byte
	for i, id := range ids {
		if i%4 != 0 {
			gone = append(gone, id)
			continue
		}
		kept = append(kept, id)
		want = append(want, uint32(len(frames[i])))
		keptBytes = append(keptBytes, frames[i]...)
	}
	require.NoError(t, s.Delete(gone))
	run, err := s.LocateFrames(context.Background(), kept, want)
	require.NoError(t, err)
	defer run.Close()
	require.Equal(t, len(kept), run.Len())
	rewrote, err := s.Reclaim(context.Background(), 0.1)
	require.NoError(t, err)
	require.Positive(t, rewrote)

	var buf bytes.Buffer
	k, err := run.Send(&buf, 0, int64(len(keptBytes)))
	require.NoError(t, err)
	require.Less(t, k, int64(len(keptBytes)), "a rewritten file was truncated under the run")
	require.Equal(t, keptBytes[:k], buf.Bytes())
}
