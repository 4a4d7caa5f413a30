//go:build !linux

package appliance

import "os"

// xzPipe returns the pipe xz writes the NAR into.
func xzPipe() (r, w *os.File, err error) { return os.Pipe() }
