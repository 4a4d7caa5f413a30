package cdc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"

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
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// NewCodec returns a Codec that compresses at level.
func NewCodec(level Level) (*Codec, error) {
	n := runtime.GOMAXPROCS(0)
	// Every frame is one block of at most Max bytes: a window larger than the
	// chunk buys nothing, and a small one keeps encoder state cheap.
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(n),
		zstd.WithEncoderCRC(true),
		zstd.WithZeroFrames(true),
		zstd.WithWindowSize(1<<20),
	)
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
	return &Codec{enc: enc, dec: dec}, nil
}

// Compress appends one zstd frame holding raw to dst. The frame carries its
// content size and an xxhash checksum, which every decode checks.
func (c *Codec) Compress(dst, raw []byte) []byte { return c.enc.EncodeAll(raw, dst) }

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
	c.enc.Close()
	c.dec.Close()
}
