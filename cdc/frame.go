package cdc

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

// ID addresses a chunk: the SHA-256 of its plaintext.
type ID [sha256.Size]byte

// Sum returns the ID of a chunk's plaintext.
func Sum(raw []byte) ID { return sha256.Sum256(raw) }

// String renders the ID in hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ErrCorrupt reports a stored frame that does not decode to its chunk.
var ErrCorrupt = errors.New("corrupt chunk")

// Level is a zstd encoder level for chunk frames.
type Level = zstd.EncoderLevel

// Codec turns chunks into independent zstd frames and back. It is safe for
// concurrent use; encoders and decoders are pooled inside klauspost/zstd.
type Codec struct {
	enc  *zstd.Encoder
	fast *zstd.Encoder // for metadata written on the ingest path
	dec  *zstd.Decoder
	// idle holds packers that closed Encoders gave back. A libzstd context
	// lives outside the Go heap and only its finalizer frees it, so the
	// Codec keeps a few for reuse rather than leaving one behind per job.
	idle   chan packer
	deltas deltaDecoders
}

// idlePackers is how many idle packers a Codec keeps.
const idlePackers = 2

// NewCodec returns a Codec that compresses at level with up to encoders
// frames at once (0: one per CPU). Each best-level encoder holds tens of
// MiB of tables, so a store that compresses only in its one background
// recompressor wants 1.
func NewCodec(level Level, encoders int) (*Codec, error) {
	n := runtime.GOMAXPROCS(0)
	if encoders <= 0 {
		encoders = n
	}
	enc, err := newFrameEncoder(level, encoders)
	if err != nil {
		return nil, err
	}
	fast, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("new zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(n),
		zstd.WithDecoderMaxMemory(1<<30),
	)
	if err != nil {
		return nil, fmt.Errorf("new zstd decoder: %w", err)
	}
	return &Codec{enc: enc, fast: fast, dec: dec, idle: make(chan packer, idlePackers)}, nil
}

// newFrameEncoder returns the encoder of chunk frames at level, for up to
// encoders frames at once.
func newFrameEncoder(level Level, encoders int) (*zstd.Encoder, error) {
	// Every frame is one block of at most Max bytes: a window larger than the
	// chunk buys nothing, and a small one keeps encoder state cheap.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(encoders),
		zstd.WithEncoderCRC(true),
		zstd.WithZeroFrames(true),
		zstd.WithWindowSize(1<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("new zstd encoder: %w", err)
	}
	return enc, nil
}

// Encoder makes chunk frames at one level, one frame at a time, for work
// that needs compression only, such as a recompression run. At the best
// level a build with cgo packs with libzstd (see EncoderName); every other
// level, and every build without cgo, uses klauspost.
type Encoder struct {
	enc   *zstd.Encoder // when pack is nil
	delta *zstd.Encoder // made by the first CompressDelta, when pack is nil
	level Level
	pack  packer
	home  chan packer // where Close gives pack back
}

// packer makes frames with another zstd implementation than klauspost.
type packer interface {
	pack(dst, raw []byte) ([]byte, error)
	packDelta(dst, raw, base []byte) ([]byte, error)
	close()
}

// NewEncoder returns an Encoder at level. Close it when done.
func (c *Codec) NewEncoder(level Level) (*Encoder, error) {
	if packerName(level) != "" {
		select {
		case p := <-c.idle:
			return &Encoder{pack: p, home: c.idle, level: level}, nil
		default:
			return &Encoder{pack: newPacker(level), home: c.idle, level: level}, nil
		}
	}
	enc, err := newFrameEncoder(level, 1)
	if err != nil {
		return nil, err
	}
	return &Encoder{enc: enc, level: level}, nil
}

// EncoderName names what an Encoder at level makes frames with.
func EncoderName(level Level) string {
	if name := packerName(level); name != "" {
		return name
	}
	return "klauspost " + level.String()
}

// Compress appends one zstd frame holding raw to dst, with content size and
// checksum as Codec.Compress makes them.
func (e *Encoder) Compress(dst, raw []byte) ([]byte, error) {
	if e.pack != nil {
		return e.pack.pack(dst, raw)
	}
	return e.enc.EncodeAll(raw, dst), nil
}

