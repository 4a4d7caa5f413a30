package httpd

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// requestBody is the request's body as a stream, never read whole.
func requestBody(ctx *fasthttp.RequestCtx) io.Reader {
	if r := ctx.RequestBodyStream(); r != nil {
		return r
	}
	return bytes.NewReader(ctx.Request.Body())
}

// abortable is an upload's body whose reads can be cut short: Abort makes
// a read blocked on a stalled client return at once. Once the handler is
// done with the body (finish), Abort does nothing: the connection may be
// serving the next request by then.
type abortable struct {
	io.Reader
	conn     net.Conn
	mu       sync.Mutex
	aborted  bool
	finished bool
}

// Abort ends the body's pending and later reads.
func (a *abortable) Abort() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.finished {
		a.aborted = true
		_ = a.conn.SetReadDeadline(time.Now())
	}
}

// finish ends the body's use and reports whether it was aborted.
func (a *abortable) finish() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.finished = true
	return a.aborted
}

// put answers uploads: NARs, narinfos, listings, build logs and
// realisations.
func (s *Server) put(ctx *fasthttp.RequestCtx, r route) {
	c := context.Background()
	body, enc := requestBody(ctx), string(ctx.Request.Header.Peek("Content-Encoding"))
	var err error
	aborted := false
	switch r.kind {
	case kindNAR, kindUpload:
		if ctx.RequestBodyStream() == nil { // read whole already
			_, err = s.svc.UploadNAR(c, r.name, body, enc)
			break
		}
		ab := &abortable{Reader: body, conn: ctx.Conn()}
		_, err = s.svc.UploadNAR(c, r.name, ab, enc)
		aborted = ab.finish()
	case kindNarInfo:
		err = s.svc.PutNarInfo(c, r.hash, body, enc)
	case kindListing:
		// cairn makes its own listing from the NAR; the client's is read
		// and dropped.
		_, err = io.Copy(io.Discard, io.LimitReader(body, 256<<20))
	case kindLog:
		err = s.svc.PutLog(c, r.hash, body, enc)
	case kindRealisation:
		err = s.svc.PutRealisation(c, r.name, body, enc)
	default:
		fail(ctx, fasthttp.StatusMethodNotAllowed, "PUT is not allowed here")
		return
	}
	if err != nil {
		s.error(ctx, "upload "+r.name, err)
		if aborted {
			ctx.SetConnectionClose() // the rest of the body is not read
		}
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// delete answers DELETE of a narinfo.
func (s *Server) delete(ctx *fasthttp.RequestCtx, r route) {
	if r.kind != kindNarInfo {
		fail(ctx, fasthttp.StatusMethodNotAllowed, "only narinfos can be deleted")
		return
	}
	if err := s.svc.DeleteNarInfo(context.Background(), r.hash); err != nil {
		s.error(ctx, "delete "+r.hash, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// document answers GET of a build log or a realisation.
func (s *Server) document(ctx *fasthttp.RequestCtx, r route) {
	var b []byte
	var err error
	if r.kind == kindLog {
		b, err = s.svc.Log(r.hash)
		ctx.SetContentType("text/plain; charset=utf-8")
	} else {
		b, err = s.svc.Realisation(r.name)
		ctx.SetContentType("application/json")
	}
	if err != nil {
		s.error(ctx, r.name, err)
		return
	}
	ctx.SetBody(b)
}

// uploaded answers HEAD of a NAR by the name it was uploaded under, as
// nix copy asks before uploading; its bytes are served only under its
// NarHash, so a GET of that name is 404.
func (s *Server) uploaded(ctx *fasthttp.RequestCtx, r route) {
	if !ctx.IsHead() || !s.svc.Uploaded(r.name) {
		fail(ctx, fasthttp.StatusNotFound, r.name+": not found")
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}
