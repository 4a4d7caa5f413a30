package narinfo_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
	"cairn/internal/nixtest"
)

// closureExpr makes a text store path "top" that references two others.
const closureExpr = `let a = builtins.toFile "a" "aaa"; b = builtins.toFile "b" "bbb"; in builtins.toFile "top" "${b} ${a}"`

// nix runs the real nix client with stdin and returns its stdout; the error carries stderr.
func nix(t *testing.T, stdin []byte, args ...string) (string, error) {
	t.Helper()
	nixtest.RequireNix(t)
	cmd := exec.Command("nix", args...)
	cmd.Env = nixtest.Env(t)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("nix %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// nixPublicKey returns the public key Nix derives from the secret key file at path.
func nixPublicKey(t *testing.T, path string) string {
	t.Helper()
	sk, err := os.ReadFile(path)
	require.NoError(t, err)
	pub, err := nix(t, sk, "key", "convert-secret-to-public")
	require.NoError(t, err)
	return strings.TrimSpace(pub)
}

// nixCache is a file:// binary cache that real Nix wrote.
type nixCache struct {
	dir   string   // the cache directory
	paths []string // the top store path, then its references
}

// publish builds closureExpr in a throwaway store and copies it with `nix copy`
// to a file:// cache, signed with the Nix secret key file skPath.
func publish(t *testing.T, skPath string) nixCache {
	t.Helper()
	dir := t.TempDir()
	store, cache := filepath.Join(dir, "store"), filepath.Join(dir, "cache")
	top := string(nixtest.Run(t, "nix", "eval", "--store", store, "--raw", "--expr", closureExpr))
	refs := strings.Fields(string(nixtest.Run(t, "nix-store", "--store", store, "--query", "--references", top)))
	require.Len(t, refs, 2)
	nixtest.CopyToFileCache(t, store, cache, "compression=xz&secret-key="+skPath, top)
	return nixCache{dir: cache, paths: append([]string{top}, refs...)}
}

// read parses the narinfo of storePath and returns it with the file's bytes.
func (c nixCache) read(t *testing.T, storePath string) (*narinfo.Info, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(c.dir, nixtest.HashPart(t, storePath)+".narinfo"))
	require.NoError(t, err)
	i, err := narinfo.Parse(raw)
	require.NoError(t, err)
	return i, raw
}

// write replaces the narinfo of i.StorePath.
func (c nixCache) write(t *testing.T, i *narinfo.Info) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(c.dir, i.Hash()+".narinfo"), i.Marshal(), 0o644))
}

// copyFrom runs `nix copy --from` the cache into a fresh store with signature
// checks on, trusting only trusted.
func (c nixCache) copyFrom(t *testing.T, trusted signature.PublicKey) error {
	t.Helper()
	_, err := nix(t, nil, "copy", "--from", "file://"+c.dir, "--to", filepath.Join(t.TempDir(), "store"),
		"--option", "trusted-public-keys", trusted.String(), c.paths[0])
	return err
}

// flipHash changes the first hash character of a store path basename.
func flipHash(base string) string {
	if base[0] == '0' {
		return "1" + base[1:]
	}
	return "0" + base[1:]
}

func TestNixNarinfo(t *testing.T) {
	skPath := filepath.Join(t.TempDir(), "sk")
	require.NoError(t, os.WriteFile(skPath, nixtest.Run(t, "nix", "key", "generate-secret", "--key-name", "test-1"), 0o600))
	pub := nixPublicKey(t, skPath)
	keys, err := narinfo.ParsePublicKeys([]string{pub})
	require.NoError(t, err)

	sk, created, err := narinfo.LoadOrCreateKey(skPath, "unused")
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, pub, narinfo.PublicKey(sk).String(), "a key from nix key generate-secret loads")

	c := publish(t, skPath)
	for _, p := range c.paths {
		i, raw := c.read(t, p)
		require.Equal(t, p, i.StorePath)
		require.Equal(t, "xz", i.Compression)
		require.Equal(t, string(raw), string(i.Marshal()), "Marshal writes what Nix writes")
		name, ok := i.Verify(keys)
		require.True(t, ok, p)
		require.Equal(t, "test-1", name)
	}

	_, sameName := otherKey(t, "test-1")
	for _, tc := range []struct {
		name   string
		keys   []signature.PublicKey
		change func(*narinfo.Info)
		ok     bool
	}{
		{"as written", keys, func(*narinfo.Info) {}, true},
		{"references reversed", keys, func(i *narinfo.Info) { slices.Reverse(i.References) }, true},
		{"other key, same name", []signature.PublicKey{sameName}, func(*narinfo.Info) {}, false},
		{"NarSize changed", keys, func(i *narinfo.Info) { i.NarSize++ }, false},
		{"reference changed", keys, func(i *narinfo.Info) { i.References[0] = flipHash(i.References[0]) }, false},
		{"StorePath changed", keys, func(i *narinfo.Info) { i.StorePath += "x" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i, _ := c.read(t, c.paths[0])
			require.Len(t, i.References, 2)
			tc.change(i)
			_, ok := i.Verify(tc.keys)
			require.Equal(t, tc.ok, ok)
		})
	}
}

func TestNixAcceptsSign(t *testing.T) {
	keys := t.TempDir()
	upstream, created, err := narinfo.LoadOrCreateKey(filepath.Join(keys, "upstream.sk"), "upstream-1")
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, narinfo.PublicKey(upstream).String(), nixPublicKey(t, filepath.Join(keys, "upstream.sk")))
	cairn, created, err := narinfo.LoadOrCreateKey(filepath.Join(keys, "cairn", "cairn.sk"), "cairn-1")
	require.NoError(t, err)
	require.True(t, created)

	// Nix signs with a key file LoadOrCreateKey wrote.
	c := publish(t, filepath.Join(keys, "upstream.sk"))
	for _, p := range c.paths {
		i, _ := c.read(t, p)
		name, ok := i.Verify([]signature.PublicKey{narinfo.PublicKey(upstream)})
		require.True(t, ok, p)
		require.Equal(t, "upstream-1", name)
		i.CA = "" // a content-addressed path needs no signature; make Nix check ours
		i.Sign(cairn)
		c.write(t, i)
	}

	_, unrelated := otherKey(t, "cairn-1")
	for _, tc := range []struct {
		name    string
		trusted signature.PublicKey
		ok      bool
	}{
		{"cairn key", narinfo.PublicKey(cairn), true},
		{"upstream key kept", narinfo.PublicKey(upstream), true},
		{"unrelated key", unrelated, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.copyFrom(t, tc.trusted)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, "lacks a valid signature")
			}
		})
	}
}
