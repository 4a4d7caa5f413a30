//go:build !linux && !darwin

package kv

import "golang.org/x/sys/unix"

// preadv is not available here: reads go through Badger.
func preadv(int, [][]byte, int64) (int, error) { return 0, unix.ENOSYS }
