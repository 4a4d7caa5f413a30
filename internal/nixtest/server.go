package nixtest

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// CacheServer serves a file:// binary cache directory over HTTP on
// loopback, counting the requests per path, as a test upstream.
type CacheServer struct {
	URL string
	dir string
	srv *http.Server
	ln  net.Listener

	mu     sync.Mutex
	counts map[string]int
	// CutAfter, when >0, makes the next NAR GET send only that many bytes
	// and then drop the connection, once.
	cutAfter int
	hold     *holdWriter // for the next NAR GET
	holds    []func()    // releases, all called by Stop
}

// ServeCache starts serving dir; the server stops when the test ends.
func ServeCache(tb testing.TB, dir string) *CacheServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	s := &CacheServer{URL: "http://" + ln.Addr().String(), dir: dir, ln: ln, counts: map[string]int{}}
	files := http.FileServer(http.Dir(dir))
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts[r.Method+" "+r.URL.Path]++
		cut, hold := 0, (*holdWriter)(nil)
		if strings.HasPrefix(r.URL.Path, "/nar/") && r.Method == http.MethodGet {
			cut, s.cutAfter = s.cutAfter, 0
			hold, s.hold = s.hold, nil
		}
		s.mu.Unlock()
		if cut > 0 {
			w = &cutWriter{ResponseWriter: w, left: cut} // drops the connection mid-body
		}
		if hold != nil {
			hold.ResponseWriter = w
			w = hold
		}
		files.ServeHTTP(w, r)
	})}
	go s.srv.Serve(ln)
	tb.Cleanup(s.Stop)
	return s
}

// Stop closes the server and its connections; later requests are refused.
func (s *CacheServer) Stop() {
	s.mu.Lock()
	holds := s.holds
	s.mu.Unlock()
	for _, release := range holds {
		release()
	}
	s.srv.Close()
}

// Count returns how many requests of method for path (e.g. "/nar/x.nar.xz")
// arrived.
func (s *CacheServer) Count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[method+" "+path]
}

// CountPrefix returns how many requests of method arrived for paths
// starting with prefix.
func (s *CacheServer) CountPrefix(method, prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.counts {
		if strings.HasPrefix(k, method+" "+prefix) {
			n += v
		}
	}
	return n
}

// Total returns how many requests arrived.
func (s *CacheServer) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.counts {
		n += v
	}
	return n
}

// CutNextNAR makes the next NAR GET stop after n bytes with a broken
// connection.
func (s *CacheServer) CutNextNAR(n int) {
	s.mu.Lock()
	s.cutAfter = n
	s.mu.Unlock()
}

// HoldNextNAR makes the next NAR GET send n bytes of its body and then
// wait until release is called (or the server stops).
func (s *CacheServer) HoldNextNAR(n int) (release func()) {
	h := &holdWriter{left: n, released: make(chan struct{})}
	var once sync.Once
	release = func() { once.Do(func() { close(h.released) }) }
	s.mu.Lock()
	s.hold = h
	s.holds = append(s.holds, release)
	s.mu.Unlock()
	return release
}

type holdWriter struct {
	http.ResponseWriter
	left     int
	released chan struct{}
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if h.left < 0 || len(p) <= h.left {
		h.left -= len(p)
		return h.ResponseWriter.Write(p)
	}
	k, err := h.ResponseWriter.Write(p[:h.left])
	if err != nil {
		return k, err
	}
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	<-h.released
	h.left = -1
	n, err := h.ResponseWriter.Write(p[k:])
	return k + n, err
}

type cutWriter struct {
	http.ResponseWriter
	left int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		panic(http.ErrAbortHandler)
	}
	if len(p) > c.left {
		c.ResponseWriter.Write(p[:c.left])
		c.left = 0
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler)
	}
	c.left -= len(p)
	return c.ResponseWriter.Write(p)
}
