package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"cairn/cdc"
)

// ErrIngestFailed reports that a NAR being followed while it arrived was
// not committed; the bytes already sent must not be trusted.
var ErrIngestFailed = errors.New("ingest failed")

// liveHold is how many frame bytes a live ingest keeps in memory after
// they are readable from the chunk store, before it lets them go.
const liveHold = 8 << 20

// Live is the growing chunk list of a NAR while its ingest runs, so that
// clients can be sent frames as they are produced.
type Live struct {
	s       *Store
	narHash [32]byte
	narSize uint64 // expected, 0 when unknown

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever entries or done change
	refs    []cdc.ChunkRef
	frames  []*frameBuf // frames[i] is nil once chunk i is readable from the chunk store
	held    int         // bytes in frames
	pruned  int         // frames[:pruned] are all nil
	done    bool
	err     error
}

func newLive(s *Store, narHash [32]byte, narSize uint64) *Live {
	return &Live{s: s, narHash: narHash, narSize: narSize, changed: make(chan struct{})}
}

// NarSize is the NAR's expected length.
func (l *Live) NarSize() uint64 { return l.narSize }

func (l *Live) signal() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// publish appends the next chunk in NAR order. frame is the chunk's new
// frame, or nil when the chunk was already stored; the view takes over the
// caller's hold on it.
func (l *Live) publish(ref cdc.ChunkRef, frame *frameBuf) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refs = append(l.refs, ref)
	l.frames = append(l.frames, frame)
	if frame != nil {
		l.held += len(frame.b)
	}
	for l.held > liveHold && l.pruned < len(l.frames) {
		f := l.frames[l.pruned]
		if f != nil {
			if ok, err := l.s.chunks.Has(l.refs[l.pruned].ID); err != nil || !ok {
				break // not written through yet
			}
			l.held -= len(f.b)
			l.frames[l.pruned] = nil
			f.release()
		}
		l.pruned++
	}
	l.signal()
}

// finish records the ingest's outcome and wakes every follower.
func (l *Live) finish(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done, l.err = true, err
	for _, f := range l.frames[l.pruned:] {
		if f != nil {
			f.release()
		}
	}
	l.frames, l.held = nil, 0
	l.signal()
}

// entry waits until chunk i is known or the ingest has ended. It returns
// ok=false when the ingest ended with fewer chunks; err is then its
// outcome. A frame it returns is held for the caller, who releases it.
func (l *Live) entry(ctx context.Context, i int) (ref cdc.ChunkRef, frame *frameBuf, ok bool, err error) {
	for {
		l.mu.Lock()
		if i < len(l.refs) {
			ref, err = l.refs[i], l.err
			if i < len(l.frames) && err == nil {
				frame = l.frames[i]
				if frame != nil {
					frame.hold() // under mu, while the view still holds it
				}
			}
			l.mu.Unlock()
			if err != nil {
				return ref, nil, false, err
			}
			return ref, frame, true, nil
		}
		if l.done {
			err = l.err
			l.mu.Unlock()
			return ref, nil, false, err
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return ref, nil, false, ctx.Err()
		case <-ch:
		}
	}
}

// Wait blocks until the ingest ends and returns its outcome.
func (l *Live) Wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		done, err, ch := l.done, l.err, l.changed
		l.mu.Unlock()
		if done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Frames returns a reader of the NAR's .nar.zst stream as the ingest
// produces it. It reaches EOF only after the NAR is committed; if the
// ingest fails the reader fails, so a response can be cut short.
func (l *Live) Frames(ctx context.Context) io.Reader {
	return &liveReader{l: l, ctx: ctx}
}

// Plain returns a reader of the raw NAR as the ingest produces it. Its
// final bytes are held back until the NAR is committed, so a reader that
// gets all NarSize bytes got a verified NAR.
func (l *Live) Plain(ctx context.Context) io.Reader {
	return &liveReader{l: l, ctx: ctx, plain: true}
}

type liveReader struct {
	l     *Live
	ctx   context.Context
	plain bool
	next  int
	sent  uint64 // raw bytes handed out
	buf   []byte // what Read hands out: a shared frame, or frame or raw below
	off   int
	held  *frameBuf // the shared frame buf points into, held until buf is used up
	frame []byte    // scratch for frames fetched from the chunk store
	raw   []byte    // scratch for decoded chunks
	err   error
}

func (r *liveReader) Read(p []byte) (int, error) {
	for r.off == len(r.buf) {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.fill()
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// WriteTo writes the rest of the stream to w a chunk at a time, with the
// same outcome as reading it to the end.
func (r *liveReader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		for r.off == len(r.buf) {
			if r.err == io.EOF {
				return n, nil
			}
			if r.err != nil {
				return n, r.err
			}
			r.err = r.fill()
		}
		k, err := w.Write(r.buf[r.off:])
		r.off += k
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// fill loads the next chunk's bytes into buf, or returns io.EOF once the
// ingest is committed.
func (r *liveReader) fill() error {
	r.letGo()
	l := r.l
	ref, shared, ok, err := l.entry(r.ctx, r.next)
	if !ok {
		if err == nil {
			return io.EOF
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w: %s: %w", ErrIngestFailed, FormatHash(l.narHash), err)
	}
	r.next++
	if shared != nil {
		r.held = shared // released by the next fill, however this one ends
	}
	if r.plain && l.narSize != 0 && r.sent+uint64(ref.Raw) >= l.narSize {
		// The last chunk: only a committed NAR may complete a response.
		if err := l.Wait(r.ctx); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrIngestFailed, FormatHash(l.narHash), err)
		}
	}
	var frame []byte
	if shared != nil {
		frame = shared.b
	} else {
		if r.frame, err = l.s.Frame(r.ctx, ref.ID, r.frame[:0]); err != nil {
			return fmt.Errorf("follow %s: %w", FormatHash(l.narHash), err)
		}
		frame = r.frame
	}
	r.sent += uint64(ref.Raw)
	if !r.plain {
		r.buf, r.off = frame, 0
		return nil
	}
	if r.raw, err = l.s.codec.Decompress(r.raw[:0], frame, int(ref.Raw)); err != nil {
		return fmt.Errorf("follow %s: chunk %s: %w", FormatHash(l.narHash), ref.ID, err)
	}
	r.letGo() // decoded: buf no longer points into it
	r.buf, r.off = r.raw, 0
	return nil
}

// letGo releases the shared frame the reader holds, if any.
func (r *liveReader) letGo() {
	if r.held != nil {
		r.held.release()
		r.held = nil
	}
}

// Follow returns the live view of a running ingest of narHash, or nil
// when none is running.
func (s *Store) Follow(narHash [32]byte) *Live {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	if f := s.flights[narHash]; f != nil {
		return f.live
	}
	return nil
}
