package httpd

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// watchGone cancels once the client hangs up or resets, and not while it
// is there, even with a pipelined request waiting unread.
func TestWatchGone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client func(c *net.TCPConn)
		gone   bool
	}{
		{"still there", func(*net.TCPConn) {}, false},
		{"pipelined request", func(c *net.TCPConn) { _, _ = c.Write([]byte("GET /nix-cache-info HTTP/1.1\r\n\r\n")) }, false},
		{"hung up", func(c *net.TCPConn) { c.Close() }, true},
		{"reset", func(c *net.TCPConn) { _ = c.SetLinger(0); c.Close() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			defer client.Close()
			server, err := ln.Accept()
			require.NoError(t, err)
			defer server.Close()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stop := watchGone(server, cancel, 10*time.Millisecond)
			tc.client(client.(*net.TCPConn))
			select {
			case <-ctx.Done():
				require.True(t, tc.gone, "cancelled while the client was there")
			case <-time.After(300 * time.Millisecond):
				require.False(t, tc.gone, "not cancelled after the client left")
			}
			stop()
			if !tc.gone {
				require.NoError(t, ctx.Err(), "a stopped watch cancels nothing")
			}
		})
	}
}
