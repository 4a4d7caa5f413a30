package httpd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/valyala/fasthttp"

	"cairn/appliance"
)

// nar answers GET and HEAD of /nar/<narhash>.nar[.zst]: from the store
// with Range support, or following an ingest that is still running.
func (s *Server) nar(ctx *fasthttp.RequestCtx, r route) *body {
	// fasthttp's request context ends only at shutdown; a client that goes
	// away is noticed by the failing write, which closes the body.
	c, cancel := context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			cancel()
		}
	}()
	what := "nar " + nixbase32.EncodeToString(r.narHash[:])
	src, err := s.svc.OpenNAR(c, r.narHash)
	if errors.Is(err, appliance.ErrNotFound) && s.svc.Uploaded(r.name) {
		s.uploaded(ctx, r) // named by its file hash, as Nix uploads it
		return nil
	}
	if err != nil {
		s.error(ctx, what, err)
		return nil
	}
	h := &ctx.Response.Header
	h.Set("Accept-Ranges", "bytes")
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.zst {
		h.SetContentType("application/zstd")
	} else {
		h.SetContentType("application/x-nix-nar")
	}
	etag := `"` + nixbase32.EncodeToString(r.narHash[:])
	if !r.zst {
		h.Set("ETag", etag+`"`) // the raw NAR never changes
	}
	if src.Live != nil {
		if len(ctx.Request.Header.Peek("Range")) == 0 {
			return s.follow(ctx, r, src.Live, c, cancel, &ok)
		}
		// A range needs the final frame sizes: wait for the commit, or
		// until the client hangs up.
		stop := watchGone(ctx.Conn(), cancel, goneEvery)
		n, err := s.svc.WaitNAR(c, r.narHash)
		stop()
		if errors.Is(err, context.Canceled) && c.Err() != nil {
			ctx.SetConnectionClose()
			ctx.SetStatusCode(statusClientGone)
			return nil
		}
		if err != nil {
			s.error(ctx, what, err)
			return nil
		}
		src.Stored = n
	}
	n := src.Stored
	size := n.Size()
	if r.zst {
		// The frames' bytes change when they are recompressed.
		size = n.CompressedSize()
		h.Set("ETag", etag+"-"+strconv.FormatInt(size, 36)+`"`)
	}
	off, length, status := size, int64(0), fasthttp.StatusOK
	if spec := ctx.Request.Header.Peek("Range"); len(spec) > 0 && rangeApplies(ctx, h) {
		var satisfiable bool
		off, length, satisfiable = parseRange(spec, size)
		if !satisfiable {
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			fail(ctx, fasthttp.StatusRequestedRangeNotSatisfiable, "range not satisfiable")
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			return nil
		}
		if length >= 0 {
			status = fasthttp.StatusPartialContent
			h.Set("Content-Range", "bytes "+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+length-1, 10)+"/"+strconv.FormatInt(size, 10))
		}
	}
	if status == fasthttp.StatusOK {
		off, length = 0, size
	}
	ctx.SetStatusCode(status)
	if ctx.IsHead() {
		h.SetContentLength(int(length))
		return nil
	}
	var rd io.Reader
	var closer io.Closer
	if r.zst {
		rd, err = n.CompressedReader(c, off, length)
		if err != nil {
			s.error(ctx, what, err)
			return nil
		}
	} else {
		rc := n.Reader(c, off, length)
		rd, closer = rc, rc
	}
	ok = true
	b := s.newBody(ctx, rd, cancel)
	b.closer = closer
	if r.zst && length >= sockMin {
		// Stored frames go from the page cache to the socket directly,
		// after the header: have fasthttp send it first.
		if b.sock = newSockWriter(ctx.Conn(), s.cfg.SendStall); b.sock != nil {
			ctx.Response.ImmediateHeaderFlush = true
		}
	}
	ctx.SetBodyStream(b, int(length))
	return b
}

// follow streams a NAR whose ingest is still running. A .nar.zst has no
// length yet and goes out chunked; a .nar has its NarSize. Either way the
// response completes only once the NAR is committed, and a failed ingest
// cuts it.
func (s *Server) follow(ctx *fasthttp.RequestCtx, r route, live *appliance.Live, c context.Context, cancel context.CancelFunc, ok *bool) *body {
	length := -1
	if !r.zst && live.NarSize() > 0 {
		length = int(live.NarSize())
	}
	if ctx.IsHead() {
		if length >= 0 {
			ctx.Response.Header.SetContentLength(length)
		}
		return nil
	}
	rd := live.Frames(c)
	if !r.zst {
		rd = live.Plain(c)
	}
	*ok = true
	b := s.newBody(ctx, rd, cancel)
	ctx.SetBodyStream(b, length)
	return b
}

