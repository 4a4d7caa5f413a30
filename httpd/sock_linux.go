package httpd

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sockWriter writes a response body straight to the client's TCP socket,
// once fasthttp has flushed the header: stored frames then move from the
// page cache to the socket by splice and sendfile, never through this
// process's memory.
type sockWriter struct {
	c     *net.TCPConn
	rc    syscall.RawConn
	stall time.Duration // how long a write may make no progress
}

// newSockWriter returns a sockWriter for c that cuts a write making no
// progress for stall, or nil when c is not a TCP connection.
func newSockWriter(c net.Conn, stall time.Duration) *sockWriter {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &sockWriter{c: tc, rc: rc, stall: stall}
}

// stallDeadline sets the socket's write deadline s.stall from now.
func (s *sockWriter) stallDeadline() {
	_ = s.c.SetWriteDeadline(time.Now().Add(s.stall))
}

// Write writes p to the socket in pieces, extending the stall deadline
// before each.
func (s *sockWriter) Write(p []byte) (int, error) {
	return pieceWriter{w: s.c, before: s.stallDeadline}.Write(p)
}

// ReadFrom sends a file's bytes with sendfile.
func (s *sockWriter) ReadFrom(r io.Reader) (int64, error) {
	s.stallDeadline()
	return s.c.ReadFrom(r)
}

// SpliceFrom moves n bytes from the read end of a pipe to the socket,
// waiting for the socket to drain as a write would, for up to s.stall
// without progress.
func (s *sockWriter) SpliceFrom(pipe int, n int) (int, error) {
	s.stallDeadline()
	done := 0
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		for done < n {
			k, err := unix.Splice(pipe, nil, int(fd), nil, n-done, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case k > 0:
				done += int(k)
				s.stallDeadline() // progress: a slow client is not a stalled one
			case errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.EAGAIN):
				return false // wait until the socket takes more
			case err != nil:
				serr = err
				return true
			default:
				serr = io.ErrUnexpectedEOF
				return true
			}
		}
		return true
	})
	if err == nil {
		err = serr
	}
	return done, err
}
