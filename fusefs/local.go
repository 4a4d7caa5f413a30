package fusefs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/cdc"
)

// Local is the source over a store this process has open: the serving
// appliance's, or a stopped appliance's data directory.
type Local struct {
	store  *appliance.Store
	frames sync.Pool // of *[]byte: frames being decoded
}

// NewLocal returns the source over store.
func NewLocal(store *appliance.Store) *Local { return &Local{store: store} }

var _ Source = (*Local)(nil)

// Paths lists every stored path.
func (l *Local) Paths(ctx context.Context) ([]string, error) {
	var out []string
	err := l.store.Index().ForEachNarInfo(func(n *appliance.NarInfo) error {
		out = append(out, strings.TrimPrefix(n.StorePath, storeDir))
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list paths: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// Path returns a stored path's record.
func (l *Local) Path(ctx context.Context, storeHash string) (*PathInfo, error) {
	r, err := l.store.Index().NarInfo(storeHash)
	if errors.Is(err, appliance.ErrNotFound) {
		return nil, fmt.Errorf("path %s: %w", storeHash, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("path %s: %w", storeHash, err)
	}
	return pathInfo(&narinfo.Info{StorePath: r.StorePath, NarHash: r.NarHash, NarSize: r.NarSize,
		References: r.References, Deriver: r.Deriver, Sigs: r.Sigs, CA: r.CA})
}

// Listing returns the stored listing of a path's NAR, and counts as a use
// of the path for eviction.
func (l *Local) Listing(ctx context.Context, p *PathInfo) ([]byte, error) {
	n, err := l.open(ctx, p.NarHash)
	if err != nil {
		return nil, fmt.Errorf("listing of %s: %w", p.StorePath, err)
	}
	l.store.Touch(p.Hash())
	return n.Listing()
}

// NARSize returns a stored NAR's length.
func (l *Local) NARSize(ctx context.Context, narHash [32]byte) (int64, error) {
	n, err := l.open(ctx, narHash)
	if err != nil {
		return 0, err
	}
	return n.Size(), nil
}

func (l *Local) open(ctx context.Context, narHash [32]byte) (*appliance.NAR, error) {
	n, err := l.store.OpenNAR(ctx, narHash)
	if errors.Is(err, appliance.ErrNotFound) {
		return nil, fmt.Errorf("nar %s: %w", appliance.FormatHash(narHash), ErrNotFound)
	}
	return n, err
}

// OpenNAR returns a stored NAR whose blocks are its chunks: a read decodes
// only the frames it touches, and a chunk shared by several NARs is cached
// once.
func (l *Local) OpenNAR(ctx context.Context, narHash [32]byte, size int64) (NAR, error) {
	n, err := l.open(ctx, narHash)
	if err != nil {
		return nil, err
	}
	if n.Size() != size {
		return nil, fmt.Errorf("nar %s: %d bytes stored, expected %d", appliance.FormatHash(narHash), n.Size(), size)
	}
	c := &chunkedNAR{store: l.store, frames: &l.frames, chunks: n.Manifest.Chunks,
		ends: make([]int64, len(n.Manifest.Chunks)), keys: make([]string, len(n.Manifest.Chunks))}
	var end int64
	for i, ch := range c.chunks {
		end += int64(ch.Raw)
		c.ends[i] = end
		c.keys[i] = string(ch.ID[:])
	}
	return c, nil
}

// chunkedNAR is a stored NAR as blocks: one per chunk.
type chunkedNAR struct {
	store  *appliance.Store
	frames *sync.Pool // the source's frame buffers
	chunks []cdc.ChunkRef
	ends   []int64  // ends[i] is the offset just past chunk i
	keys   []string // keys[i] is chunk i's cache key, made once
}

func (c *chunkedNAR) Size() int64 {
	if len(c.ends) == 0 {
		return 0
	}
	return c.ends[len(c.ends)-1]
}

func (c *chunkedNAR) Blocks() int { return len(c.chunks) }

func (c *chunkedNAR) Block(i int) Block {
	start := int64(0)
	if i > 0 {
		start = c.ends[i-1]
	}
	return Block{Key: c.keys[i], Off: start, Size: int(c.chunks[i].Raw)}
}

func (c *chunkedNAR) Find(off int64) int {
	return sort.Search(len(c.ends), func(i int) bool { return c.ends[i] > off })
}

// decodeSlack is room left past a chunk's plaintext in the buffer it is
// decoded into: zstd decodes with wide copies, 16 bytes at a time, only
// when that many spare bytes follow the output, and falls back to slower
// byte-exact copies in a buffer of exactly the chunk's size.
const decodeSlack = 64

// Load fetches chunk i's frame into a pooled buffer and decodes it; the
// frame's checksum is checked by the decode.
func (c *chunkedNAR) Load(ctx context.Context, i int) ([]byte, error) {
	ch := c.chunks[i]
	buf, _ := c.frames.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer c.frames.Put(buf)
	frame, err := c.store.Frame(ctx, ch.ID, (*buf)[:0])
	*buf = frame
	if err != nil {
		return nil, err
	}
	raw, err := c.store.Codec().Decompress(make([]byte, 0, int(ch.Raw)+decodeSlack), frame, int(ch.Raw))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", ch.ID, err)
	}
	return raw, nil
}
