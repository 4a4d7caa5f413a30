package narinfo_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
)

// mustParse parses a narinfo that must be valid.
func mustParse(t *testing.T, s string) *narinfo.Info {
	t.Helper()
	i, err := narinfo.Parse([]byte(s))
	require.NoError(t, err)
	return i
}

// otherKey returns a fresh key pair named name.
func otherKey(t *testing.T, name string) (signature.SecretKey, signature.PublicKey) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, nil)
	require.NoError(t, err)
	return sk, pk
}

func TestFingerprint(t *testing.T) {
	const want = "1;/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin;" +
		"sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;" +
		"/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0," +
		"/nix/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115," +
		"/nix/store/j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12," +
		"/nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n"
	i := mustParse(t, nixosNarinfo)
	require.Equal(t, want, i.Fingerprint())
	refs := slices.Clone(i.References)
	slices.Reverse(i.References)
	i.References = append(i.References, refs[1]) // Nix holds references in a set
	require.Equal(t, want, i.Fingerprint())
	require.Equal(t, "1;"+i.StorePath+";"+narinfo.FormatNarHash(i.NarHash)+";196040;", (&narinfo.Info{StorePath: i.StorePath, NarHash: i.NarHash, NarSize: 196040}).Fingerprint())
}

func TestVerify(t *testing.T) {
	nixos, err := narinfo.ParsePublicKeys([]string{nixosKey})
	require.NoError(t, err)
	_, sameName := otherKey(t, "cache.nixos.org-1")
	_, other := otherKey(t, "other-1")
	for _, tc := range []struct {
		name   string
		keys   []signature.PublicKey
		change func(*narinfo.Info)
		ok     bool
	}{
		{"upstream key", nixos, func(*narinfo.Info) {}, true},
		{"among other keys", []signature.PublicKey{other, sameName, nixos[0]}, func(*narinfo.Info) {}, true},
		{"references reordered", nixos, func(i *narinfo.Info) { slices.Reverse(i.References) }, true},
		{"unsigned fields changed", nixos, func(i *narinfo.Info) {
			i.URL, i.Compression, i.FileHash, i.FileSize = "nar/x.nar.zst", "zstd", "", 0
		}, true},
		{"garbage sig first", nixos, func(i *narinfo.Info) { i.Sigs = append([]string{"cache.nixos.org-1:AAAA", "x"}, i.Sigs...) }, true},
		{"no keys", nil, func(*narinfo.Info) {}, false},
		{"zero key", []signature.PublicKey{{Name: "cache.nixos.org-1"}}, func(*narinfo.Info) {}, false},
		{"same name, other key", []signature.PublicKey{sameName}, func(*narinfo.Info) {}, false},
		{"other key", []signature.PublicKey{other}, func(*narinfo.Info) {}, false},
		{"NarSize changed", nixos, func(i *narinfo.Info) { i.NarSize++ }, false},
		{"NarHash changed", nixos, func(i *narinfo.Info) { i.NarHash[0] ^= 1 }, false},
		{"StorePath changed", nixos, func(i *narinfo.Info) { i.StorePath = strings.Replace(i.StorePath, "curl", "curk", 1) }, false},
		{"reference changed", nixos, func(i *narinfo.Info) { i.References[1] = strings.Replace(i.References[1], "glibc", "glibd", 1) }, false},
		{"reference dropped", nixos, func(i *narinfo.Info) { i.References = i.References[1:] }, false},
		{"no sigs", nixos, func(i *narinfo.Info) { i.Sigs = nil }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := mustParse(t, nixosNarinfo)
			tc.change(i)
			name, ok := i.Verify(tc.keys)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, "cache.nixos.org-1", name)
			} else {
				require.Empty(t, name)
			}
		})
	}
}

func TestSign(t *testing.T) {
	nixos, err := narinfo.ParsePublicKeys([]string{nixosKey})
	require.NoError(t, err)
	sk, pk := otherKey(t, "cairn-1")
	i := mustParse(t, nixosNarinfo)
	upstream := i.Sigs[0]

	i.Sign(sk)
	require.Len(t, i.Sigs, 2)
	require.Equal(t, upstream, i.Sigs[0], "upstream signature kept first")
	require.True(t, strings.HasPrefix(i.Sigs[1], "cairn-1:"))
	name, ok := i.Verify([]signature.PublicKey{pk})
	require.True(t, ok)
	require.Equal(t, "cairn-1", name)
	name, ok = i.Verify(nixos)
	require.True(t, ok)
	require.Equal(t, "cache.nixos.org-1", name)

	signed := slices.Clone(i.Sigs)
	i.Sign(sk)
	require.Equal(t, signed, i.Sigs, "idempotent")

	i.Sigs = append([]string{"cairn-1:AAAA"}, i.Sigs...)
	i.NarSize++ // stale sig by the same key name is replaced
	i.Sign(sk)
	require.Len(t, i.Sigs, 2)
	_, ok = i.Verify([]signature.PublicKey{pk})
	require.True(t, ok)
	_, ok = i.Verify(nixos)
	require.False(t, ok)
}

func TestParsePublicKeys(t *testing.T) {
	_, pk := otherKey(t, "k-1")
	for _, tc := range []struct {
		name string
		in   []string
		bad  string
	}{
		{"none", nil, ""},
		{"two", []string{nixosKey, pk.String()}, ""},
		{"no name", []string{nixosKey, ":" + strings.SplitN(nixosKey, ":", 2)[1]}, ":6NCH"},
		{"no colon", []string{"abc"}, "abc"},
		{"bad base64", []string{"k:@@@@"}, "k:@@@@"},
		{"short", []string{"k:AAAA"}, "k:AAAA"},
		{"secret key", []string{"k:" + strings.Repeat("A", 86) + "=="}, "k:AAA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := narinfo.ParsePublicKeys(tc.in)
			if tc.bad == "" {
				require.NoError(t, err)
				require.Len(t, keys, len(tc.in))
				for j, k := range keys {
					require.Equal(t, tc.in[j], k.String())
				}
				return
			}
			require.ErrorIs(t, err, narinfo.ErrBad)
			require.Contains(t, err.Error(), tc.bad)
		})
	}
}
