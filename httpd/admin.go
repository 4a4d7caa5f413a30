package httpd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/valyala/fasthttp"

	"cairn/appliance"
)

// admin answers the admin API under /_cairn/, which needs an admin token.
// Long work streams its progress as JSON lines, the last one carrying the
// result or the error.
func (s *Server) admin(ctx *fasthttp.RequestCtx, endpoint string) *body {
	get, post, del := ctx.IsGet(), ctx.IsPost(), ctx.IsDelete()
	switch {
	case endpoint == "stats" && get:
		s.stats(ctx)
	case endpoint == "pins" && get:
		pins, err := s.svc.Pins()
		s.answer(ctx, "pins", pins, err)
	case endpoint == "pins" && post:
		s.pin(ctx)
	case strings.HasPrefix(endpoint, "pins/") && del:
		err := s.svc.Unpin(strings.TrimPrefix(endpoint, "pins/"))
		s.answer(ctx, "unpin", map[string]bool{"unpinned": err == nil}, err)
	case endpoint == "gc" && post:
		rep, err := s.svc.GC(context.Background())
		s.answer(ctx, "gc", rep, err)
	case endpoint == "evict" && post:
		rep, err := s.svc.Evict(context.Background(), true)
		s.answer(ctx, "evict", rep, err)
	case endpoint == "verify" && post:
		repair := string(ctx.QueryArgs().Peek("repair")) == "1"
		stream(ctx, func(c context.Context, emit func(any)) (any, error) {
			return s.svc.Verify(c, repair, func(ev appliance.VerifyEvent) { emit(ev) })
		})
	default:
		fail(ctx, fasthttp.StatusNotFound, "no admin endpoint "+string(ctx.Method())+" /_cairn/"+endpoint)
	}
	return nil
}

// answer writes v as JSON, or the error as a status.
func (s *Server) answer(ctx *fasthttp.RequestCtx, what string, v any, err error) {
	if errors.Is(err, appliance.ErrBadPath) {
		fail(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		s.error(ctx, what, err)
		return
	}
	writeJSON(ctx, v)
}

// writeJSON answers v as JSON.
func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		fail(ctx, fasthttp.StatusInternalServerError, "encode: "+err.Error())
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

func (s *Server) stats(ctx *fasthttp.RequestCtx) {
	st, err := s.svc.Report()
	s.answer(ctx, "stats", st, err)
}

// pinRequest is the body of POST /_cairn/pins.
type pinRequest struct {
	Paths []string `json:"paths"`
}

func (s *Server) pin(ctx *fasthttp.RequestCtx) {
	var req pinRequest
	b, err := io.ReadAll(io.LimitReader(requestBody(ctx), 1<<20))
	if err != nil || json.Unmarshal(b, &req) != nil || len(req.Paths) == 0 {
		fail(ctx, fasthttp.StatusBadRequest, `want {"paths": ["/nix/store/..."]}`)
		return
	}
	stream(ctx, func(c context.Context, emit func(any)) (any, error) {
		err := s.svc.Pin(c, req.Paths, func(ev appliance.PinEvent) { emit(ev) })
		return map[string]any{"pinned": req.Paths}, err
	})
}

// Final is the last line of a streamed admin response.
type Final struct {
	End    bool   `json:"end"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// stream runs work while sending each event it emits as one JSON line; a
// client that goes away cancels the work.
func stream(ctx *fasthttp.RequestCtx, work func(c context.Context, emit func(any)) (any, error)) {
	ctx.SetContentType("application/x-ndjson")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		c, cancel := context.WithCancel(context.Background())
		defer cancel()
		enc := json.NewEncoder(w)
		emit := func(v any) {
			if enc.Encode(v) != nil || w.Flush() != nil {
				cancel()
			}
		}
		res, err := work(c, emit)
		f := Final{End: true, Result: res}
		if err != nil {
			f.Error = err.Error()
		}
		emit(f)
	})
}
