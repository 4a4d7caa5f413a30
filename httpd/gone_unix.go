//go:build unix

package httpd

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerGone reports whether the other end of raw hung up: a peek that
// neither blocks nor takes a byte finds the end of the stream, or a reset.
// Bytes waiting (a pipelined request) say nothing, and count as there.
func peerGone(raw syscall.RawConn) bool {
	gone := false
	_ = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		gone = (n == 0 && err == nil) || errors.Is(err, unix.ECONNRESET)
	})
	return gone
}