// rangeApplies reports whether a Range header is to be honoured: with no
// If-Range, or one naming the response's current ETag. Any other If-Range
// (another or a weak tag, or a date: there is no Last-Modified) asks for
// the whole body instead (RFC 9110, 13.1.5).
func rangeApplies(ctx *fasthttp.RequestCtx, h *fasthttp.ResponseHeader) bool {
	cond := ctx.Request.Header.Peek("If-Range")
	return len(cond) == 0 || bytes.Equal(bytes.TrimSpace(cond), h.Peek("ETag"))
}

// sockMin is the smallest .nar.zst body sent straight to the socket: below
// it, the header's own packet costs more than the copy saves.
const sockMin = 256 << 10

// parseRange reads a single "bytes=" range against size. It returns
// length -1 for a header to ignore (malformed or several ranges: the whole
// body is sent) and satisfiable false for a range past the end.
func parseRange(spec []byte, size int64) (off, length int64, satisfiable bool) {
	v, ok := bytes.CutPrefix(spec, []byte("bytes="))
	if !ok || bytes.IndexByte(v, ',') >= 0 {
		return 0, -1, true
	}
	first, last, ok := bytes.Cut(bytes.TrimSpace(v), []byte("-"))
	if !ok {
		return 0, -1, true
	}
	if len(first) == 0 { // suffix: the last N bytes
		n, err := strconv.ParseInt(string(last), 10, 64)
		if err != nil || n < 0 {
			return 0, -1, true
		}
		if n == 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, n, size > 0
	}
	start, err := strconv.ParseInt(string(first), 10, 64)
	if err != nil || start < 0 {
		return 0, -1, true
	}
	end := size - 1
	if len(last) > 0 {
		if end, err = strconv.ParseInt(string(last), 10, 64); err != nil || end < start {
			return 0, -1, true
		}
		end = min(end, size-1)
	}
	if start >= size {
		return 0, 0, false
	}
	return start, end - start + 1, true
}

// body is a streamed response body. It counts what it sends and writes the
// request's log line when fasthttp closes it, after the last byte or a
// failed write. Each piece it hands on moves the connection's write
// deadline stall ahead, so a client that stops reading is cut, and a slow
// one is not.
type body struct {
	r      io.Reader
	closer io.Closer
	cancel context.CancelFunc
	conn   net.Conn
	stall  time.Duration
	sock   *sockWriter // the client's socket, when the body may bypass fasthttp's buffer
	line   logLine
	n      int64
	err    error
}

// newBody returns a body streaming r to ctx's client.
func (s *Server) newBody(ctx *fasthttp.RequestCtx, r io.Reader, cancel context.CancelFunc) *body {
	return &body{r: r, cancel: cancel, conn: ctx.Conn(), stall: s.cfg.SendStall}
}

// progress moves the write deadline stall ahead of now.
func (b *body) progress() { _ = b.conn.SetWriteDeadline(time.Now().Add(b.stall)) }

func (b *body) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	if n > 0 {
		b.progress()
	}
	return n, err
}

// pieceWriter writes to w in pieces of writePiece bytes and calls before
// ahead of each: a write deadline moved on per piece takes a slow client
// for what it is, not for a stalled one.
type pieceWriter struct {
	w      io.Writer
	before func()
}

func (p pieceWriter) Write(q []byte) (int, error) {
	done := 0
	for done < len(q) {
		p.before()
		k, err := p.w.Write(q[done:min(len(q), done+writePiece)])
		done += k
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writePiece is how many bytes a write hands the connection at a time:
// each piece must move within the stall time.
const writePiece = 64 << 10

// WriteTo lets a frame reader write straight into the connection's buffer,
// or, with sock set, to the socket itself.
func (b *body) WriteTo(w io.Writer) (int64, error) {
	var n int64
	var err error
	if wt, ok := b.r.(io.WriterTo); ok {
		if b.sock != nil {
			w = b.sock // fasthttp flushed the header; nothing else is buffered
		} else {
			w = pieceWriter{w: w, before: b.progress}
		}
		n, err = wt.WriteTo(w)
	} else {
		n, err = io.CopyBuffer(pieceWriter{w: w, before: b.progress}, b.r, make([]byte, 64<<10))
	}
	b.n += n
	if err != nil {
		b.err = err
	}
	return n, err
}

// SupportsBodyWriteTo tells fasthttp that WriteTo does all that Read does,
// so that a chunked body (a NAR still arriving) goes out in WriteTo's
// pieces, not in 4 KiB chunks with a flush after each.
func (b *body) SupportsBodyWriteTo() bool { return true }

func (b *body) Close() error {
	b.cancel()
	if b.closer != nil {
		b.closer.Close()
	}
	b.line.log(b.n, b.err)
	return nil
}
