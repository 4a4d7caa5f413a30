package kv

import "syscall"

// dropPages takes the pages spanning [lo, hi) out of the process's page
// tables with madvise(MADV_DONTNEED), so they stop counting in its RSS. The
// range must lie in a shared file mapping that stays mapped for the call:
// the pages stay in the page cache, dirty ones are written back as usual,
// and the next access maps them again. On anonymous memory the call would
// zero the pages, so callers make sure of where the range lives first.
func dropPages(lo, hi uintptr) {
	if hi <= lo {
		return
	}
	lo &^= pageSize - 1
	hi = (hi + pageSize - 1) &^ (pageSize - 1)
	// A failure leaves the pages mapped: it costs memory, never data.
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, lo, hi-lo, syscall.MADV_DONTNEED)
}
