package cdc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// ChunkRef is one entry of a NAR's chunk list.
type ChunkRef struct {
	ID    ID
	Raw   uint32 // plaintext bytes
	Comp  uint32 // bytes of the stored zstd frame
	Level uint8  // how the frame was made: StoredLevel, or a zstd encoder level
}

// FrameSource returns the stored zstd frame of a chunk, appended to dst.
type FrameSource interface {
	Frame(ctx context.Context, id ID, dst []byte) ([]byte, error)
}

// BatchSource is a FrameSource that can also fetch several frames in one
// go: it appends them to dst in order and returns where each one ends.
type BatchSource interface {
	FrameSource
	Frames(ctx context.Context, ids []ID, dst []byte, ends []int) ([]byte, []int, error)
}

// FrameSender is a FrameSource that can also send frames straight from
// where it keeps them, with no copy through memory when the destination
// is a socket. LocateFrames finds the frames of ids, whose promised
// lengths are want; it stops before the first frame it cannot vouch for.
type FrameSender interface {
	FrameSource
	LocateFrames(ctx context.Context, ids []ID, want []uint32) (FrameRun, error)
}

// PipeWriter is a destination that takes bytes from a pipe without
// copying them through this process: a socket. A .nar.zst copy to one
// sends the frames straight from a FrameSender's files.
type PipeWriter interface {
	io.Writer
	// SpliceFrom moves n bytes from the read end of a pipe to the
	// destination.
	SpliceFrom(pipe int, n int) (int, error)
}

// FrameRun is a run of located frames, ready to send.
type FrameRun interface {
	// Len is how many frames were located: the first Len of those asked.
	Len() int
	// Send writes bytes [skip, skip+n) of the located frames, back to
	// back, to w, stopping at the end of the located ones.
	Send(w io.Writer, skip, n int64) (int64, error)
	// Close releases what the run holds open.
	Close() error
}

// sendBytes is about how many frame bytes a .nar.zst copy to a socket
// locates and sends at once.
const sendBytes = 4 << 20

// batchBytes is about how many frame bytes a .nar.zst copy fetches and
// writes at once: few large writes instead of one per frame.
const batchBytes = 256 << 10

var (
	// ErrRange reports a byte range outside the NAR.
	ErrRange = errors.New("range outside the NAR")
	// ErrFrameChanged reports a stored frame that is no longer the one whose
	// size a .nar.zst response promised.
	ErrFrameChanged = errors.New("stored frame changed")
)

// NAR reassembles a NAR from its chunk list. It answers ReadAt for any byte
// range of the raw NAR, and copies ranges of stored frames unchanged, which
// together form a valid .nar.zst stream.
type NAR struct {
	chunks  []ChunkRef
	rawEnd  []int64 // rawEnd[i] is the raw offset just past chunk i
	compEnd []int64 // compEnd[i] is the compressed offset just past chunk i
	src     FrameSource
	codec   *Codec

	// Window is how many chunks a sequential range read fetches and decodes
	// ahead, in parallel.
	Window int

	mu      sync.Mutex
	lastIdx int // chunk held in lastBuf, or -1
	lastBuf []byte

	frames sync.Pool // *[]byte scratch for fetched frames
	plains sync.Pool // *[]byte for decoded chunks handed through ordered
}

// NewNAR returns a reader over chunks, fetching frames from src.
func NewNAR(chunks []ChunkRef, src FrameSource, codec *Codec) *NAR {
	n := &NAR{chunks: chunks, src: src, codec: codec, Window: 8, lastIdx: -1,
		rawEnd: make([]int64, len(chunks)), compEnd: make([]int64, len(chunks))}
	var raw, comp int64
	for i, c := range chunks {
		raw += int64(c.Raw)
		comp += int64(c.Comp)
		n.rawEnd[i], n.compEnd[i] = raw, comp
	}
	return n
}

// Size is the NAR's raw length.
func (n *NAR) Size() int64 { return last(n.rawEnd) }

// CompressedSize is the length of the .nar.zst stream.
func (n *NAR) CompressedSize() int64 { return last(n.compEnd) }

// Chunks returns the chunk list.
func (n *NAR) Chunks() []ChunkRef { return n.chunks }

