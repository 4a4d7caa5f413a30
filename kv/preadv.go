//go:build linux || darwin

package kv

import "golang.org/x/sys/unix"

// preadv reads into iov from fd at off with one system call.
func preadv(fd int, iov [][]byte, off int64) (int, error) { return unix.Preadv(fd, iov, off) }
