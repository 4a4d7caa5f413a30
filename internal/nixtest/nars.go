package nixtest

import (
	"crypto/sha256"
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
