package seed

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"sync"

	"cairn/appliance"
)

// narCheck checks a compressed NAR as it is written to it: it decodes the
// bytes in its own goroutine and compares the plaintext's sha256 and
// length with the expected NarHash and NarSize. It also hashes the
// compressed bytes, which is the file's sha256.
type narCheck struct {
	pw      *io.PipeWriter
	file    hash.Hash
	written int64
	done    chan error
	failed  bool // the check ended early; later bytes only count
	once    sync.Once
	err     error
}

// newNARCheck starts checking a NAR in compression comp against narHash
// and narSize.
func newNARCheck(ctx context.Context, comp appliance.Compression, narHash [32]byte, narSize uint64) *narCheck {
	pr, pw := io.Pipe()
	c := &narCheck{pw: pw, file: sha256.New(), done: make(chan error, 1)}
	go func() {
		err := checkPlain(ctx, comp, pr, narHash, narSize)
		if err == nil {
			_, err = io.Copy(io.Discard, pr) // what a decoder left unread
		}
		pr.CloseWithError(err) // a failed check fails the next Write
		c.done <- err
	}()
	return c
}

// checkPlain decodes r and compares the plaintext with narHash and narSize.
func checkPlain(ctx context.Context, comp appliance.Compression, r io.Reader, narHash [32]byte, narSize uint64) error {
	plain, err := appliance.Decompress(ctx, comp, r)
	if err != nil {
		return fmt.Errorf("%w: %w", appliance.ErrBadBody, err)
	}
	defer plain.Close()
	h := newAsyncHash()
	n, err := io.CopyBuffer(h, io.LimitReader(plain, int64(narSize)+1), make([]byte, asyncBlock))
	got := h.sum()
	if err != nil {
		return fmt.Errorf("%w: %w", appliance.ErrBadBody, err)
	}
	if uint64(n) > narSize {
		return fmt.Errorf("%w: longer than NarSize %d", appliance.ErrSizeMismatch, narSize)
	}
	if uint64(n) < narSize {
		return fmt.Errorf("%w: %d bytes, NarSize is %d", appliance.ErrSizeMismatch, n, narSize)
	}
	if got != narHash {
		return fmt.Errorf("%w: plaintext is %s, NarHash is %s", appliance.ErrHashMismatch, appliance.FormatHash(got), appliance.FormatHash(narHash))
	}
	return nil
}

// asyncHash is a sha256 that hashes in its own goroutine what is written
// to it, so that decoding and hashing a NAR take two cores.
type asyncHash struct {
	full chan []byte
	free chan []byte
	done chan [32]byte
}

// asyncBlock is the size of the blocks handed to the hashing goroutine.
const asyncBlock = 256 << 10

func newAsyncHash() *asyncHash {
	a := &asyncHash{full: make(chan []byte, 4), free: make(chan []byte, 4), done: make(chan [32]byte, 1)}
	for range cap(a.free) {
		a.free <- make([]byte, asyncBlock)
	}
	go func() {
		h := sha256.New()
		for b := range a.full {
			h.Write(b)
			a.free <- b[:cap(b)]
		}
		var sum [32]byte
		h.Sum(sum[:0])
		a.done <- sum
	}()
	return a
}

// Write hands a copy of p to the hashing goroutine.
func (a *asyncHash) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := <-a.free
		k := copy(b, p)
		a.full <- b[:k]
		p = p[k:]
	}
	return n, nil
}

// sum ends the input and returns the hash; call it once.
func (a *asyncHash) sum() [32]byte {
	close(a.full)
	return <-a.done
}

// Write feeds compressed bytes to the check. It never fails: Close
// returns the verdict.
func (c *narCheck) Write(p []byte) (int, error) {
	c.file.Write(p)
	c.written += int64(len(p))
	if !c.failed {
		if _, err := c.pw.Write(p); err != nil {
			c.failed = true
		}
	}
	return len(p), nil
}

// Close ends the input and returns the check's verdict.
func (c *narCheck) Close() error {
	c.once.Do(func() {
		c.pw.Close()
		c.err = <-c.done
	})
	return c.err
}

// sum is the sha256 of the bytes written, once Close returned.
func (c *narCheck) sum() [32]byte {
	var s [32]byte
	c.file.Sum(s[:0])
	return s
}

// checkNARFile reads a NAR file and checks it against narHash and
// narSize, counting the bytes into p. It returns the file's sha256 and
// size.
func checkNARFile(ctx context.Context, r io.Reader, comp appliance.Compression, narHash [32]byte, narSize uint64, p Progress) ([32]byte, int64, error) {
	c := newNARCheck(ctx, comp, narHash, narSize)
	_, err := io.CopyBuffer(io.MultiWriter(c, counter{p}), ctxReader{ctx, r}, make([]byte, 1<<20))
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return c.sum(), c.written, err
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

// Read fails once the context ended.
func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
