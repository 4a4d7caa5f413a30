package nixtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// NAR is a real NAR made by `nix-store --dump`, with its sha256.
type NAR struct {
	Name  string
	Path  string // what was dumped
	Bytes []byte
	Hash  [32]byte
}

// MakeNAR dumps path as a NAR.
func MakeNAR(tb testing.TB, name, path string) NAR {
	tb.Helper()
	b := DumpNAR(tb, path)
	return NAR{Name: name, Path: path, Bytes: b, Hash: sha256.Sum256(b)}
}

// GoRoot is the Go installation the tests run with, a ready source of real
// trees: source files, binaries, and thousands of entries.
func GoRoot(tb testing.TB) string {
	tb.Helper()
	root := runtime.GOROOT()
	if root == "" {
		root = "/usr/local/go"
	}
	_, err := os.Stat(filepath.Join(root, "src"))
	require.NoError(tb, err, "a Go installation with sources is needed for fixture NARs")
	return root
}

// SampleNARs returns a varied set of small real NARs: every NAR feature, a
// source tree with hundreds of files, a single binary as the root, and a
// symlink as the root.
func SampleNARs(tb testing.TB) []NAR {
	tb.Helper()
	dir := tb.TempDir()
	link := filepath.Join(dir, "root-link")
	require.NoError(tb, os.Symlink("/nix/store/00000000000000000000000000000000-target", link))
	goroot := GoRoot(tb)
	return []NAR{
		MakeNAR(tb, "sample", SampleTree(tb, dir)),
		MakeNAR(tb, "go-src-net-http", filepath.Join(goroot, "src", "net", "http")),
		MakeNAR(tb, "gofmt-binary", filepath.Join(goroot, "bin", "gofmt")),
		MakeNAR(tb, "symlink-root", link),
	}
}

// ReleasePair returns two NARs of one package in two releases: the same
// tree, with its binary relinked (a 4-byte word in every 64 changed, as
// moved addresses change code) and a line of its text changed. Content-
// defined chunking finds almost nothing in common; a delta, almost all.
func ReleasePair(tb testing.TB) (old, next NAR) {
	tb.Helper()
	bin, err := os.ReadFile(filepath.Join(GoRoot(tb), "bin", "gofmt"))
	require.NoError(tb, err)
	text, err := os.ReadFile(filepath.Join(GoRoot(tb), "src", "net", "http", "server.go"))
	require.NoError(tb, err)
	relinked := bytes.Clone(bin)
	for i := 4096; i+4 <= len(relinked); i += 64 {
		binary.LittleEndian.PutUint32(relinked[i:], binary.LittleEndian.Uint32(relinked[i:])+0x40)
	}
	write := func(name string, bin, text []byte) NAR {
		dir := filepath.Join(tb.TempDir(), name)
		require.NoError(tb, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
		require.NoError(tb, os.WriteFile(filepath.Join(dir, "bin", "tool"), bin, 0o755))
		require.NoError(tb, os.WriteFile(filepath.Join(dir, "README"), text, 0o644))
		return MakeNAR(tb, name, dir)
	}
	return write("tool-1.0", bin, text), write("tool-1.1", relinked, bytes.Replace(text, []byte("package http"), []byte("package http // 1.1"), 1))
}
