package kv

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"cairn/cdc"
)

// pipeBytes is the pipe size spliceSpans asks for: frames gather in the
// pipe and go to the socket in runs of up to this many bytes. 1 MiB is the
// most an unprivileged process may ask for (fs.pipe-max-size); past the
// per-user total (fs.pipe-user-pages-soft) the kernel refuses, and the
// pipe keeps its default size.
const pipeBytes = 1 << 20

// spliceSpans sends the spans' parts of bytes [skip, skip+n) to sw through
// a pipe: each frame moves from the page cache into the pipe, and the pipe
// empties into the socket once it is full, so the socket sees large writes
// even though frames are small. It copies instead when no pipe can be
// made.
func spliceSpans(sw cdc.PipeWriter, files map[uint32]*os.File, spans []span, ids []cdc.ID, skip, n int64) (int64, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return copySpans(sw, files, spans, ids, skip, n)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	_, _ = unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, pipeBytes)

	var written int64
	inPipe := 0
	drain := func() error {
		k, err := sw.SpliceFrom(p[0], inPipe)
		written += int64(k)
		inPipe -= k
		return err
	}
	err := eachPart(files, spans, ids, skip, n, func(f *os.File, off, length int64) error {
		for length > 0 {
			k, err := unix.Splice(int(f.Fd()), &off, p[1], nil, int(length), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case k > 0:
				inPipe += int(k)
				length -= k
			case errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.EAGAIN) && inPipe > 0: // the pipe is full
				if err := drain(); err != nil {
					return err
				}
			default:
				// The file ends early (the value-log GC truncates a file
				// before deleting it) or cannot be spliced: the caller
				// goes on from here another way.
				return errStop
			}
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if err == nil && inPipe > 0 {
		err = drain()
	}
	return written, err
}
