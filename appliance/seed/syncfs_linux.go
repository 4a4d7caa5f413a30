package seed

import (
	"os"

	"golang.org/x/sys/unix"
)

// haveSyncfs: one syncfs at the end flushes every file an export wrote.
const haveSyncfs = true

// syncFS flushes the file system holding f to its disk.
func syncFS(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
