package nixtest

import (
	"os"
	"path/filepath"
	"strings"
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
