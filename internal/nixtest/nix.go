// Package nixtest builds test fixtures with the real Nix client: NARs, store
// paths in throwaway stores, and signed file:// binary caches.
package nixtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Config is the NIX_CONFIG every fixture command runs with: no daemon, no
// build users, no substituters.
const Config = "experimental-features = nix-command\nbuild-users-group =\nsubstituters ="

// RequireNix fails the test with a clear message when the Nix client is missing.
func RequireNix(tb testing.TB) {
	tb.Helper()
	for _, bin := range []string{"nix", "nix-store"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Fatalf("%s not found on PATH: this test needs the real Nix client; run `make deps` (apt-get install nix-bin)", bin)
		}
	}
}

// Env returns the environment for running nix commands in fixtures.
func Env(tb testing.TB) []string {
	tb.Helper()
	env := os.Environ()
	out := env[:0:0]
	for _, e := range env {
		if strings.HasPrefix(e, "NIX_CONFIG=") || strings.HasPrefix(e, "XDG_CACHE_HOME=") {
			continue
		}
		out = append(out, e)
	}
	return append(out, "NIX_CONFIG="+Config, "XDG_CACHE_HOME="+filepath.Join(tb.TempDir(), "xdg-cache"))
}

// Run runs a nix command and returns its stdout; it fails the test on error.
func Run(tb testing.TB, name string, args ...string) []byte {
	tb.Helper()
	return runStdin(tb, nil, name, args...)
}

// DumpNAR serialises the directory or file at path as a NAR with
// `nix-store --dump` and returns the bytes.
func DumpNAR(tb testing.TB, path string) []byte {
	tb.Helper()
	return Run(tb, "nix-store", "--dump", path)
}

// SampleTree writes a small tree under dir that exercises every NAR feature:
// regular, empty and executable files, nested and empty directories, and
// relative and absolute symlinks. It returns the tree's root.
func SampleTree(tb testing.TB, dir string) string {
	tb.Helper()
	root := filepath.Join(dir, "sample")
	files := map[string]string{
		"a":                                      "hello\n",
		"emptyfile":                              "",
		"sub/run":                                "#!/bin/sh\necho run\n",
		"sub/deep/x.txt":                         strings.Repeat("deep content\n", 1000),
		"name with \"quotes\" and \\ and \t tab": "odd\n",
		"ünïcode":                                "u\n",
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		require.NoError(tb, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(tb, os.WriteFile(full, []byte(c), 0o644))
	}
	require.NoError(tb, os.Chmod(filepath.Join(root, "sub/run"), 0o755))
	require.NoError(tb, os.MkdirAll(filepath.Join(root, "emptydir"), 0o755))
	require.NoError(tb, os.Symlink("a", filepath.Join(root, "rel-link")))
	require.NoError(tb, os.Symlink("/nix/store/00000000000000000000000000000000-x/bin/y", filepath.Join(root, "abs-link")))
	return root
}

// runStdin runs a nix command with stdin and returns its stdout; it fails
// the test on error.
func runStdin(tb testing.TB, stdin []byte, name string, args ...string) []byte {
	tb.Helper()
	RequireNix(tb)
	cmd := exec.Command(name, args...)
	cmd.Env = Env(tb)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(tb, cmd.Run(), "%s %s: %s", name, strings.Join(args, " "), stderr.String())
	return stdout.Bytes()
}

// RequireFUSE fails the test, with what to install, when this machine
// cannot make a real FUSE mount and unmount it with fusermount3.
func RequireFUSE(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		tb.Fatalf("this test needs a real FUSE mount: %v; run `make deps` (apt-get install fuse3) and make /dev/fuse available", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		tb.Fatalf("this test needs fusermount3 to mount and unmount: run `make deps` (apt-get install fuse3)")
	}
}
