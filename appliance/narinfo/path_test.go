package narinfo_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
)

func TestValidHash(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"3y5kzzppknabn46zidarq9sg7a08ff7a", true},
		{"0123456789abcdfghijklmnpqrsvwxyz", true},
		{"3y5kzzppknabn46zidarq9sg7a08ff7", false},
		{"3y5kzzppknabn46zidarq9sg7a08ff7aa", false},
		{"3y5kzzppknabn46zidarq9sg7a08ff7e", false},
		{"3y5kzzppknabn46zidarq9sg7a08ff7A", false},
		{"", false},
	} {
		require.Equal(t, tc.want, narinfo.ValidHash(tc.in), tc.in)
	}
}

func TestValidStorePath(t *testing.T) {
	const h = "/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-"
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{h + "top", true},
		{h + "a+-._?=Z9", true},
		{h + "x.", true},
		{h + strings.Repeat("a", 211), true},
		{h + strings.Repeat("a", 212), false},
		{h + ".x", false},
		{h, false},
		{h + "a b", false},
		{h + "ü", false},
		{"/nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a", false},
		{"nix/store/3y5kzzppknabn46zidarq9sg7a08ff7a-top", false},
		{"/nix/store//3y5kzzppknabn46zidarq9sg7a08ff7a-top", false},
	} {
		err := narinfo.ValidStorePath(tc.in)
		if tc.ok {
			require.NoError(t, err, tc.in)
		} else {
			require.ErrorIs(t, err, narinfo.ErrBad, tc.in)
		}
	}
}

func TestParseNarHash(t *testing.T) {
	want := sha(t, topHex)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{topNix32, true},
		{"sha256:" + topHex, true},
		{"sha256:" + strings.ToUpper(topHex), true},
		{topSRI, true},
		{topSRI[:len(topSRI)-1], false},
		{"sha256:" + topHex[2:], false},
		{"sha256-" + topHex, false},
		{"sha1:" + topHex, false},
		{topNix32[7:], false},
		{"sha256:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", false}, // 260 bits: non-zero padding
		{"", false},
	} {
		got, err := narinfo.ParseNarHash(tc.in)
		if tc.ok {
			require.NoError(t, err, tc.in)
			require.Equal(t, want, got, tc.in)
		} else {
			require.ErrorIs(t, err, narinfo.ErrBad, tc.in)
		}
	}
	require.Equal(t, topNix32, narinfo.FormatNarHash(want))
}
