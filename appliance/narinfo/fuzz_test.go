package narinfo_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(nixNarinfo))
	f.Add([]byte(nixosNarinfo))
	f.Add([]byte(strings.ReplaceAll(nixosNarinfo, "\n", "\r\n")))
	f.Add(lines(spLine, urlLn, "NarHash: "+topSRI, nsLine, "Deriver: unknown-deriver", "References: "))
	for _, tc := range badCases() {
		if len(tc.in) <= narinfo.MaxSize {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		i, err := narinfo.Parse(b)
		if err != nil {
			require.ErrorIs(t, err, narinfo.ErrBad)
			require.NotContains(t, err.Error(), "\n")
			return
		}
		_ = i.Fingerprint()
		_, _ = i.Verify(nil)
		m := i.Marshal()
		// Marshal may add defaults (Compression, References) and widen an SRI
		// NarHash, so a narinfo right at MaxSize can come out slightly larger.
		require.LessOrEqual(t, len(m), len(b)+64)
		if len(m) > narinfo.MaxSize {
			return
		}
		again, err := narinfo.Parse(m)
		require.NoError(t, err, "%q", m)
		want := *i
		if want.Compression == "" {
			want.Compression = "bzip2" // what an absent field meant
		}
		require.Equal(t, want, *again)
		require.Equal(t, m, again.Marshal())
	})
}
