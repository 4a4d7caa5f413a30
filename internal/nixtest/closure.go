package nixtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Closure is a set of store paths with references, in a throwaway store.
type Closure struct {
	Store string   // the throwaway store's root
	Paths []string // the root first, then what it references
}

// Root is the closure's top path.
func (c Closure) Root() string { return c.Paths[0] }

// MakeClosure builds, in a throwaway store under dir, a closure of three
// paths: an app that references a lib and a source tree, and a lib that
// references the source tree (GOROOT's net/http, about 2 MB of NAR). tag
// makes the small paths unique to the caller. Every path in the store's
// closure is returned, root first.
func MakeClosure(tb testing.TB, dir, tag string) Closure {
	tb.Helper()
	store := filepath.Join(dir, "store")
	expr := fmt.Sprintf(`let
  src = builtins.path { path = %q; name = "http-src"; };
  lib = builtins.toFile "lib-%[2]s" "lib %[2]s uses ${src}\n";
  app = builtins.toFile "app-%[2]s" "app %[2]s uses ${lib} and ${src}\n";
in [ app lib src ]`, filepath.Join(GoRoot(tb), "src", "net", "http"), tag)
	return Closure{Store: store, Paths: evalPaths(tb, store, expr)}
}

// AddText adds a small text file to the closure's store, referencing refs,
// and returns its store path.
func (c Closure) AddText(tb testing.TB, name, text string, refs ...string) string {
	tb.Helper()
	expr := fmt.Sprintf("%q", text)
	for _, r := range refs {
		expr += fmt.Sprintf(` + " " + builtins.storePath %q`, r)
	}
	return evalPaths(tb, c.Store, fmt.Sprintf("[ (builtins.toFile %q (%s)) ]", name, expr))[0]
}

// evalPaths evaluates a list of store paths into store, which writes them.
func evalPaths(tb testing.TB, store, expr string) []string {
	tb.Helper()
	out := Run(tb, "nix", "eval", "--impure", "--store", store, "--json", "--expr", expr)
	var paths []string
	require.NoError(tb, json.Unmarshal(out, &paths), "nix eval printed %q", out)
	return paths
}

// Key is a Nix signing key pair made for a test.
type Key struct {
	SecretFile string // file with the secret key, for nix copy's secret-key=
	Public     string // NAME:BASE64
}

// NewKey generates a signing key named name under dir.
func NewKey(tb testing.TB, dir, name string) Key {
	tb.Helper()
	sk := filepath.Join(dir, name+".sk")
	secret := Run(tb, "nix", "key", "generate-secret", "--key-name", name)
	require.NoError(tb, os.WriteFile(sk, secret, 0o600))
	pub := strings.TrimSpace(string(runStdin(tb, secret, "nix", "key", "convert-secret-to-public")))
	return Key{SecretFile: sk, Public: pub}
}

// SignedCache copies paths (with their closures) from store into the
// file:// binary cache at cacheDir, signed with key, with NAR listings and
// the given compression (xz, zstd, bzip2, none).
func SignedCache(tb testing.TB, store, cacheDir string, key Key, compression string, paths ...string) {
	tb.Helper()
	CopyToFileCache(tb, store, cacheDir,
		"compression="+compression+"&write-nar-listing=true&secret-key="+key.SecretFile, paths...)
}

// BuildWithLog builds a one-line derivation named name in the closure's
// store, so that the store holds its build log (the line "building name"),
// and returns the derivation and output paths.
func (c Closure) BuildWithLog(tb testing.TB, name string) (drv, out string) {
	tb.Helper()
	expr := filepath.Join(tb.TempDir(), "drv.nix")
	require.NoError(tb, os.WriteFile(expr, []byte(fmt.Sprintf(`derivation {
  name = %q; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo building %s; echo %s > $out" ];
}`, name, name, name)), 0o644))
	drv = strings.TrimSpace(string(Run(tb, "nix-instantiate", "--store", c.Store, expr)))
	// A chroot store builds in a sandbox: lend it the host's shell.
	out = strings.TrimSpace(string(Run(tb, "nix-build", "--store", c.Store, "--no-out-link",
		"--option", "sandbox", "true", "--option", "extra-sandbox-paths", "/bin? /usr? /lib? /lib64?", drv)))
	return drv, out
}

// AddFile adds a file with the given content to the closure's store and
// returns its store path.
func (c Closure) AddFile(tb testing.TB, name string, content []byte) string {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), name)
	require.NoError(tb, os.WriteFile(file, content, 0o644))
	return evalPaths(tb, c.Store, fmt.Sprintf("[ (builtins.path { path = %q; name = %q; }) ]", file, name))[0]
}
