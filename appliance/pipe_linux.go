package appliance

import (
	"os"

	"golang.org/x/sys/unix"
)

// xzPipe returns the pipe xz writes the NAR into. It is a blocking pipe:
// reads park one thread in the kernel instead of cycling through the
// netpoller every time xz falls behind. 1 MiB instead of 64 KiB lets both
// sides run in long stretches.
func xzPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	_, _ = unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, 1<<20)
	return os.NewFile(uintptr(fds[0]), "xz-stdout"), os.NewFile(uintptr(fds[1]), "xz-stdout-w"), nil
}
