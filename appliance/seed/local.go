package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/appliance"
	"cairn/appliance/narinfo"
)

// Local is a stopped cairn's store, opened from its data directory: the
// source of an export and the sink of an import.
type Local struct {
	store *appliance.Store
	key   signature.SecretKey
}

var (
	_ Source = (*Local)(nil)
	_ Sink   = (*Local)(nil)
)

// NewLocal returns the seed view of store, whose narinfos key signs.
func NewLocal(store *appliance.Store, key signature.SecretKey) *Local {
	return &Local{store: store, key: key}
}

// PublicKey is the public half of the store's signing key.
func (l *Local) PublicKey(context.Context) (string, error) {
	return l.key.ToPublicKey().String(), nil
}

// Paths lists every stored path.
func (l *Local) Paths(context.Context) ([]string, error) {
	var out []string
	err := l.store.Index().ForEachNarInfo(func(n *appliance.NarInfo) error {
		out = append(out, strings.TrimPrefix(n.StorePath, storeDir))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list paths: %w", err)
	}
	return out, nil
}

// Pins lists the pinned roots.
func (l *Local) Pins(context.Context) ([]string, error) {
	pins, err := l.store.Index().Pins()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(pins))
	for i, p := range pins {
		out[i] = p.Path
	}
	return out, nil
}

// NarInfo renders a stored path's narinfo as cairn serves it.
func (l *Local) NarInfo(_ context.Context, hash string) (*narinfo.Info, error) {
	r, err := l.store.Index().NarInfo(hash)
	if err != nil {
		return nil, fmt.Errorf("narinfo %s: %w", hash, err)
	}
	return appliance.SignedNarInfo(r, l.key, false), nil
}

// NARSize is the length of a stored NAR's .nar.zst stream.
func (l *Local) NARSize(_ context.Context, narHash [32]byte) (int64, error) {
	m, err := l.store.Index().Manifest(narHash)
	if err != nil {
		return 0, fmt.Errorf("nar %s: %w", appliance.FormatHash(narHash), err)
	}
	return int64(m.FileSize()), nil
}

// NAR reads a stored NAR as a .nar.zst: its frames as they are, and its
// chunks stored as deltas packed anew (see appliance.NAR.WritePacked), so
// a drive is never larger than NARSize says.
func (l *Local) NAR(ctx context.Context, narHash [32]byte) (io.ReadCloser, error) {
	n, err := l.store.OpenNAR(ctx, narHash)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		_, err := n.WritePacked(ctx, pw)
		if err != nil {
			err = fmt.Errorf("nar %s: %w", appliance.FormatHash(narHash), err)
		}
		pw.CloseWithError(err)
	}()
	return readCloser{pr, func() error { cancel(); return pr.Close() }}, nil
}

// readCloser is a reader with its own Close.
type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// Listing returns a stored path's .ls listing.
func (l *Local) Listing(ctx context.Context, hash string) ([]byte, error) {
	r, err := l.store.Index().NarInfo(hash)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", hash, err)
	}
	n, err := l.store.OpenNAR(ctx, r.NarHash)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", hash, err)
	}
	return n.Listing()
}

// Stored lists every stored path.
func (l *Local) Stored(ctx context.Context) ([]string, error) { return l.Paths(ctx) }

// Add ingests a path: the store checks the NAR against NarHash and NarSize
// before it commits it with its narinfo, signed by the store's key.
func (l *Local) Add(ctx context.Context, info *narinfo.Info, body io.Reader, _ int64, comp appliance.Compression) error {
	rec := appliance.NewRecord(info, l.key, "seed")
	_, err := l.store.Ingest(ctx, appliance.Want{Info: rec}, body, comp)
	if errors.Is(err, appliance.ErrHashMismatch) || errors.Is(err, appliance.ErrSizeMismatch) ||
		errors.Is(err, appliance.ErrBadBody) || errors.Is(err, appliance.ErrBadNAR) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}
