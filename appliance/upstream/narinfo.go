package upstream

import (
	"context"
	"errors"
	"fmt"
)

// NarInfo returns the raw narinfo for a store hash. A miss is remembered for
// NegativeTTL (http(s) only: a local directory is its own authority) and
// answered from memory until then.
func (u *Upstream) NarInfo(ctx context.Context, hash string) ([]byte, error) {
	if !validHash(hash) {
		return nil, fmt.Errorf("fetch %s/%q.narinfo: %w", u, hash, ErrBadHash)
	}
	if u.misses != nil && u.misses.has(hash) {
		return nil, fmt.Errorf("fetch %s/%s.narinfo: %w (remembered)", u, hash, ErrNotFound)
	}
	data, err := u.fetchSmall(ctx, hash+".narinfo", MaxNarInfoSize)
	if err != nil {
		if u.misses != nil && errors.Is(err, ErrNotFound) {
			u.misses.add(hash)
		}
		return nil, fmt.Errorf("fetch %s/%s.narinfo: %w", u, hash, err)
	}
	return data, nil
}

// Remembers reports whether a narinfo miss for hash is remembered, so
// NarInfo would answer ErrNotFound without a request.
func (u *Upstream) Remembers(hash string) bool {
	return u.misses != nil && u.misses.has(hash)
}

// validHash reports whether h is 32 characters of Nix's base-32 alphabet.
func validHash(h string) bool {
	if len(h) != 32 {
		return false
	}
	for _, c := range []byte(h) {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' && c != 'e' && c != 'o' && c != 't' && c != 'u'
		if !ok {
			return false
		}
	}
	return true
}
