package upstream

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	hashA = "0c0s3hkzhpnfzz9zghy2yqs2g3lsc1nz"
	hashB = "7bk0n3wm1smpzffpdr8f5lf1jv9ww5qp"
)

// testConfig returns a Config with timeouts small enough for tests.
func testConfig(url string) Config {
	return Config{
		URL:            url,
		Priority:       DefaultPriority,
		ConnectTimeout: 200 * time.Millisecond,
		HeaderTimeout:  100 * time.Millisecond,
		StallTimeout:   100 * time.Millisecond,
		Backoff:        time.Millisecond,
		NegativeTTL:    -1,
	}
}

func newUpstream(t *testing.T, cfg Config) *Upstream {
	t.Helper()
	u, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(u.Close)
	return u
}

// server is an httptest server that counts requests.
type server struct {
	*httptest.Server
	hits atomic.Int32
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// statuses answers the n-th request with codes[n], repeating the last code.
func statuses(body string, codes ...int) http.HandlerFunc {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		i := min(int(n.Add(1))-1, len(codes)-1)
		w.WriteHeader(codes[i])
		if codes[i] == http.StatusOK {
			_, _ = w.Write([]byte(body))
		}
	}
}

// block holds a request open until the client goes away.
func block(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
