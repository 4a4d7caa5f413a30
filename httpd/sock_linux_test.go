package httpd

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"cairn/internal/nixtest"
)

// TestSockWriterSplicesFrames sends stored frames to a real socket through
// a pipe, in runs longer than the pipe holds, and checks every byte.
func TestSockWriterSplicesFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var frames [][]byte
	for range 300 {
		frame := make([]byte, 1000+rng.IntN(40<<10))
		for j := range frame {
			frame[j] = byte(rng.Uint32())
		}
		frames = append(frames, frame)
	}
	s, ids, want, all := nixtest.StoredFrames(t, frames)
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
			sw := newSockWriter(c, DefaultSendStall)
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

// TestSockWriterCutsAStalledClient: a client that stops reading gets its
// response cut once no byte has moved for the stall time.
func TestSockWriterCutsAStalledClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close() // and never read
	c, err := ln.Accept()
	require.NoError(t, err)
	defer c.Close()
	sw := newSockWriter(c, 200*time.Millisecond)

	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	chunk := make([]byte, 64<<10)
	start := time.Now()
	var sent int
	for time.Since(start) < 20*time.Second {
		k, err := unix.Write(p[1], chunk)
		require.NoError(t, err)
		n, err := sw.SpliceFrom(p[0], k)
		sent += n
		if err != nil {
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			break
		}
	}
	require.Less(t, time.Since(start), 10*time.Second, "still sending after %d bytes", sent)
}
