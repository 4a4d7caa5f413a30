package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestOpenResolve(t *testing.T) {
	type seen struct{ path, query, user string }
	record := func(ch chan<- seen) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			user, _, _ := r.BasicAuth()
			ch <- seen{r.URL.Path, r.URL.RawQuery, user}
			_, _ = w.Write([]byte("nar"))
		}
	}
	mainCh, otherCh := make(chan seen, 1), make(chan seen, 1)
	main, other := newServer(t, record(mainCh)), newServer(t, record(otherCh))
	base := strings.Replace(main.URL, "http://", "http://alice:secret@", 1) + "/sub/?tok=1"
	u := newUpstream(t, testConfig(base))
	require.Equal(t, main.URL+"/sub", u.String())

	tests := []struct {
		name   string
		narURL string
		ch     chan seen
		want   seen
		err    error
	}{
		{"relative", "nar/a.nar.xz", mainCh, seen{"/sub/nar/a.nar.xz", "tok=1", "alice"}, nil},
		{"relative with query", "nar/a.nar?x=1&y=2", mainCh, seen{"/sub/nar/a.nar", "x=1&y=2&tok=1", "alice"}, nil},
		{"absolute http", other.URL + "/x/b.nar?sig=abc", otherCh, seen{"/x/b.nar", "sig=abc", ""}, nil},
		{"absolute file", "file:///etc/passwd", nil, seen{}, ErrBadURL},
		{"absolute FILE", "FILE:///etc/passwd", nil, seen{}, ErrBadURL},
		{"other scheme", "s3://bucket/x.nar", nil, seen{}, ErrBadURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := main.hits.Load() + other.hits.Load()
			rc, err := u.Open(context.Background(), tt.narURL)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				require.Equal(t, hits, main.hits.Load()+other.hits.Load())
				return
			}
			require.NoError(t, err)
			defer rc.Close()
			data, err := io.ReadAll(rc)
			require.NoError(t, err)
			require.Equal(t, "nar", string(data))
			require.Equal(t, tt.want, <-tt.ch)
		})
	}
}

func TestOpenBody(t *testing.T) {
	const nar = "0123456789abcdefghij"
	raw := func(resp string) http.HandlerFunc { // writes resp verbatim and cuts the connection
		return func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte(resp))
			conn.Close()
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		pause   time.Duration // between the first and later reads
		want    string
		err     error
	}{
		{"complete", raw("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + nar), 0, nar, nil},
		{"complete without length", raw("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + nar), 0, nar, nil},
		{"slow reader is no stall", raw("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + nar), 300 * time.Millisecond, nar, nil},
		{"short body", raw("HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + nar), 0, nar, io.ErrUnexpectedEOF},
		{"stalled body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "40")
			_, _ = w.Write([]byte(nar))
			w.(http.Flusher).Flush()
			block(w, r)
		}, 0, nar, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.handler)
			u := newUpstream(t, testConfig(s.URL))
			rc, err := u.Open(context.Background(), "nar/x.nar")
			require.NoError(t, err)
			defer rc.Close()
			first := make([]byte, 1)
			_, err = io.ReadFull(rc, first)
			require.NoError(t, err)
			time.Sleep(tt.pause)
			start := time.Now()
			rest, err := io.ReadAll(rc)
			require.Equal(t, tt.want, string(first)+string(rest))
			if tt.err == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.err)
			require.ErrorIs(t, err, ErrUnavailable)
			require.Contains(t, err.Error(), "/nar/x.nar")
			require.Less(t, time.Since(start), 2*time.Second)
			if tt.name == "stalled body" {
				require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	slow := newServer(t, block)

	tests := []struct {
		name string
		url  string
		open bool
	}{
		{"refused narinfo", refused, false},
		{"refused nar", refused, true},
		{"header timeout narinfo", slow.URL, false},
		{"header timeout nar", slow.URL, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, testConfig(tt.url))
			start := time.Now()
			var err error
			if tt.open {
				_, err = u.Open(context.Background(), "nar/x.nar")
			} else {
				_, err = u.NarInfo(context.Background(), hashA)
			}
			require.ErrorIs(t, err, ErrUnavailable)
			require.NotErrorIs(t, err, ErrNotFound)
			require.NotErrorIs(t, err, context.Canceled)
			require.Less(t, time.Since(start), 2*time.Second)
		})
	}
}

func TestContextCanceled(t *testing.T) {
	failing := newServer(t, statuses("", 500))
	slow := newServer(t, block)
	stalled := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		block(w, r)
	})
	tests := []struct {
		name string
		url  string
		body bool // cancel while reading the body rather than opening
	}{
		{"during backoff", failing.URL, false},
		{"waiting for headers", slow.URL, false},
		{"reading body", stalled.URL, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(tt.url)
			cfg.Backoff, cfg.HeaderTimeout, cfg.StallTimeout = 10*time.Second, 10*time.Second, 10*time.Second
			u := newUpstream(t, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			start := time.Now()
			rc, err := u.Open(ctx, "nar/x.nar")
			if tt.body {
				require.NoError(t, err)
				defer rc.Close()
				_, err = io.ReadAll(rc)
			}
			require.ErrorIs(t, err, context.Canceled)
			require.NotErrorIs(t, err, ErrUnavailable)
			require.Less(t, time.Since(start), 2*time.Second)
		})
	}
}
