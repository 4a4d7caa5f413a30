package httpd

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

// admin answers the admin API under /_cairn/, which needs an admin token.
// Long work streams its progress as JSON lines.
func (s *Server) admin(ctx *fasthttp.RequestCtx, endpoint string) *body {
	switch {
	case endpoint == "stats" && ctx.IsGet():
		s.stats(ctx)
	default:
		fail(ctx, fasthttp.StatusNotFound, "no admin endpoint "+string(ctx.Method())+" /_cairn/"+endpoint)
	}
	return nil
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
	if err != nil {
		s.error(ctx, "stats", err)
		return
	}
	writeJSON(ctx, st)
}