func last(s []int64) int64 {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// locate returns the chunk holding byte off of a stream with the given end
// offsets, and off's position inside it.
func locate(ends []int64, off int64) (int, int64) {
	i := sort.Search(len(ends), func(i int) bool { return ends[i] > off })
	start := int64(0)
	if i > 0 {
		start = ends[i-1]
	}
	return i, off - start
}

// chunk fetches and decodes chunk i, appending its plaintext to dst.
func (n *NAR) chunk(ctx context.Context, i int, dst []byte) ([]byte, error) {
	c := n.chunks[i]
	// The frame may have been recompressed since the NAR was opened: its
	// plaintext is the same, so any stored frame of this chunk will do.
	fb := n.scratch(&n.frames, int(c.Comp))
	defer n.frames.Put(fb)
	frame, err := n.src.Frame(ctx, c.ID, (*fb)[:0])
	if err != nil {
		return dst, fmt.Errorf("read chunk %d (%s): %w", i, c.ID, err)
	}
	*fb = frame
	out, err := n.codec.Decompress(dst, frame, int(c.Raw))
	if err != nil {
		return dst, fmt.Errorf("read chunk %d (%s): %w", i, c.ID, err)
	}
	return out, nil
}

// scratch returns a pooled buffer with room for at least size bytes.
func (n *NAR) scratch(pool *sync.Pool, size int) *[]byte {
	b, _ := pool.Get().(*[]byte)
	if b == nil || cap(*b) < size {
		nb := make([]byte, 0, max(size, 64<<10))
		b = &nb
	}
	*b = (*b)[:0]
	return b
}

// ReadAt reads len(p) bytes of the raw NAR from off. It is safe for
// concurrent use; the most recently decoded chunk is kept for the next call.
func (n *NAR) ReadAt(p []byte, off int64) (int, error) {
	return n.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context for the chunk fetches.
func (n *NAR) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, ErrRange)
	}
	size := n.Size()
	if off >= size {
		return 0, io.EOF
	}
	done := 0
	for done < len(p) && off < size {
		i, in := locate(n.rawEnd, off)
		buf, err := n.cached(ctx, i)
		if err != nil {
			return done, err
		}
		k := copy(p[done:], buf[in:])
		done += k
		off += int64(k)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// cached returns chunk i's plaintext, decoding it unless it is the last one
// decoded. The returned slice is owned by the caller.
func (n *NAR) cached(ctx context.Context, i int) ([]byte, error) {
	n.mu.Lock()
	if n.lastIdx == i {
		b := n.lastBuf
		n.mu.Unlock()
		return b, nil
	}
	n.mu.Unlock()
	b, err := n.chunk(ctx, i, make([]byte, 0, n.chunks[i].Raw))
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.lastIdx, n.lastBuf = i, b
	n.mu.Unlock()
	return b, nil
}

// WriteRange writes raw NAR bytes [off, off+length) to w, fetching and
// decoding up to Window chunks ahead in parallel.
func (n *NAR) WriteRange(ctx context.Context, w io.Writer, off, length int64) error {
	if off < 0 || length < 0 || off > n.Size() || length > n.Size()-off {
		return fmt.Errorf("write range %d+%d of %d: %w", off, length, n.Size(), ErrRange)
	}
	if length == 0 {
		return nil
	}
	first, skip := locate(n.rawEnd, off)
	lastIdx, _ := locate(n.rawEnd, off+length-1)
	return n.ordered(ctx, first, lastIdx, func(i int, raw []byte) error {
		if i == first {
			raw = raw[skip:]
		}
		if int64(len(raw)) > length {
			raw = raw[:length]
		}
		length -= int64(len(raw))
		_, err := w.Write(raw)
		return err
	})
}

// ordered decodes chunks first..last with a bounded parallel window and hands
// them to fn in order; the slice fn gets is reused after fn returns. It
// returns only after every decode it started ended.
func (n *NAR) ordered(ctx context.Context, first, last int, fn func(i int, raw []byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	type result struct {
		buf *[]byte
		err error
	}
	slots := make(chan chan result, max(n.Window, 1))
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(slots)
		for i := first; i <= last; i++ {
			ch := make(chan result, 1)
			select {
			case slots <- ch:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				b := n.scratch(&n.plains, int(n.chunks[i].Raw))
				out, err := n.chunk(ctx, i, *b)
				*b = out
				ch <- result{b, err}
			}(i)
		}
	}()
	i := first
	for ch := range slots {
		r := <-ch
		if r.err != nil {
			return r.err
		}
		err := fn(i, *r.buf)
		n.plains.Put(r.buf)
		if err != nil {
			return err
		}
		i++
	}
	if i <= last {
		return ctx.Err()
	}
	return nil
}

// WriteFrames writes the stored frames of chunks [first, last] to w, back to
// back and unchanged: a plain copy of that part of the .nar.zst stream.
func (n *NAR) WriteFrames(ctx context.Context, w io.Writer, first, last int) (int64, error) {
	if first < 0 || last >= len(n.chunks) || first > last+1 {
		return 0, fmt.Errorf("write frames %d..%d of %d: %w", first, last, len(n.chunks), ErrRange)
	}
	return n.WriteCompressedRange(ctx, w, n.compStart(first), n.compStart(last+1)-n.compStart(first))
}

func (n *NAR) compStart(i int) int64 {
	if i == 0 {
		return 0
	}
	return n.compEnd[i-1]
}

// WriteCompressedRange writes bytes [off, off+length) of the .nar.zst stream
// to w, copying stored frames without decoding them.
func (n *NAR) WriteCompressedRange(ctx context.Context, w io.Writer, off, length int64) (int64, error) {
	r, err := n.CompressedReader(ctx, off, length)
	if err != nil {
		return 0, fmt.Errorf("write %w", err)
	}
	return r.(io.WriterTo).WriteTo(w)
}

// promised rebuilds the frame a response promised when the stored one has
// since been replaced. Only stored-block frames are ever replaced, and
// those are a pure function of the plaintext.
func (n *NAR) promised(c ChunkRef, current []byte) ([]byte, error) {
	if c.Level != StoredLevel && c.Level != IncompressibleLevel {
		return nil, fmt.Errorf("%w: %d bytes, promised %d", ErrFrameChanged, len(current), c.Comp)
	}
	raw, err := n.codec.Decompress(nil, current, int(c.Raw))
	if err != nil {
		return nil, err
	}
	frame := Store(nil, raw)
	if len(frame) != int(c.Comp) {
		return nil, fmt.Errorf("%w: rebuilt %d bytes, promised %d", ErrFrameChanged, len(frame), c.Comp)
	}
	return frame, nil
}

// Reader returns a sequential reader of raw NAR bytes [off, off+length),
// decoding ahead in parallel like WriteRange. Close it to stop early.
func (n *NAR) Reader(ctx context.Context, off, length int64) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(n.WriteRange(ctx, pw, off, length)) }()
	return pr
}

