package upstream

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNarInfoStatus(t *testing.T) {
	const body = "StorePath: /nix/store/" + hashA + "-x\n"
	tests := []struct {
		name  string
		codes []int
		want  error
		hits  int32
	}{
		{"200", []int{200}, nil, 1},
		{"404", []int{404}, ErrNotFound, 1},
		{"410", []int{410}, ErrNotFound, 1},
		{"403", []int{403}, ErrNotFound, 1},
		{"401 is not retried", []int{401}, ErrUnavailable, 1},
		{"400 is not retried", []int{400}, ErrUnavailable, 1},
		{"500 then 200", []int{500, 200}, nil, 2},
		{"503 then 404", []int{503, 404}, ErrNotFound, 2},
		{"429 forever", []int{429}, ErrUnavailable, 3},
		{"500 forever", []int{500}, ErrUnavailable, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := statuses(body, tt.codes...)
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/"+hashA+".narinfo" || r.Header.Get("User-Agent") != "cairn" || r.Header.Get("Authorization") != "" {
					w.WriteHeader(http.StatusTeapot)
					return
				}
				h(w, r)
			})
			u := newUpstream(t, testConfig(s.URL))
			got, err := u.NarInfo(context.Background(), hashA)
			if tt.want == nil {
				require.NoError(t, err)
				require.Equal(t, body, string(got))
			} else {
				require.ErrorIs(t, err, tt.want)
				require.Contains(t, err.Error(), hashA)
			}
			require.Equal(t, tt.hits, s.hits.Load())
		})
	}
}

func TestNarInfoNegativeCache(t *testing.T) {
	tests := []struct {
		name    string
		ttl     time.Duration
		advance time.Duration
		hits    int32
	}{
		{"remembered", 0, 0, 1},
		{"remembered until expiry", 0, DefaultNegativeTTL - time.Second, 1},
		{"expired", 0, DefaultNegativeTTL, 2},
		{"short ttl expired", time.Minute, time.Minute, 2},
		{"disabled", -1, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, statuses("", 404))
			var mu sync.Mutex
			now := time.Unix(1e9, 0)
			cfg := testConfig(s.URL)
			cfg.NegativeTTL = tt.ttl
			cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			u := newUpstream(t, cfg)
			_, err := u.NarInfo(context.Background(), hashA)
			require.ErrorIs(t, err, ErrNotFound)
			mu.Lock()
			now = now.Add(tt.advance)
			mu.Unlock()
			_, err = u.NarInfo(context.Background(), hashA)
			require.ErrorIs(t, err, ErrNotFound)
			require.Equal(t, tt.hits, s.hits.Load())
		})
	}
}

func TestNarInfoUnavailableIsNotRemembered(t *testing.T) {
	s := newServer(t, statuses("x", 500, 500, 500, 200))
	cfg := testConfig(s.URL)
	cfg.NegativeTTL = 0
	u := newUpstream(t, cfg)
	_, err := u.NarInfo(context.Background(), hashA)
	require.ErrorIs(t, err, ErrUnavailable)
	require.NotErrorIs(t, err, ErrNotFound)
	got, err := u.NarInfo(context.Background(), hashA)
	require.NoError(t, err)
	require.Equal(t, "x", string(got))
}

func TestNarInfoBadHash(t *testing.T) {
	for _, h := range []string{
		"", hashA[:31], hashA + "0", "e" + hashA[1:], "o" + hashA[1:], "t" + hashA[1:],
		"u" + hashA[1:], "C" + hashA[1:], "../" + hashA[3:], "/" + hashA[1:],
	} {
		t.Run(h, func(t *testing.T) {
			s := newServer(t, statuses("x", 200))
			u := newUpstream(t, testConfig(s.URL))
			_, err := u.NarInfo(context.Background(), h)
			require.ErrorIs(t, err, ErrBadHash)
			require.Zero(t, s.hits.Load())
		})
	}
}

func TestNarInfoTooLarge(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		chunked bool
		want    error
	}{
		{"at limit", MaxNarInfoSize, false, nil},
		{"at limit chunked", MaxNarInfoSize, true, nil},
		{"over limit", MaxNarInfoSize + 1, false, ErrTooLarge},
		{"over limit chunked", MaxNarInfoSize + 1, true, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("x", tt.size)
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.chunked {
					_, _ = w.Write([]byte(body[:10]))
					w.(http.Flusher).Flush()
					_, _ = w.Write([]byte(body[10:]))
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				_, _ = w.Write([]byte(body))
			})
			u := newUpstream(t, testConfig(s.URL))
			got, err := u.NarInfo(context.Background(), hashA)
			if tt.want == nil {
				require.NoError(t, err)
				require.Len(t, got, tt.size)
			} else {
				require.ErrorIs(t, err, tt.want)
			}
			require.Equal(t, int32(1), s.hits.Load())
		})
	}
}
