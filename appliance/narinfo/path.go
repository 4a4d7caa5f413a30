package narinfo

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

const (
	hashLen    = 32  // nix32 characters in a store path hash
	maxNameLen = 211 // Nix's StorePath::MaxPathLen
)

// ValidHash reports whether s is a store path hash: 32 chars of the nix32 alphabet.
func ValidHash(s string) bool {
	if len(s) != hashLen {
		return false
	}
	for i := range len(s) {
		if !nixbase32.Is(s[i]) {
			return false
		}
	}
	return true
}

// ValidStorePath checks that p is /nix/store/<32 nix32>-<name> with a name Nix accepts.
func ValidStorePath(p string) error {
	base, ok := strings.CutPrefix(p, storeDir)
	if !ok {
		return fmt.Errorf("store path %s: not under %s: %w", quote(p), storeDir, ErrBad)
	}
	if why := checkBase(base); why != "" {
		return fmt.Errorf("store path %s: %s: %w", quote(p), why, ErrBad)
	}
	return nil
}

// checkBase returns why base is not a valid store path basename, or "".
func checkBase(base string) string {
	if len(base) < hashLen+2 || base[hashLen] != '-' {
		return "not <hash>-<name>"
	}
	if !ValidHash(base[:hashLen]) {
		return "hash is not nix32"
	}
	name := base[hashLen+1:]
	if len(name) > maxNameLen {
		return "name longer than 211 characters"
	}
	if name[0] == '.' {
		return "name starts with '.'"
	}
	for i := range len(name) {
		if !nameChar(name[i]) {
			return fmt.Sprintf("illegal character %q in name", name[i])
		}
	}
	return ""
}

// nameChar reports whether c may appear in a store path name.
func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("+-._?=", c) >= 0
}

// FormatNarHash renders a NAR sha256 as "sha256:<nix32>".
func FormatNarHash(h [32]byte) string {
	return "sha256:" + nixbase32.EncodeToString(h[:])
}

// ParseNarHash parses a sha256 as sha256:<nix32>, sha256:<hex> or sha256-<base64> (SRI).
func ParseNarHash(s string) ([32]byte, error) {
	var h [32]byte
	raw, err := decodeSHA256(s)
	if err == nil && len(raw) != len(h) {
		err = fmt.Errorf("%d bytes, want %d", len(raw), len(h))
	}
	if err != nil {
		return h, fmt.Errorf("nar hash %s: %v: %w", quote(s), err, ErrBad)
	}
	copy(h[:], raw)
	return h, nil
}

// decodeSHA256 decodes the digest of a prefixed sha256 string.
func decodeSHA256(s string) ([]byte, error) {
	if v, ok := strings.CutPrefix(s, "sha256-"); ok {
		return base64.StdEncoding.DecodeString(v)
	}
	v, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return nil, fmt.Errorf("not sha256:<digest> or sha256-<base64>")
	}
	switch len(v) {
	case nixbase32.EncodedLen(32):
		return nixbase32.DecodeString(v)
	case hex.EncodedLen(32):
		return hex.DecodeString(v)
	}
	return nil, fmt.Errorf("digest of %d characters is neither nix32 nor hex", len(v))
}
