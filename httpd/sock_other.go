//go:build !linux

package httpd

import (
	"io"
	"net"
	"time"
)

// sockWriter is never made where splice is not available.
type sockWriter struct{ io.Writer }

func newSockWriter(net.Conn, time.Duration) *sockWriter { return nil }
