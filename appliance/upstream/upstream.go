// Package upstream fetches narinfos, NARs and nix-cache-info from one
// upstream Nix binary cache, over http(s) or from a file:// directory.
package upstream

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Errors callers branch on; every error this package returns wraps at most one of them.
var (
	// ErrNotFound means the upstream does not have the object (404, 410, 403, missing file).
	ErrNotFound = errors.New("not in upstream")
	// ErrUnavailable means the upstream could not answer; callers answer 5xx, never 404.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrTooLarge means a response exceeded its size bound.
	ErrTooLarge = errors.New("upstream response too large")
	// ErrBadHash means a store hash is not 32 nix32 characters.
	ErrBadHash = errors.New("invalid store hash")
	// ErrBadURL means a NAR URL was refused (local file, path escape, unparsable).
	ErrBadURL = errors.New("refused NAR URL")
)

// Defaults for Config fields left zero.
const (
	DefaultPriority       = 50
	DefaultConnectTimeout = 5 * time.Second
	DefaultHeaderTimeout  = 15 * time.Second
	DefaultStallTimeout   = 30 * time.Second
	DefaultRetries        = 2
	DefaultBackoff        = 200 * time.Millisecond
	DefaultNegativeTTL    = 5 * time.Minute
	DefaultNegativeMax    = 100000
)

// Size bounds on small upstream files.
const (
	MaxNarInfoSize   = 64 << 10
	MaxCacheInfoSize = 4 << 10
)

// Config describes one upstream; zero fields take their defaults, except
// Priority, which is used as given (ParseURL fills in DefaultPriority).
type Config struct {
	URL            string        // http://, https:// or file:// base of a binary cache, without ?priority
	Priority       int           // lower is tried first (Nix semantics)
	ConnectTimeout time.Duration // TCP connect and TLS handshake
	HeaderTimeout  time.Duration // from sending a request to its response headers
	StallTimeout   time.Duration // a body read that delivers no byte for this long fails
	Retries        int           // extra attempts on transient errors; <0 means none
	Backoff        time.Duration // delay before the first retry; each later one is 4 times longer
	NegativeTTL    time.Duration // how long a narinfo miss is remembered; <0 disables
	NegativeMax    int           // bound on remembered misses

	Transport http.RoundTripper // nil builds a tuned http.Transport
	Now       func() time.Time  // clock for the miss cache; nil means time.Now
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ConnectTimeout, DefaultConnectTimeout)
	def(&c.HeaderTimeout, DefaultHeaderTimeout)
	def(&c.StallTimeout, DefaultStallTimeout)
	def(&c.Backoff, DefaultBackoff)
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultNegativeTTL
	}
	if c.NegativeMax <= 0 {
		c.NegativeMax = DefaultNegativeMax
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Upstream is one binary cache that narinfos and NARs are fetched from.
type Upstream struct {
	cfg    Config
	safe   string        // base URL without credentials or query, for logs
	base   string        // scheme://host/path without trailing slash, userinfo or query
	host   string        // host[:port] of base
	query  string        // base's raw query, appended to relative requests
	user   *url.Userinfo // credentials sent to base's host only
	dir    string        // root directory of a file:// upstream; "" for http(s)
	client *http.Client
	misses *missCache // nil when disabled or for file://
}

// New checks cfg and returns an Upstream; it does no I/O.
func New(cfg Config) (*Upstream, error) {
	cfg.setDefaults()
	pu, err := parseBase(cfg.URL)
	if err != nil {
		return nil, err
	}
	u := &Upstream{cfg: cfg, safe: redact(pu)}
	if pu.Scheme == "file" {
		u.dir = filepath.Clean(filepath.FromSlash(pu.Path))
		return u, nil
	}
	u.base = pu.Scheme + "://" + pu.Host + strings.TrimRight(pu.EscapedPath(), "/")
	u.safe, u.host, u.query, u.user = u.base, pu.Host, pu.RawQuery, pu.User
	rt := cfg.Transport
	if rt == nil {
		rt = newTransport(cfg)
	}
	u.client = &http.Client{Transport: rt}
	if cfg.NegativeTTL > 0 {
		u.misses = newMissCache(cfg.NegativeTTL, cfg.NegativeMax, cfg.Now)
	}
	return u, nil
}

func newTransport(cfg Config) *http.Transport {
	d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    cfg.ConnectTimeout,
		ResponseHeaderTimeout:  cfg.HeaderTimeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

// String returns the base URL without credentials or query, safe to log.
func (u *Upstream) String() string { return u.safe }

// Priority returns the upstream's priority; lower is tried first.
func (u *Upstream) Priority() int { return u.cfg.Priority }

// Close closes idle connections.
func (u *Upstream) Close() {
	if u.client != nil {
		u.client.CloseIdleConnections()
	}
}
