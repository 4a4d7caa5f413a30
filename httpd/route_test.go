package httpd

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	goodHash = "0scvkjs2s6gcy89lqik3nc5b69yv14v5"
	goodNar  = "19xzzqidid24fk557j9zixyrybxlz0lpi5dl0bg4jk78sa882fyd"
)

func TestParseRoute(t *testing.T) {
	for _, tc := range []struct {
		path string
		kind kind
		bad  bool
		zst  bool
	}{
		{"/nix-cache-info", kindCacheInfo, false, false},
		{"/pubkey", kindPubKey, false, false},
		{"/healthz", kindHealth, false, false},
		{"/" + goodHash + ".narinfo", kindNarInfo, false, false},
		{"/" + goodHash + ".ls", kindListing, false, false},
		{"/nar/" + goodNar + ".nar", kindNAR, false, false},
		{"/nar/" + goodNar + ".nar.zst", kindNAR, false, true},
		{"/nar/" + goodNar + ".nar.xz", kindUpload, false, false},
		{"/nar/" + goodNar + ".nar.bz2", kindUpload, false, false},
		{"/nar/" + goodNar + ".nar.br", kindUnknown, false, false},
		{"/realisations/sha256:" + goodNar + "!out.doi", kindRealisation, false, false},
		{"/build-trace-v2/" + goodHash + "-x.drv/out.doi", kindRealisation, false, false},
		{"/realisations/x.doi", 0, true, false},
		{"/log/" + goodHash + "-x", 0, true, false},
		{"/" + goodHash + ".tar", kindUnknown, false, false},
		{"/favicon", kindUnknown, false, false},
		{"/", kindUnknown, false, false},
		{"/log/" + goodHash + "-x.drv", kindLog, false, false},
		{"", 0, true, false},
		{"nix-cache-info", 0, true, false},
		{"/abc.narinfo", 0, true, false},
		{"/" + strings.Repeat("e", 32) + ".narinfo", 0, true, false},
		{"/" + strings.ToUpper(goodHash) + ".narinfo", 0, true, false},
		{"/../etc/passwd", 0, true, false},
		{"/nar/../x", 0, true, false},
		{"/nar//" + goodNar + ".nar", 0, true, false},
		{"/nar/%2e%2e/x.nar", 0, true, false},
		{"/.hidden", 0, true, false},
		{"/a\\b", 0, true, false},
		{"/nar/" + goodNar[:51] + ".nar", 0, true, false},
		{"/nar/" + goodNar + "e.nar", 0, true, false},
		{"/" + strings.Repeat("a", maxPath), 0, true, false},
		{"/" + goodHash + ".narinfo\x00", 0, true, false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r, err := parseRoute([]byte(tc.path))
			if tc.bad {
				require.ErrorIs(t, err, errBadPath)
				require.NotContains(t, err.Error(), "\n")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.kind, r.kind)
			require.Equal(t, tc.zst, r.zst)
		})
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		spec        string
		size        int64
		off, length int64
		ok          bool
	}{
		{"bytes=0-99", 1000, 0, 100, true},
		{"bytes=990-", 1000, 990, 10, true},
		{"bytes=-10", 1000, 990, 10, true},
		{"bytes=-5000", 1000, 0, 1000, true},
		{"bytes=500-5000", 1000, 500, 500, true},
		{"bytes=1000-", 1000, 0, 0, false},
		{"bytes=-0", 1000, 0, 0, false},
		{"bytes=5-1", 1000, 0, -1, true},
		{"bytes=0-1,5-6", 1000, 0, -1, true},
		{"items=0-1", 1000, 0, -1, true},
		{"bytes=x-1", 1000, 0, -1, true},
		{"bytes=", 1000, 0, -1, true},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			off, length, ok := parseRange([]byte(tc.spec), tc.size)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, tc.length, length)
				if length >= 0 {
					require.Equal(t, tc.off, off)
				}
			}
		})
	}
}

// FuzzRoute checks that no path panics the router or the range parser, and
// that every accepted narinfo or NAR route names a well-formed hash.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"/nix-cache-info", "/" + goodHash + ".narinfo", "/nar/" + goodNar + ".nar.zst", "/../x", "/nar/%2e", "/a.b.c"} {
		f.Add([]byte(s), []byte("bytes=0-10"))
	}
	f.Fuzz(func(t *testing.T, path, spec []byte) {
		r, err := parseRoute(path)
		if err != nil {
			require.ErrorIs(t, err, errBadPath)
			return
		}
		switch r.kind {
		case kindNarInfo, kindListing:
			require.True(t, validHash([]byte(r.hash)))
		case kindNAR:
			require.True(t, strings.HasPrefix(string(path), "/nar/"))
		}
		require.NotContains(t, string(path), "..")
		off, length, ok := parseRange(spec, 1000)
		if ok && length >= 0 {
			require.True(t, off >= 0 && off+length <= 1000, "range %d+%d", off, length)
		}
	})
}
