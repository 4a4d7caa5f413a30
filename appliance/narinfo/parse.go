package narinfo

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Bounds on what Parse accepts. MaxSize and maxLines also bound the number
// of References (under 1900) and of Sigs (at most 60).
const (
	maxLines = 64   // non-empty lines
	maxURL   = 4096 // bytes of URL
	maxSig   = 1024 // bytes of one Sig
	maxCA    = 1024 // bytes of CA
)

// Parse parses a narinfo, rejecting anything malformed or out of bounds.
func Parse(b []byte) (*Info, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("parse narinfo: %d bytes exceeds %d: %w", len(b), MaxSize, ErrBad)
	}
	var info Info
	seen := make(map[string]bool, 16)
	lines := 0
	for n, rest := 1, string(b); rest != ""; n++ {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if lines++; lines > maxLines {
			return nil, fmt.Errorf("parse narinfo: more than %d lines: %w", maxLines, ErrBad)
		}
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("parse narinfo line %d: no \": \": %w", n, ErrBad)
		}
		if err := info.set(key, val, seen); err != nil {
			return nil, fmt.Errorf("parse narinfo %s: %w", key, err)
		}
	}
	for _, k := range [...]string{"StorePath", "URL", "NarHash", "NarSize"} {
		if !seen[k] {
			return nil, fmt.Errorf("parse narinfo %s: missing: %w", k, ErrBad)
		}
	}
	return &info, nil
}

// set stores the value of one line; seen tracks the singular keys already set.
func (i *Info) set(key, val string, seen map[string]bool) error {
	if !known(key) {
		return nil // Nix ignores unknown keys
	}
	if key != "Sig" {
		if seen[key] {
			return fmt.Errorf("repeated: %w", ErrBad)
		}
		seen[key] = true
	}
	if strings.ContainsFunc(val, unicode.IsControl) {
		return fmt.Errorf("control character in %s: %w", quote(val), ErrBad)
	}
	val = strings.Clone(val) // do not pin the whole input
	var err error
	switch key {
	case "StorePath":
		i.StorePath, err = val, ValidStorePath(val)
	case "URL":
		i.URL, err = val, checkURL(val)
	case "Compression":
		i.Compression = val
	case "FileHash":
		i.FileHash = val
	case "FileSize":
		i.FileSize, err = parseSize(val, false)
	case "NarHash":
		i.NarHash, err = ParseNarHash(val)
	case "NarSize":
		i.NarSize, err = parseSize(val, true)
	case "References":
		i.References, err = parseRefs(val)
	case "Deriver":
		i.Deriver, err = parseDeriver(val)
	case "System":
		i.System = val
	case "Sig":
		err = checkSig(val)
		i.Sigs = append(i.Sigs, val)
	case "CA":
		if len(val) > maxCA {
			return fmt.Errorf("longer than %d bytes: %w", maxCA, ErrBad)
		}
		i.CA = val
	}
	return err
}

// known reports whether key is a narinfo field Info keeps.
func known(key string) bool {
	switch key {
	case "StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash",
		"NarSize", "References", "Deriver", "System", "Sig", "CA":
		return true
	}
	return false
}

// checkURL rejects an empty, oversized or whitespace-carrying URL.
func checkURL(v string) error {
	switch {
	case v == "":
		return fmt.Errorf("empty: %w", ErrBad)
	case len(v) > maxURL:
		return fmt.Errorf("longer than %d bytes: %w", maxURL, ErrBad)
	case strings.ContainsFunc(v, unicode.IsSpace):
		return fmt.Errorf("whitespace in %s: %w", quote(v), ErrBad)
	}
	return nil
}

// parseSize parses a decimal size; positive demands > 0.
func parseSize(v string, positive bool) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || positive && n == 0 {
		return 0, fmt.Errorf("%s is not a positive decimal: %w", quote(v), ErrBad)
	}
	return n, nil
}

// parseRefs splits and validates a space-separated list of basenames.
func parseRefs(v string) ([]string, error) {
	var refs []string
	for r := range strings.SplitSeq(v, " ") {
		if r == "" {
			continue
		}
		if why := checkBase(r); why != "" {
			return nil, fmt.Errorf("reference %s: %s: %w", quote(r), why, ErrBad)
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// parseDeriver validates a .drv basename; "unknown-deriver" means none.
func parseDeriver(v string) (string, error) {
	if v == "unknown-deriver" {
		return "", nil
	}
	if why := checkBase(v); why != "" {
		return "", fmt.Errorf("%s: %s: %w", quote(v), why, ErrBad)
	}
	if !strings.HasSuffix(v, ".drv") {
		return "", fmt.Errorf("%s: not a .drv: %w", quote(v), ErrBad)
	}
	return v, nil
}

// checkSig checks the name:base64 shape of a signature, not its validity.
func checkSig(v string) error {
	name, data, _ := strings.Cut(v, ":")
	switch {
	case len(v) > maxSig:
		return fmt.Errorf("longer than %d bytes: %w", maxSig, ErrBad)
	case name == "" || data == "":
		return fmt.Errorf("%s is not name:base64: %w", quote(v), ErrBad)
	}
	if _, err := base64.StdEncoding.DecodeString(data); err != nil {
		return fmt.Errorf("%s is not name:base64: %w", quote(v), ErrBad)
	}
	return nil
}
