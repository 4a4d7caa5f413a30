package narinfo_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "cairn.sk")

	sk, created, err := narinfo.LoadOrCreateKey(path, "cairn-1")
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "cairn-1", narinfo.PublicKey(sk).Name)
	for p, mode := range map[string]os.FileMode{path: 0o600, dir: 0o700 | os.ModeDir} {
		st, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, mode, st.Mode(), p)
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, sk.String(), string(b), "name:base64 without newline, as nix key generate-secret writes")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temp file left behind")

	again, created, err := narinfo.LoadOrCreateKey(path, "ignored-name")
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, sk, again)
}

func TestLoadOrCreateKeyExisting(t *testing.T) {
	sk, _, err := signature.GenerateKeypair("nix-1", nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		err     string // "" for success
	}{
		{"0600", sk.String(), 0o600, ""},
		{"0400 with newline", sk.String() + "\n", 0o400, ""},
		{"0700", sk.String(), 0o700, ""},
		{"0640", sk.String(), 0o640, "chmod 600"},
		{"0604", sk.String(), 0o604, "chmod 600"},
		{"0644", sk.String(), 0o644, "chmod 600"},
		{"corrupt", "nix-1:AAAA", 0o600, "bad narinfo"},
		{"public key", narinfo.PublicKey(sk).String(), 0o600, "bad narinfo"},
		{"empty", "", 0o600, "bad narinfo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			require.NoError(t, os.Chmod(path, tc.mode))
			got, created, err := narinfo.LoadOrCreateKey(path, "other")
			require.False(t, created)
			if tc.err == "" {
				require.NoError(t, err)
				require.Equal(t, sk, got)
				return
			}
			require.ErrorContains(t, err, tc.err)
			require.ErrorContains(t, err, path)
			require.NotContains(t, err.Error(), strings.SplitN(sk.String(), ":", 2)[1][:8], "secret leaked into the error")
		})
	}
}

func TestLoadOrCreateKeyErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, path, keyName string
	}{
		{"directory", dir, "k-1"},
		{"empty name", filepath.Join(dir, "k1"), ""},
		{"colon in name", filepath.Join(dir, "k2"), "a:b"},
		{"space in name", filepath.Join(dir, "k3"), "a b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, created, err := narinfo.LoadOrCreateKey(tc.path, tc.keyName)
			require.Error(t, err)
			require.False(t, created)
			require.ErrorContains(t, err, tc.path)
		})
	}
}
