// Package seed writes, checks and reads seed drives: directories, usually
// on a removable disk, that hold a standard Nix binary cache signed by
// cairn plus a manifest (cairn-seed.json) of every file's size and sha256.
// Stock Nix reads a drive as a file:// cache; cairn exports to it, verifies
// it and imports from it.
package seed

import (
	"context"
	"errors"
	"fmt"
	"io"

	"cairn/appliance"
	"cairn/appliance/narinfo"
)

// Errors the seed operations fail with, for callers to branch on.
var (
	// ErrNotFound: the source does not hold a path.
	ErrNotFound = appliance.ErrNotFound
	// ErrIncomplete: a requested closure lacks paths the source does not hold.
	ErrIncomplete = errors.New("closure incomplete")
	// ErrNoSpace: the drive has too little free space for the export.
	ErrNoSpace = errors.New("not enough free space on the drive")
	// ErrOtherKey: the drive holds an export signed by another cairn key.
	ErrOtherKey = errors.New("drive was made with another key")
	// ErrNoTrust: no key to check the drive's signatures against.
	ErrNoTrust = errors.New("no key to check signatures against")
	// ErrBadManifest: cairn-seed.json is missing, malformed or out of bounds.
	ErrBadManifest = errors.New("bad cairn-seed.json")
	// ErrUnauthorized: a remote cairn refused the token.
	ErrUnauthorized = errors.New("remote cairn refused the token")
	// ErrRefused: a path failed verification and was not imported.
	ErrRefused = errors.New("refused")
	// ErrBusy: an export is writing the drive, or the drive is being read
	// while an export would write it.
	ErrBusy = errors.New("drive in use by another cairn seed command")
	// ErrSource: the source delivered a NAR that does not match its NarHash.
	ErrSource = errors.New("source NAR does not match its narinfo")
)

// Source is where an export reads stored paths from: a running cairn over
// HTTP, or a stopped one's data directory.
type Source interface {
	// PublicKey is the key ("name:base64") the source signs narinfos with.
	PublicKey(ctx context.Context) (string, error)
	// Paths lists the basenames of every stored path.
	Paths(ctx context.Context) ([]string, error)
	// Pins lists the basenames of the pinned roots.
	Pins(ctx context.Context) ([]string, error)
	// NarInfo returns the narinfo the source serves for a store hash,
	// signed by its key; ErrNotFound when it has none.
	NarInfo(ctx context.Context, hash string) (*narinfo.Info, error)
	// NARSize is the length of a NAR's .nar.zst stream, as stored.
	NARSize(ctx context.Context, narHash [32]byte) (int64, error)
	// NAR opens a NAR's .nar.zst stream: the stored zstd frames as they are.
	NAR(ctx context.Context, narHash [32]byte) (io.ReadCloser, error)
	// Listing returns the .ls listing of a store path's NAR.
	Listing(ctx context.Context, hash string) ([]byte, error)
}

// Sink is where an import commits verified paths: a running cairn's push
// API, or a stopped one's store.
type Sink interface {
	// Stored lists the basenames of every path the sink holds.
	Stored(ctx context.Context) ([]string, error)
	// Add stores one path whose narinfo was verified: its NAR body in
	// compression comp, size bytes long, checked against info's NarHash and
	// NarSize before anything is committed, then the narinfo. Failures of
	// that check, and paths the sink refuses, wrap ErrRefused.
	Add(ctx context.Context, info *narinfo.Info, body io.Reader, size int64, comp appliance.Compression) error
}

// Progress is told how far an operation has come, in bytes.
type Progress interface {
	// Phase starts a new phase of total bytes; total < 0 when unknown.
	Phase(name string, total int64)
	// Add counts bytes done in the current phase.
	Add(n int64)
}

// noProgress is the Progress of callers that pass none.
type noProgress struct{}

func (noProgress) Phase(string, int64) {}
func (noProgress) Add(int64)           {}

func progressOr(p Progress) Progress {
	if p == nil {
		return noProgress{}
	}
	return p
}

// counter is a writer that counts bytes into a Progress.
type counter struct{ p Progress }

// Write counts b.
func (c counter) Write(b []byte) (int, error) {
	c.p.Add(int64(len(b)))
	return len(b), nil
}

// sizeText prints a byte count for people, in decimal units as drives are
// sold.
func sizeText(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
