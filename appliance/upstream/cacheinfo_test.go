package upstream

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCacheInfo(t *testing.T) {
	tests := []struct {
		name string
		code int
		body string
		want CacheInfo
		err  error
	}{
		{"full", 200, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n", CacheInfo{"/nix/store", true, 40}, nil},
		{"no mass query, unknown keys", 200, "StoreDir:/nix/store\nWantMassQuery: 0\nFoo: bar\njunk\n", CacheInfo{StoreDir: "/nix/store"}, nil},
		{"empty", 200, "", CacheInfo{}, nil},
		{"bad priority", 200, "Priority: high\n", CacheInfo{}, ErrUnavailable},
		{"too large", 200, strings.Repeat("x", MaxCacheInfoSize+1), CacheInfo{}, ErrTooLarge},
		{"absent", 404, "", CacheInfo{}, ErrNotFound},
		{"broken", 502, "", CacheInfo{}, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/nix-cache-info" {
					w.WriteHeader(http.StatusTeapot)
					return
				}
				statuses(tt.body, tt.code)(w, r)
			})
			u := newUpstream(t, testConfig(s.URL+"/"))
			got, err := u.CacheInfo(context.Background())
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestFileCacheInfo(t *testing.T) {
	u := newUpstream(t, testConfig("file://"+fileCache(t)))
	got, err := u.CacheInfo(context.Background())
	require.NoError(t, err)
	require.Equal(t, CacheInfo{"/nix/store", true, 30}, got)
}
