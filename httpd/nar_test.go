package httpd

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBodyCutsAStalledClient: a streamed body whose client stops reading
// fails its write once stall passes with no byte moved, and a client that
// keeps reading, however slowly, is served to the end.
func TestBodyCutsAStalledClient(t *testing.T) {
	for _, tc := range []struct {
		name    string
		readGap time.Duration // between the client's 4 KiB reads; 0: never reads
		wantErr bool
	}{
		{"stalled", 0, true},
		{"slow", 10 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := net.Pipe() // unbuffered: a write waits for a read
			defer server.Close()
			defer client.Close()
			if tc.readGap > 0 {
				go func() {
					buf := make([]byte, 4<<10)
					for {
						time.Sleep(tc.readGap)
						if _, err := client.Read(buf); err != nil {
							return
						}
					}
				}()
			}
			const size = 512 << 10 // a 64 KiB piece moves in 160 ms, the whole in 1.3 s
			b := &body{r: strings.NewReader(strings.Repeat("x", size)), cancel: func() {}, conn: server, stall: time.Second}
			require.NoError(t, server.SetWriteDeadline(time.Now().Add(b.stall))) // as fasthttp does
			start := time.Now()
			n, err := b.WriteTo(server)
			if tc.wantErr {
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				require.Less(t, time.Since(start), 5*time.Second)
				return
			}
			require.NoError(t, err)
			require.EqualValues(t, size, n)
			require.Greater(t, time.Since(start), b.stall, "the slow client outlasted one stall period")
		})
	}
}
