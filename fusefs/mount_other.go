//go:build !linux

package fusefs

import (
	"fmt"
	"os/exec"
)

// lazyUnmount detaches a busy mount with a forced umount.
func lazyUnmount(dir string) error {
	if out, err := exec.Command("umount", "-f", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("umount -f %s: %w: %s", dir, err, out)
	}
	return nil
}

// setReadAhead does nothing: the read-ahead knob is Linux's.
func setReadAhead(string, int64) error { return nil }
