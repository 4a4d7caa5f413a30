//go:build !unix

package httpd

import "syscall"

// peerGone cannot tell here; the request then ends with the wait.
func peerGone(syscall.RawConn) bool { return false }
