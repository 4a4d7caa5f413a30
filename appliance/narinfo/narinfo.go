// Package narinfo parses, writes, signs and verifies Nix .narinfo files.
package narinfo

import (
	"errors"
	"strconv"
	"strings"
)

// ErrBad reports a narinfo (or key, or signature) that does not parse; messages are one line, suitable for a 400 body.
var ErrBad = errors.New("bad narinfo")

// MaxSize is the largest narinfo accepted (64 KiB).
const MaxSize = 64 << 10

// storeDir is the store prefix of every store path, with its trailing slash.
const storeDir = "/nix/store/"

// Info is one parsed narinfo.
type Info struct {
	StorePath   string   // full path /nix/store/<hash>-<name>
	URL         string   // as written by the source (may be relative, absolute, carry a query)
	Compression string   // as written; "" when the field is absent (Nix then means bzip2)
	FileHash    string   // as written, or ""
	FileSize    uint64   // size of the file URL names, or 0
	NarHash     [32]byte // sha256 of the NAR
	NarSize     uint64   // size of the NAR
	References  []string // basenames, in the order given
	Deriver     string   // basename or ""
	System      string   // as written, or ""
	Sigs        []string // "name:base64", in order
	CA          string   // content address as written, or ""
}

// Hash returns the 32-char nix32 hash part of StorePath, or "" if StorePath is malformed.
func (i *Info) Hash() string {
	base, ok := strings.CutPrefix(i.StorePath, storeDir)
	if !ok || len(base) < hashLen {
		return ""
	}
	return base[:hashLen]
}

// quote renders untrusted input for a one-line error message, truncated.
func quote(s string) string {
	const limit = 80
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "..."
	}
	return strconv.Quote(s)
}
