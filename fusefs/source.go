package fusefs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance/narinfo"
)

// ErrNotFound reports a store path or NAR the source does not hold.
var ErrNotFound = errors.New("not found")

// ErrNoOffsets reports a listing whose regular files carry no NAR offsets,
// so their contents cannot be located in the NAR.
var ErrNoOffsets = errors.New("listing has no narOffset for a file")

// Source is where the mounted view's data comes from: the local store or a
// remote cairn. Everything it returns is immutable, except which paths
// exist.
type Source interface {
	// Paths returns the basenames (<hash>-<name>) of every store path held.
	Paths(ctx context.Context) ([]string, error)
	// Path returns what the source holds about a store hash; ErrNotFound
	// when it holds nothing.
	Path(ctx context.Context, storeHash string) (*PathInfo, error)
	// Listing returns the .ls JSON listing of a store path's NAR.
	Listing(ctx context.Context, p *PathInfo) ([]byte, error)
	// NARSize returns the length of a held NAR; ErrNotFound when it is not
	// held.
	NARSize(ctx context.Context, narHash [32]byte) (int64, error)
	// OpenNAR returns block access to a held NAR of the given size.
	OpenNAR(ctx context.Context, narHash [32]byte, size int64) (NAR, error)
}

// PathInfo is one store path as the mount shows it.
type PathInfo struct {
	StorePath string // /nix/store/<hash>-<name>
	NarHash   [32]byte
	NarSize   uint64
	NarInfo   []byte // the text of narinfo/<hash>.narinfo
}

// Base returns the store path's basename, <hash>-<name>.
func (p *PathInfo) Base() string { return strings.TrimPrefix(p.StorePath, storeDir) }

// Hash returns the store path's 32-character hash part.
func (p *PathInfo) Hash() string { return p.Base()[:hashLen] }

// Block is one unit of a NAR that a source fetches and the cache keeps.
type Block struct {
	Key  string // cache key: the same bytes always have the same key
	Off  int64  // offset of the block's first byte in the NAR
	Size int    // length of the block
}

// NAR is random access to one NAR, split into blocks: the chunks of a local
// NAR, or fixed-size byte ranges of a remote one.
type NAR interface {
	// Size is the NAR's length.
	Size() int64
	// Blocks is the number of blocks.
	Blocks() int
	// Block describes block i, for 0 <= i < Blocks().
	Block(i int) Block
	// Find returns the index of the block holding byte off.
	Find(off int64) int
	// Load returns block i's bytes, exactly Block(i).Size of them. The
	// caller must not modify them.
	Load(ctx context.Context, i int) ([]byte, error)
}

// RunLoader is a NAR that loads a run of consecutive blocks more cheaply
// in one go than one by one: a remote NAR, with one Range request.
type RunLoader interface {
	// LoadRun returns blocks first to first+n-1, in order.
	LoadRun(ctx context.Context, first, n int) ([][]byte, error)
}

const (
	storeDir = "/nix/store/"
	hashLen  = 32
)

// splitBase checks a store path basename and returns its hash part.
func splitBase(base string) (string, bool) {
	if len(base) < hashLen+2 || base[hashLen] != '-' || !narinfo.ValidHash(base[:hashLen]) ||
		strings.ContainsAny(base, "/\x00") {
		return "", false
	}
	return base[:hashLen], true
}

// narName is the file name of a NAR under nar/.
func narName(h [32]byte) string { return nixbase32.EncodeToString(h[:]) + ".nar" }

// parseNARName reads a nar/ file name back into its NarHash.
func parseNARName(name string) ([32]byte, bool) {
	var h [32]byte
	s, ok := strings.CutSuffix(name, ".nar")
	if !ok || len(s) != 52 {
		return h, false
	}
	b, err := nixbase32.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

// renderNarInfo writes the narinfo text the mount shows for a store path:
// the record with its signatures, pointing at the uncompressed NAR the mount
// holds under nar/. URL and Compression are not signed, so the signatures
// stay valid.
func renderNarInfo(info *narinfo.Info) []byte {
	out := *info
	out.URL = "nar/" + narName(info.NarHash)
	out.Compression = "none"
	out.FileHash, out.FileSize = "", 0
	return out.Marshal()
}

// pathInfo builds a PathInfo from a parsed narinfo.
func pathInfo(info *narinfo.Info) (*PathInfo, error) {
	if _, ok := splitBase(strings.TrimPrefix(info.StorePath, storeDir)); !ok || !strings.HasPrefix(info.StorePath, storeDir) {
		return nil, fmt.Errorf("narinfo: %w: store path %q", narinfo.ErrBad, info.StorePath)
	}
	return &PathInfo{StorePath: info.StorePath, NarHash: info.NarHash, NarSize: info.NarSize, NarInfo: renderNarInfo(info)}, nil
}
