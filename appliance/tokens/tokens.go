// Package tokens holds the access tokens cairn accepts and the role each
// one grants.
package tokens

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Role is what a token may do. Each role includes the ones below it.
type Role int

// The roles, weakest first.
const (
	None  Role = iota // no valid token
	Read              // GET and HEAD
	Write             // uploads
	Admin             // deletes and the admin API
)

// String names a role as the tokens file does.
func (r Role) String() string {
	switch r {
	case Read:
		return "read"
	case Write:
		return "write"
	case Admin:
		return "admin"
	}
	return "none"
}

// ErrBadFile reports a tokens file that does not parse.
var ErrBadFile = errors.New("bad tokens file")

// Set is the tokens cairn accepts.
type Set struct {
	entries []entry
}

type entry struct {
	sum  [32]byte // sha256 of the token, so comparisons take the same time for any length
	role Role
}

// Load reads a tokens file: one "ROLE TOKEN" pair per line, ROLE being read,
// write or admin; '#' starts a comment. Errors name the line, never the
// token.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("load tokens %s: %w", path, err)
	}
	return s, nil
}

// Parse reads the contents of a tokens file.
func Parse(b []byte) (*Set, error) {
	s := &Set{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("%w: line %d: want ROLE TOKEN", ErrBadFile, n)
		}
		var role Role
		switch fields[0] {
		case "read":
			role = Read
		case "write":
			role = Write
		case "admin":
			role = Admin
		default:
			return nil, fmt.Errorf("%w: line %d: role %q is not read, write or admin", ErrBadFile, n, fields[0])
		}
		if len(fields[1]) < 8 {
			return nil, fmt.Errorf("%w: line %d: token shorter than 8 characters", ErrBadFile, n)
		}
		s.entries = append(s.entries, entry{sum: sha256.Sum256([]byte(fields[1])), role: role})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	return s, nil
}

// Role returns the strongest role a token grants, comparing against every
// known token in constant time.
func (s *Set) Role(token []byte) Role {
	if s == nil || len(token) == 0 {
		return None
	}
	sum := sha256.Sum256(token)
	best := None
	for _, e := range s.entries {
		if subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1 && e.role > best {
			best = e.role
		}
	}
	return best
}

// Len is how many tokens the set holds.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}
