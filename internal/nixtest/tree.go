package nixtest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// RequireSameTree checks that got (in a mount) holds what want (a restored
// NAR) holds: `diff -r` finds no difference in contents or symlink
// targets, and every entry has the same type, size and executable bit.
// The mount's modes are the store's: 0444 or 0555, directories 0555, and
// every mtime is 1.
func RequireSameTree(t testing.TB, want, got string) {
	t.Helper()
	out, err := exec.Command("diff", "-r", "--no-dereference", want, got).CombinedOutput()
	require.NoError(t, err, "diff -r %s %s:\n%s", want, got, out)
	require.Empty(t, string(out))
	require.Equal(t, describeTree(t, want, false), describeTree(t, got, true))
}

// describeTree lists a tree's entries with their type, size, executable
// bit and symlink target, one line each.
func describeTree(t testing.TB, root string, mounted bool) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		mode := fi.Mode()
		line := rel + " "
		switch {
		case mode.IsDir():
			line += "dir"
			if mounted {
				require.Equal(t, os.FileMode(0o555), mode.Perm(), "%s", p)
			}
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += "symlink -> " + target
		case mode.IsRegular():
			exec := mode&0o100 != 0
			line += "file " + strconv.FormatInt(fi.Size(), 10) + " exec=" + strconv.FormatBool(exec)
			if mounted {
				want := os.FileMode(0o444)
				if exec {
					want = 0o555
				}
				require.Equal(t, want, mode.Perm(), "%s", p)
			}
		default:
			line += "other " + mode.String()
		}
		if mounted {
			require.Equal(t, int64(1), fi.ModTime().Unix(), "mtime of %s", p)
		}
		b.WriteString(line + "\n")
		return nil
	}))
	return b.String()
}
