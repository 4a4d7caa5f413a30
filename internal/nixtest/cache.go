package nixtest

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// AddToStore adds the file, symlink or directory at path to the throwaway
// store rooted at storeDir with `nix-store --store storeDir --add` and returns
// its store path (under /nix/store, not under storeDir).
func AddToStore(tb testing.TB, storeDir, path string) string {
	tb.Helper()
	out := strings.TrimSpace(string(Run(tb, "nix-store", "--store", storeDir, "--add", path)))
	require.True(tb, strings.HasPrefix(out, "/nix/store/"), "nix-store --add printed %q", out)
	return out
}

// CopyToFileCache copies store paths from the throwaway store at storeDir to a
// file:// binary cache at cacheDir with `nix copy`. query is the cache URL's
// query string without the "?", e.g. "compression=none&write-nar-listing=true".
func CopyToFileCache(tb testing.TB, storeDir, cacheDir, query string, paths ...string) {
	tb.Helper()
	url := "file://" + cacheDir
	if query != "" {
		url += "?" + query
	}
	args := append([]string{"copy", "--store", storeDir, "--to", url}, paths...)
	Run(tb, "nix", args...)
}

// HashPart returns the 32-character hash part of a store path's basename.
func HashPart(tb testing.TB, storePath string) string {
	tb.Helper()
	base := filepath.Base(storePath)
	require.GreaterOrEqual(tb, len(base), 33, "not a store path: %q", storePath)
	return base[:32]
}

// NarInfoField returns the value of the first `key: value` line of the
// narinfo of storePath in the file:// cache at cacheDir.
func NarInfoField(tb testing.TB, cacheDir, storePath, key string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(cacheDir, HashPart(tb, storePath)+".narinfo"))
	require.NoError(tb, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return v
		}
	}
	tb.Fatalf("narinfo of %s has no %s field", storePath, key)
	return ""
}

// Published is one store path in a file:// binary cache made by Publish.
type Published struct {
	StorePath string
	Cache     string // the cache directory
	Listing   []byte // the .ls file Nix wrote
	Body      []byte // the file the narinfo's URL names
	NarHash   string // "sha256:<nix32>"
}

// Publish adds the tree at path to a throwaway store under dir and copies
// it to the file:// cache dir/cache with `nix copy`, with NAR listings and
// the given compression (none, xz, zstd, bzip2).
func Publish(tb testing.TB, dir, path, compression string) Published {
	tb.Helper()
	store, cache := filepath.Join(dir, "store"), filepath.Join(dir, "cache")
	sp := AddToStore(tb, store, path)
	CopyToFileCache(tb, store, cache, "compression="+compression+"&write-nar-listing=true", sp)
	ls, err := os.ReadFile(filepath.Join(cache, HashPart(tb, sp)+".ls"))
	require.NoError(tb, err)
	body, err := os.ReadFile(filepath.Join(cache, NarInfoField(tb, cache, sp, "URL")))
	require.NoError(tb, err)
	return Published{StorePath: sp, Cache: cache, Listing: ls, Body: body, NarHash: NarInfoField(tb, cache, sp, "NarHash")}
}

// DiskUsage is the space the files below dir take on disk, as du counts it.
func DiskUsage(tb testing.TB, dir string) int64 {
	tb.Helper()
	var total int64
	require.NoError(tb, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		total += st.Blocks * 512
		return nil
	}))
	return total
}
