package cdc

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// DeltaLevel marks a chunk stored as a delta: a zstd frame compressed with
// another chunk's plaintext (its base) as a raw-content prefix, as
// `zstd --patch-from` makes them. Such a frame does not decode on its own,
// so it is never sent as it is: a .nar.zst carries the chunk's Store
// frame, rebuilt from the plaintext, and ChunkRef.Comp is that frame's size.
const DeltaLevel = 254

// deltaMagic opens a stored delta: a zstd skippable frame (magic
// 0x184D2A50 to 0x184D2A5F) whose payload is the base's ID. A decoder that
// knows nothing of deltas skips it and then fails on the frame after it,
// for want of the base.
const deltaMagic = 0x184D2A5D

// deltaHeader is the size of a stored delta's skippable frame.
const deltaHeader = 8 + len(ID{})

// AppendDelta appends a stored delta: the skippable frame naming base,
// then frame, made by Encoder.CompressDelta.
func AppendDelta(dst []byte, base ID, frame []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, deltaMagic)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(base)))
	dst = append(dst, base[:]...)
	return append(dst, frame...)
}

// ParseDelta reports whether a stored value is a delta and, if so, returns
// its base and its zstd frame.
func ParseDelta(v []byte) (base ID, frame []byte, ok bool) {
	if len(v) < deltaHeader || binary.LittleEndian.Uint32(v) != deltaMagic ||
		binary.LittleEndian.Uint32(v[4:]) != uint32(len(base)) {
		return base, nil, false
	}
	copy(base[:], v[8:deltaHeader])
	return base, v[deltaHeader:], true
}

// deltaDecoders pools single-threaded decoders for delta frames: each
// decode installs its own base as the dictionary.
type deltaDecoders struct{ pool sync.Pool }

// DecompressDelta appends the plaintext of a delta frame, given its base's
// plaintext, to dst and checks that it is rawSize bytes long (a negative
// rawSize skips that check). The frame's checksum is checked as always.
func (c *Codec) DecompressDelta(dst, frame, base []byte, rawSize int) ([]byte, error) {
	d, _ := c.deltas.pool.Get().(*zstd.Decoder)
	if d == nil {
		var err error
		d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return dst, fmt.Errorf("new zstd decoder: %w", err)
		}
	}
	defer c.deltas.pool.Put(d)
	if err := d.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, base)); err != nil {
		return dst, fmt.Errorf("delta decoder: %w", err)
	}
	start := len(dst)
	out, err := d.DecodeAll(frame, dst)
	if err != nil {
		return dst, fmt.Errorf("%w: delta frame: %v", ErrCorrupt, err)
	}
	if got := len(out) - start; rawSize >= 0 && got != rawSize {
		return dst, fmt.Errorf("%w: delta decoded %d bytes, want %d", ErrCorrupt, got, rawSize)
	}
	return out, nil
}

// CompressDelta returns a zstd frame of raw compressed with base as a
// raw-content prefix, with content size and checksum: at libzstd level 12
// where the Encoder packs with libzstd, else at the Encoder's level. Only
// DecompressDelta with the same base decodes it.
func (e *Encoder) CompressDelta(dst, raw, base []byte) ([]byte, error) {
	if e.pack != nil {
		return e.pack.packDelta(dst, raw, base)
	}
	if e.delta == nil {
		d, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(e.level),
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(true),
			zstd.WithZeroFrames(true),
			zstd.WithWindowSize(1<<20),
			zstd.WithEncoderDictRaw(0, base))
		if err != nil {
			return dst, fmt.Errorf("new zstd delta encoder: %w", err)
		}
		e.delta = d
	} else if err := e.delta.ResetWithOptions(nil, zstd.WithEncoderDictRaw(0, base)); err != nil {
		return dst, fmt.Errorf("zstd delta encoder: %w", err)
	}
	return e.delta.EncodeAll(raw, dst), nil
}
