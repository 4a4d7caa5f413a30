//go:build !linux

package kv

// dropPages is a no-op where MADV_DONTNEED on shared file mappings is not
// known to keep the data.
func dropPages(lo, hi uintptr) {}