// CompressedReader returns a sequential reader of bytes [off, off+length) of
// the .nar.zst stream, fetching one stored frame at a time.
func (n *NAR) CompressedReader(ctx context.Context, off, length int64) (io.Reader, error) {
	if off < 0 || length < 0 || off > n.CompressedSize() || length > n.CompressedSize()-off {
		return nil, fmt.Errorf("compressed range %d+%d of %d: %w", off, length, n.CompressedSize(), ErrRange)
	}
	return &frameReader{n: n, ctx: ctx, off: off, left: length}, nil
}

type frameReader struct {
	n    *NAR
	ctx  context.Context
	off  int64 // stream offset of the next byte to hand out
	left int64
	buf  []byte // the current frame
	pos  int    // next byte of buf

	// For batched copies.
	ids  []ID
	ends []int
}

// send writes frames from r.off on with the source's LocateFrames, about
// sendBytes at a time. It returns when the range is done, or at a frame
// the source could not locate, which the caller then copies.
func (r *frameReader) send(w io.Writer, fs FrameSender) (int64, error) {
	var written int64
	for r.left > 0 {
		first, in := locate(r.n.compEnd, r.off)
		var ids []ID
		var want []uint32
		var size int64
		for i := first; i < len(r.n.chunks) && size-in < min(sendBytes, r.left); i++ {
			ids = append(ids, r.n.chunks[i].ID)
			want = append(want, r.n.chunks[i].Comp)
			size += int64(r.n.chunks[i].Comp)
		}
		n := min(size-in, r.left)
		run, err := fs.LocateFrames(r.ctx, ids, want)
		if err != nil {
			return written, err
		}
		k, err := run.Send(w, in, n)
		run.Close()
		written += k
		r.off += k
		r.left -= k
		if err != nil || k < n {
			return written, err
		}
	}
	return written, nil
}

