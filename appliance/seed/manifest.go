package seed

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"cairn/appliance/narinfo"
)

// ManifestName is the manifest's file name in the drive's root.
const ManifestName = "cairn-seed.json"

// ManifestFormat is the manifest format this cairn writes and reads.
const ManifestFormat = 1

// maxManifestSize bounds the manifest read from a drive: about three
// million files.
const maxManifestSize = 512 << 20

// Manifest is cairn-seed.json: who made the drive, when, and every file
// it holds with its size and sha256. Its hashes prove a file is intact;
// the narinfo signatures prove who made the paths.
type Manifest struct {
	Format    int       `json:"format"`
	Created   time.Time `json:"created"`        // the first export to the drive
	Updated   time.Time `json:"updated"`        // the latest export
	Tool      string    `json:"tool,omitempty"` // the cairn that wrote it, e.g. "cairn 1.0"
	PublicKey string    `json:"public_key"`     // the key the narinfos are signed with, NAME:BASE64
	Files     []File    `json:"files"`          // sorted by Path; last, see Marshal
}

// File is one file on the drive.
type File struct {
	Path   string `json:"path"`   // relative to the drive's root, slash-separated
	Size   int64  `json:"size"`   // bytes
	SHA256 string `json:"sha256"` // lowercase hex, as sha256sum prints it
}

// ParseManifest reads and checks a manifest.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > maxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrBadManifest, len(b), maxManifestSize)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("%w: format %d, this cairn reads %d", ErrBadManifest, m.Format, ManifestFormat)
	}
	if _, err := narinfo.ParsePublicKeys([]string{m.PublicKey}); err != nil {
		return nil, fmt.Errorf("%w: public_key: %v", ErrBadManifest, err)
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if err := checkFile(f); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
		}
		if seen[f.Path] {
			return nil, fmt.Errorf("%w: %q listed twice", ErrBadManifest, f.Path)
		}
		seen[f.Path] = true
	}
	return &m, nil
}

// checkFile checks one manifest entry's shape.
func checkFile(f File) error {
	if !validRel(f.Path) {
		return fmt.Errorf("path %q is not a file below the drive's root", f.Path)
	}
	if f.Size < 0 {
		return fmt.Errorf("%s: negative size", f.Path)
	}
	if h, err := hex.DecodeString(f.SHA256); err != nil || len(h) != 32 || strings.ToLower(f.SHA256) != f.SHA256 {
		return fmt.Errorf("%s: sha256 %q is not 64 lowercase hex digits", f.Path, f.SHA256)
	}
	return nil
}

// validRel reports whether p names a file below a drive's root: relative,
// slash-separated, no dot or empty segments.
func validRel(p string) bool {
	return p != "" && len(p) <= 1024 && !strings.ContainsAny(p, "\\\x00") &&
		filepath.IsLocal(p) && filepath.ToSlash(filepath.Clean(p)) == p && p != ManifestName
}

// Marshal encodes the manifest with its files sorted by path, one file
// per line, so that it reads and diffs well.
func (m *Manifest) Marshal() ([]byte, error) {
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	head := *m
	head.Files = nil
	h, err := json.MarshalIndent(head, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	// head ends in `"files": null` and the closing brace.
	h = bytes.TrimSuffix(h, []byte("null\n}"))
	var buf bytes.Buffer
	buf.Grow(len(h) + 140*len(m.Files) + 8)
	buf.Write(h)
	buf.WriteString("[")
	for i, f := range m.Files {
		line, err := json.Marshal(f)
		if err != nil {
			return nil, fmt.Errorf("encode manifest: %w", err)
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n  ")
		buf.Write(line)
	}
	buf.WriteString("\n ]\n}\n")
	return buf.Bytes(), nil
}

// byPath indexes the manifest's files by path.
func (m *Manifest) byPath() map[string]File {
	out := make(map[string]File, len(m.Files))
	for _, f := range m.Files {
		out[f.Path] = f
	}
	return out
}

// readManifest reads a drive's manifest; nil without error when it has
// none.
func (d *drive) readManifest() (*Manifest, error) {
	b, err := d.readFile(ManifestName, maxManifestSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ManifestName, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(d.dir, ManifestName), err)
	}
	return m, nil
}
