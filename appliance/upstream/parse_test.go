package upstream

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw  string
		url  string
		prio int
		err  string
	}{
		{"https://cache.nixos.org", "https://cache.nixos.org", 50, ""},
		{"https://cache.nixos.org?priority=40", "https://cache.nixos.org", 40, ""},
		{"https://h/p?a=1&priority=10&b=%2F", "https://h/p?a=1&b=%2F", 10, ""},
		{"https://h/p?priority=0", "https://h/p", 0, ""},
		{"HTTP://h:8080/", "http://h:8080/", 50, ""},
		{"https://u:pw@h/p", "https://u:pw@h/p", 50, ""},
		{"file:///mnt/seed?priority=5", "file:///mnt/seed", 5, ""},
		{"file:///mnt/seed", "file:///mnt/seed", 50, ""},
		{"ftp://h/p", "", 0, "scheme"},
		{"s3://bucket", "", 0, "scheme"},
		{"/just/a/path", "", 0, "scheme"},
		{"https:///nohost", "", 0, "no host"},
		{"file://host/p", "", 0, "file:///"},
		{"file:relative", "", 0, "file:///"},
		{"http://h/#frag", "", 0, "fragment"},
		{"https://h?priority=x", "", 0, "bad priority"},
		{"https://h?priority=-1", "", 0, "bad priority"},
		{"https://h?priority=", "", 0, "bad priority"},
		{"https://h?priority=1&priority=2", "", 0, "twice"},
		{"http://u:pw@h:bad/", "", 0, "port"},
		{"ftp://u:pw@h/", "", 0, "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			cfg, err := ParseURL(tt.raw)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				require.NotContains(t, err.Error(), "pw")
				return
			}
			require.NoError(t, err)
			require.Equal(t, Config{URL: tt.url, Priority: tt.prio}, cfg)
			u, err := New(cfg)
			require.NoError(t, err)
			require.NotContains(t, u.String(), "pw")
			require.NotContains(t, u.String(), "?")
			require.Equal(t, tt.prio, u.Priority())
		})
	}
}