// writeBatched copies the range a batch of frames at a time: one fetch and
// one write per batchBytes. A batch holding a frame that is no longer the
// promised one (recompressed meanwhile) is left to the frame-by-frame
// path, which rebuilds it.
func (r *frameReader) writeBatched(w io.Writer, bs BatchSource) (int64, error) {
	var written int64
	for r.left > 0 {
		first, in := locate(r.n.compEnd, r.off)
		r.ids = r.ids[:0]
		want := 0
		for i := first; i < len(r.n.chunks) && want < batchBytes && r.n.compStart(i) < r.off+r.left; i++ {
			r.ids = append(r.ids, r.n.chunks[i].ID)
			want += int(r.n.chunks[i].Comp)
		}
		var err error
		r.buf, r.ends, err = bs.Frames(r.ctx, r.ids, r.buf[:0], r.ends[:0])
		if err != nil {
			return written, fmt.Errorf("read frames %d..%d: %w", first, first+len(r.ids)-1, err)
		}
		start := 0
		for k, end := range r.ends {
			if end-start != int(r.n.chunks[first+k].Comp) {
				r.buf, r.pos = r.buf[:0], 0
				return written, nil // a changed frame: go on one by one
			}
			start = end
		}
		part := r.buf[in:]
		if int64(len(part)) > r.left {
			part = part[:r.left]
		}
		k, err := w.Write(part)
		written += int64(k)
		r.off += int64(k)
		r.left -= int64(k)
		if err != nil {
			return written, err
		}
	}
	r.buf, r.pos = r.buf[:0], 0
	return written, nil
}

// next returns the unread part of the current frame, fetching the next
// frame when the current one is used up.
func (r *frameReader) next() ([]byte, error) {
	if r.pos == len(r.buf) {
		i, in := locate(r.n.compEnd, r.off)
		c := r.n.chunks[i]
		frame, err := r.n.src.Frame(r.ctx, c.ID, r.buf[:0])
		if err != nil {
			return nil, fmt.Errorf("read frame %d (%s): %w", i, c.ID, err)
		}
		if len(frame) != int(c.Comp) {
			if frame, err = r.n.promised(c, frame); err != nil {
				return nil, fmt.Errorf("read frame %d (%s): %w", i, c.ID, err)
			}
		}
		r.buf, r.pos = frame, int(in)
	}
	part := r.buf[r.pos:]
	if int64(len(part)) > r.left {
		part = part[:r.left]
	}
	return part, nil
}

// sendAll writes the rest of the range from the source's files, copying
// one frame the other way wherever a run stops short. It returns early,
// with the range not done, when the source locates nothing at all.
func (r *frameReader) sendAll(w io.Writer, fs FrameSender) (int64, error) {
	var written int64
	for r.left > 0 {
		if r.pos == len(r.buf) {
			k, err := r.send(w, fs)
			written += k
			if err != nil || r.left == 0 || k == 0 {
				return written, err
			}
		}
		// The frame a run stopped at, or the rest of a partly sent one.
		k, err := r.writePart(w)
		written += k
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// writePart writes the unread part of the current frame to w, fetching
// the next frame first when the current one is used up.
func (r *frameReader) writePart(w io.Writer) (int64, error) {
	part, err := r.next()
	if err != nil {
		return 0, err
	}
	k, err := w.Write(part)
	r.advance(k)
	return int64(k), err
}

func (r *frameReader) advance(k int) {
	r.pos += k
	r.off += int64(k)
	r.left -= int64(k)
}

func (r *frameReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	part, err := r.next()
	if err != nil {
		return 0, err
	}
	k := copy(p, part)
	r.advance(k)
	return k, nil
}

// WriteTo writes the rest of the range to w: straight from the source's
// files when w is a socket, else a batch of frames per write when the
// source can fetch batches, else frame by frame.
func (r *frameReader) WriteTo(w io.Writer) (int64, error) {
	var written int64
	if fs, ok := r.n.src.(FrameSender); ok {
		if _, ok := w.(PipeWriter); ok {
			n, err := r.sendAll(w, fs)
			written += n
			if err != nil || r.left == 0 {
				return written, err
			}
			// The source located nothing here: copy the rest.
		}
	}
	if bs, ok := r.n.src.(BatchSource); ok && r.pos == len(r.buf) {
		n, err := r.writeBatched(w, bs)
		written += n
		if err != nil {
			return written, err
		}
	}
	for r.left > 0 {
		k, err := r.writePart(w)
		written += k
		if err != nil {
			return written, err
		}
	}
	return written, nil
}
