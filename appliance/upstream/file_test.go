package upstream

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fileCache builds a file:// binary cache in a temp dir with a secret beside it.
func fileCache(t *testing.T) string {
	t.Helper()
	top := t.TempDir()
	dir := filepath.Join(top, "cache")
	files := map[string]string{
		"secret":                      "secret",
		"cache/nix-cache-info":        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
		"cache/" + hashA + ".narinfo": "StorePath: a\n",
		"cache/" + hashB + ".narinfo": strings.Repeat("x", MaxNarInfoSize+1),
		"cache/nar/a.nar":             "nar",
		"cache/nar/sub/keep":          "",
	}
	for name, data := range files {
		p := filepath.Join(top, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
	}
	require.NoError(t, os.Symlink("../../secret", filepath.Join(dir, "nar/escape")))
	require.NoError(t, os.Symlink("a.nar", filepath.Join(dir, "nar/inside")))
	return dir
}

func TestFileOpen(t *testing.T) {
	dir := fileCache(t)
	u := newUpstream(t, testConfig("file://"+dir))
	require.Equal(t, "file://"+dir, u.String())
	tests := []struct {
		narURL string
		want   string
		err    error
	}{
		{"nar/a.nar", "nar", nil},
		{"nar/a.nar?x=1", "nar", nil},
		{"nar/./sub/../a.nar", "nar", nil},
		{"nar/inside", "nar", nil},
		{"nar/missing.nar", "", ErrNotFound},
		{"nar/a.nar/x", "", ErrNotFound},
		{"nar/sub", "", ErrNotFound},
		{"../secret", "", ErrBadURL},
		{"nar/../../secret", "", ErrBadURL},
		{dir + "/../secret", "", ErrBadURL},
		{"/etc/passwd", "", ErrBadURL},
		{"", "", ErrBadURL},
		{"nar/escape", "", ErrUnavailable},
		{"file://" + dir + "/nar/a.nar", "", ErrBadURL},
		{"http://example.com/nar/a.nar", "", ErrBadURL},
	}
	for _, tt := range tests {
		t.Run(tt.narURL, func(t *testing.T) {
			rc, err := u.Open(context.Background(), tt.narURL)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			defer rc.Close()
			data, err := io.ReadAll(rc)
			require.NoError(t, err)
			require.Equal(t, tt.want, string(data))
		})
	}
}

func TestFileNarInfo(t *testing.T) {
	dir := fileCache(t)
	tests := []struct {
		name string
		dir  string
		hash string
		want string
		err  error
	}{
		{"present", dir, hashA, "StorePath: a\n", nil},
		{"too large", dir, hashB, "", ErrTooLarge},
		{"absent", dir, "1" + hashA[1:], "", ErrNotFound},
		{"bad hash", dir, "../secret", "", ErrBadHash},
		{"missing directory", filepath.Join(dir, "gone"), hashA, "", ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, testConfig("file://"+tt.dir))
			got, err := u.NarInfo(context.Background(), tt.hash)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, string(got))
		})
	}
}

func TestFileContextCanceled(t *testing.T) {
	u := newUpstream(t, testConfig("file://"+fileCache(t)))
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := u.Open(ctx, "nar/a.nar")
	require.NoError(t, err)
	defer rc.Close()
	cancel()
	_, err = io.ReadAll(rc)
	require.ErrorIs(t, err, context.Canceled)
	_, err = u.NarInfo(ctx, hashA)
	require.ErrorIs(t, err, context.Canceled)
}
