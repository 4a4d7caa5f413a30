package seed

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS flushes the file system holding f to its disk.
func syncFS(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
