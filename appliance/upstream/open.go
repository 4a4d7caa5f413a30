package upstream

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// Open opens the NAR file a narinfo's URL field names. The body fails with
// ErrUnavailable when it stalls or ends short; retries cover opening only.
func (u *Upstream) Open(ctx context.Context, narURL string) (io.ReadCloser, error) {
	if u.dir != "" {
		name, _, _ := strings.Cut(narURL, "?")
		if isAbsolute(name) {
			return nil, fmt.Errorf("open %s %q: %w: absolute URL from a file upstream", u, narURL, ErrBadURL)
		}
		f, err := u.openFile(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("open %s/%s: %w", u, name, err)
		}
		return f, nil
	}
	target, err := u.resolve(narURL)
	if err != nil {
		return nil, fmt.Errorf("open %s %q: %w", u, narURL, err)
	}
	key := redact(target)
	var b *body
	err = u.retry(ctx, func() (err error) {
		b, err = u.get(ctx, target)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	b.key = key
	return b, nil
}

// resolve turns a narinfo URL into a request URL the way Nix does: an absolute
// http(s) URL as is, anything else appended to the base after a slash.
func (u *Upstream) resolve(narURL string) (*url.URL, error) {
	if hasPrefixFold(narURL, "http://") || hasPrefixFold(narURL, "https://") {
		t, err := url.Parse(narURL)
		if err != nil || t.Host == "" {
			return nil, fmt.Errorf("%w: unparsable absolute URL", ErrBadURL)
		}
		return t, nil
	}
	if isAbsolute(narURL) {
		return nil, fmt.Errorf("%w: not an http(s) URL", ErrBadURL)
	}
	t, err := url.Parse(u.base + "/" + narURL)
	if err != nil || t.Host != u.host {
		return nil, fmt.Errorf("%w: unparsable relative URL", ErrBadURL)
	}
	t.Fragment, t.RawFragment = "", ""
	t.RawQuery = joinQuery(t.RawQuery, u.query)
	return t, nil
}

// isAbsolute reports whether s starts with a URL scheme and "://".
func isAbsolute(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	for _, c := range []byte(s[:i]) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func joinQuery(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + "&" + b
}
