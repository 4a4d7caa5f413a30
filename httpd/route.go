package httpd

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance"
)

// errBadPath reports a request path that no route can accept.
var errBadPath = errors.New("bad request path")

// kind is what a request path names.
type kind int

const (
	kindUnknown     kind = iota // a well-formed path cairn does not serve
	kindCacheInfo               // /nix-cache-info
	kindPubKey                  // /pubkey
	kindHealth                  // /healthz
	kindNarInfo                 // /<hash>.narinfo
	kindListing                 // /<hash>.ls
	kindNAR                     // /nar/<narhash>.nar or .nar.zst
	kindPaths                   // /_cairn/paths: every stored path, one per line
	kindUpload                  // /nar/<filehash>.nar.xz or .nar.bz2: only as uploaded
	kindLog                     // /log/<drv basename>
	kindRealisation             // /realisations/<id>.doi or /build-trace-v2/<drv>/<out>.doi
	kindAdmin                   // /_cairn/<endpoint>: the admin API
)

// route is a parsed request path.
type route struct {
	kind    kind
	name    string   // the path without its leading slash, for NARs, logs and realisations
	hash    string   // store hash, for narinfo and listing; derivation basename for logs
	narHash [32]byte // for NARs
	zst     bool     // the .nar.zst form of a NAR
}

// maxPath bounds the request paths cairn parses.
const maxPath = 512

// parseRoute reads a raw request path (before any normalisation). It fails
// with errBadPath, and a reason, for paths that can never be valid: too
// long, traversal, a malformed hash.
func parseRoute(path []byte) (route, error) {
	if len(path) > maxPath {
		return route{}, fmt.Errorf("%w: longer than %d bytes", errBadPath, maxPath)
	}
	if len(path) == 0 || path[0] != '/' {
		return route{}, fmt.Errorf("%w: must start with /", errBadPath)
	}
	for _, c := range path {
		if c < 0x21 || c > 0x7e || c == '%' || c == '\\' {
			return route{}, fmt.Errorf("%w: unexpected character %q", errBadPath, c)
		}
	}
	if bytes.Contains(path, []byte("//")) || bytes.Contains(path, []byte("/.")) {
		return route{}, fmt.Errorf("%w: empty, dot or traversal segment", errBadPath)
	}
	p := path[1:]
	switch string(p) {
	case "nix-cache-info":
		return route{kind: kindCacheInfo}, nil
	case "pubkey":
		return route{kind: kindPubKey}, nil
	case "healthz":
		return route{kind: kindHealth}, nil
	case "_cairn/paths":
		return route{kind: kindPaths}, nil
	}
	if rest, ok := bytes.CutPrefix(p, []byte("_cairn/")); ok {
		return route{kind: kindAdmin, name: string(rest)}, nil
	}
	if rest, ok := bytes.CutPrefix(p, []byte("nar/")); ok {
		r, err := parseNAR(rest)
		r.name = string(p)
		return r, err
	}
	if drv, ok := bytes.CutPrefix(p, []byte("log/")); ok {
		if !appliance.ValidDrv(string(drv)) {
			return route{}, fmt.Errorf("%w: %q is not a derivation basename", errBadPath, drv)
		}
		return route{kind: kindLog, hash: string(drv), name: string(p)}, nil
	}
	if bytes.HasPrefix(p, []byte("realisations/")) || bytes.HasPrefix(p, []byte("build-trace-v2/")) {
		if !appliance.ValidRealisationPath(string(p)) {
			return route{}, fmt.Errorf("%w: %q is not a realisation path", errBadPath, p)
		}
		return route{kind: kindRealisation, name: string(p)}, nil
	}
	if bytes.IndexByte(p, '/') >= 0 {
		return route{kind: kindUnknown}, nil
	}
	name, ext, ok := bytes.Cut(p, []byte("."))
	if !ok {
		return route{kind: kindUnknown}, nil
	}
	var k kind
	switch string(ext) {
	case "narinfo":
		k = kindNarInfo
	case "ls":
		k = kindListing
	default:
		return route{kind: kindUnknown}, nil
	}
	if !validHash(name) {
		return route{}, fmt.Errorf("%w: %q is not a 32-character nix32 store hash", errBadPath, name)
	}
	return route{kind: k, hash: string(name)}, nil
}

// parseNAR reads what follows /nar/: <52 nix32>.nar or .nar.zst, which
// cairn serves by NarHash, or .nar.xz and .nar.bz2, which exist only as
// uploaded (Nix names uploads by the compressed file's hash).
func parseNAR(p []byte) (route, error) {
	r := route{kind: kindNAR}
	name, ext, ok := bytes.Cut(p, []byte("."))
	if !ok {
		return route{kind: kindUnknown}, nil
	}
	switch string(ext) {
	case "nar":
	case "nar.zst":
		r.zst = true
	case "nar.xz", "nar.bz2":
		r.kind = kindUpload
	default:
		return route{kind: kindUnknown}, nil
	}
	if len(name) != 52 || !nix32(name) {
		return route{}, fmt.Errorf("%w: %q is not a 52-character nix32 NAR hash", errBadPath, name)
	}
	h, err := nixbase32.DecodeString(string(name))
	if err != nil || len(h) != 32 {
		return route{}, fmt.Errorf("%w: %q is not a NAR hash", errBadPath, name)
	}
	copy(r.narHash[:], h)
	return r, nil
}

func validHash(b []byte) bool { return len(b) == 32 && nix32(b) }

// nix32 reports whether b uses only Nix's base-32 alphabet.
func nix32(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z' && c != 'e' && c != 'o' && c != 'u' && c != 't':
		default:
			return false
		}
	}
	return true
}
