package fusefs

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// lazyUnmount detaches a busy mount: directly as root, else through
// fusermount3 -z.
func lazyUnmount(dir string) error {
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err == nil {
		return nil
	}
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return err
		}
	}
	if out, err := exec.Command(bin, "-u", "-z", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("%s -u -z %s: %w: %s", bin, dir, err, out)
	}
	return nil
}

// setReadAhead sets the kernel's read-ahead for the mount at dir through
// /sys/class/bdi, which only root may write.
func setReadAhead(dir string, bytes int64) error {
	if bytes < 0 {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return err
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(bdi, []byte(strconv.FormatInt(bytes>>10, 10)), 0o644)
}
