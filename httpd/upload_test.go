package httpd

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAbortableAfterFinish: an Abort that comes after the handler is done
// with the body leaves the connection alone.
func TestAbortableAfterFinish(t *testing.T) {
	for _, tc := range []struct {
		name          string
		abortFirst    bool
		wantAborted   bool
		wantReadFails bool
	}{
		{"abort, then finish", true, true, true},
		{"finish, then abort", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer server.Close()
			defer client.Close()
			a := &abortable{conn: server}
			var aborted bool
			if tc.abortFirst {
				a.Abort()
				aborted = a.finish()
			} else {
				aborted = a.finish()
				a.Abort()
			}
			require.Equal(t, tc.wantAborted, aborted)
			go client.Write([]byte("next request"))
			done := make(chan error, 1)
			go func() {
				_, err := server.Read(make([]byte, 16))
				done <- err
			}()
			select {
			case err := <-done:
				require.Equal(t, tc.wantReadFails, err != nil, "read: %v", err)
			case <-time.After(5 * time.Second):
				t.Fatal("read neither failed nor returned")
			}
		})
	}
}