// Close releases the encoder's state, or gives it back to its Codec.
func (e *Encoder) Close() {
	switch {
	case e.pack != nil:
		select {
		case e.home <- e.pack:
		default:
			e.pack.close()
		}
		e.pack = nil
	case e.enc != nil:
		e.enc.Close()
		e.enc = nil
	}
	if e.delta != nil {
		e.delta.Close()
		e.delta = nil
	}
}

// Compress appends one zstd frame holding raw to dst. The frame carries its
// content size and an xxhash checksum, which every decode checks; only the
// frame of an empty raw comes without a checksum (no chunk is empty).
func (c *Codec) Compress(dst, raw []byte) []byte { return c.enc.EncodeAll(raw, dst) }

// Frame levels recorded in ChunkRef.Level besides zstd encoder levels.
const (
	// StoredLevel marks a frame made by Store (raw blocks), waiting to be
	// recompressed.
	StoredLevel = 0
	// IncompressibleLevel marks a Store frame that compression would not
	// make smaller; it stays as it is.
	IncompressibleLevel = 255
)

// storedBlock is the largest block Store writes.
const storedBlock = 128 << 10

// StoredSize is at most how many bytes Store appends for n bytes of plaintext.
func StoredSize(n int) int {
	// Magic, header of at most 9 bytes, 3 bytes per block, the bytes and
	// the checksum.
	return 4 + 9 + 3*max(1, (n+storedBlock-1)/storedBlock) + n + 4
}

// Store appends one zstd frame holding raw in stored (uncompressed) blocks,
// with content size and checksum. It costs a copy and a hash, and it is
// deterministic: the same plaintext always gives the same frame.
func Store(dst, raw []byte) []byte {
	dst = slices.Grow(dst, StoredSize(len(raw))) // one allocation at most
	dst = binary.LittleEndian.AppendUint32(dst, 0xFD2FB528)
	// Frame header: single segment, content checksum, content size field
	// of 1, 2, 4 or 8 bytes.
	n := uint64(len(raw))
	switch {
	case n < 256:
		dst = append(dst, 0x24, byte(n))
	case n < 65536+256:
		dst = append(dst, 0x64)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(n-256))
	case n <= 0xFFFFFFFF:
		dst = append(dst, 0xA4)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	default:
		dst = append(dst, 0xE4)
		dst = binary.LittleEndian.AppendUint64(dst, n)
	}
	rest := raw
	for {
		k := min(len(rest), storedBlock)
		hdr := uint32(k) << 3 // block type 0: raw
		if k == len(rest) {
			hdr |= 1 // last block
		}
		dst = append(dst, byte(hdr), byte(hdr>>8), byte(hdr>>16))
		dst = append(dst, rest[:k]...)
		rest = rest[k:]
		if len(rest) == 0 {
			break
		}
	}
	return binary.LittleEndian.AppendUint32(dst, uint32(xxhash.Sum64(raw)))
}

// CompressFast is Compress at the fastest level, for data written on the
// ingest path where CPU matters more than bytes.
func (c *Codec) CompressFast(dst, raw []byte) []byte { return c.fast.EncodeAll(raw, dst) }

// Decompress appends the plaintext of frame to dst and checks that it is
// rawSize bytes long; a negative rawSize skips that check.
func (c *Codec) Decompress(dst, frame []byte, rawSize int) ([]byte, error) {
	start := len(dst)
	out, err := c.dec.DecodeAll(frame, dst)
	if err != nil {
		return dst, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if got := len(out) - start; rawSize >= 0 && got != rawSize {
		return dst, fmt.Errorf("%w: decoded %d bytes, want %d", ErrCorrupt, got, rawSize)
	}
	return out, nil
}

// Close releases the pooled encoders and decoders.
func (c *Codec) Close() {
drain:
	for {
		select {
		case p := <-c.idle:
			p.close()
		default:
			break drain
		}
	}
	c.enc.Close()
	c.fast.Close()
	c.dec.Close()
}
