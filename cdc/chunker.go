// Package cdc cuts NAR streams into content-defined chunks, stores each chunk
// as an independent zstd frame, reassembles byte ranges from a chunk list and
// parses NAR listings.
package cdc

import (
	"errors"
	"fmt"
	"math"
)

// Params are the FastCDC chunker parameters. They decide every chunk boundary,
// so they are recorded in the index and never change for an existing store.
type Params struct {
	Min           int // smallest chunk, except the last one of a stream
	Avg           int // target size; its rounded log2 sets the masks
	Max           int // largest chunk
	Normalization int // FastCDC normalisation level, 0 to 3
}

// DefaultParams are the parameters new stores are created with, chosen from
// the dedup benchmark (see README, "Chunking").
var DefaultParams = Params{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10, Normalization: 2}

// ErrBadParams reports chunker parameters that FastCDC cannot use.
var ErrBadParams = errors.New("invalid chunker parameters")

// Validate checks the parameters against the limits of the algorithm.
func (p Params) Validate() error {
	switch {
	case p.Min < 64 || p.Max > 1<<30:
		return fmt.Errorf("%w: sizes must be within 64 B and 1 GiB (%v)", ErrBadParams, p)
	case !(p.Min < p.Avg && p.Avg < p.Max):
		return fmt.Errorf("%w: need Min < Avg < Max (%v)", ErrBadParams, p)
	case p.Normalization < 0 || p.Normalization > 3:
		return fmt.Errorf("%w: normalization must be 0 to 3 (%v)", ErrBadParams, p)
	}
	return nil
}

// String renders the parameters in the form recorded in the index.
func (p Params) String() string {
	return fmt.Sprintf("fastcdc-gear-jotfs-v1 min=%d avg=%d max=%d norm=%d", p.Min, p.Avg, p.Max, p.Normalization)
}

// Chunker cuts a byte stream written to it into content-defined chunks. It
// holds no shared state, so any number of Chunkers may run concurrently.
type Chunker struct {
	p            Params
	maskS, maskL uint64
	buf          []byte
	emit         func(chunk []byte) error
	err          error
}

// NewChunker returns a Chunker that calls emit with every chunk, in order.
// The slice passed to emit is only valid until emit returns.
func NewChunker(p Params, emit func(chunk []byte) error) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	bits := int(math.Round(math.Log2(float64(p.Avg))))
	return &Chunker{
		p:     p,
		maskS: 1<<(bits+p.Normalization) - 1,
		maskL: 1<<(bits-p.Normalization) - 1,
		buf:   make([]byte, 0, 2*p.Max),
		emit:  emit,
	}, nil
}

// Write buffers b and emits every chunk whose end is now decided.
func (c *Chunker) Write(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := len(b)
	for len(b) > 0 {
		room := cap(c.buf) - len(c.buf)
		take := min(room, len(b))
		c.buf = append(c.buf, b[:take]...)
		b = b[take:]
		if err := c.cut(false); err != nil {
			c.err = err
			return n - len(b), err
		}
	}
	return n, nil
}

// Close emits the remaining bytes as the final chunks.
func (c *Chunker) Close() error {
	if c.err != nil {
		return c.err
	}
	c.err = c.cut(true)
	if c.err == nil {
		c.err = errors.New("chunker closed")
		return nil
	}
	return c.err
}

// cut emits chunks while at least Max bytes are buffered (or, at the end,
// while any are), then moves the rest to the front of the buffer.
func (c *Chunker) cut(final bool) error {
	start := 0
	for {
		rest := c.buf[start:]
		if len(rest) == 0 || (!final && len(rest) < c.p.Max) {
			break
		}
		n := c.boundary(rest)
		if err := c.emit(rest[:n]); err != nil {
			return err
		}
		start += n
	}
	if start > 0 {
		c.buf = c.buf[:copy(c.buf, c.buf[start:])]
	}
	return nil
}

// boundary returns the length of the chunk at the start of data, exactly as
// jotfs/fastcdc-go does with seed 0.
func (c *Chunker) boundary(data []byte) int {
	lo := c.p.Min
	if len(data) <= lo {
		return len(data)
	}
	n := min(len(data), c.p.Max)
	norm := min(n, c.p.Avg)
	maskS, maskL := c.maskS, c.maskL
	var fp uint64
	// Ranging over subslices lets the compiler drop every bounds check.
	if lo < norm {
		for j, b := range data[lo:norm] {
			fp = fp<<1 + gear[b]
			if fp&maskS == 0 {
				return lo + j + 1
			}
		}
		lo = norm
	}
	for j, b := range data[lo:n] {
		fp = fp<<1 + gear[b]
		if fp&maskL == 0 {
			return lo + j + 1
		}
	}
	return n
}
