package tokens

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseAndRole(t *testing.T) {
	s, err := Parse([]byte("# tokens\nread  reader-token-1\nwrite writer-token-1 # CI\n\nadmin admin-token-1\nwrite admin-token-1\n"))
	require.NoError(t, err)
	require.Equal(t, 4, s.Len())
	for _, tc := range []struct {
		token string
		role  Role
	}{
		{"reader-token-1", Read},
		{"writer-token-1", Write},
		{"admin-token-1", Admin},
		{"writer-token-2", None},
		{"", None},
		{"writer-token-1 ", None},
	} {
		require.Equal(t, tc.role, s.Role([]byte(tc.token)), tc.token)
	}
	require.Equal(t, None, (*Set)(nil).Role([]byte("x")))
}

func TestParseRejects(t *testing.T) {
	for _, bad := range []string{
		"owner some-long-token\n",
		"write\n",
		"write a b\n",
		"write short\n",
	} {
		_, err := Parse([]byte(bad))
		require.ErrorIs(t, err, ErrBadFile, bad)
		require.NotContains(t, err.Error(), "some-long-token", "errors never show a token")
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(p, []byte("admin the-admin-token\n"), 0o600))
	s, err := Load(p)
	require.NoError(t, err)
	require.Equal(t, Admin, s.Role([]byte("the-admin-token")))
	_, err = Load(p + ".missing")
	require.Error(t, err)
}
