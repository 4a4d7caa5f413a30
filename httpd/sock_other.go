//go:build !linux

package httpd

import (
	"io"
	"net"
)

// sockWriter is never made where splice is not available.
type sockWriter struct{ io.Writer }

func newSockWriter(net.Conn) *sockWriter { return nil }

func (*sockWriter) done() {}
