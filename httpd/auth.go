package httpd

import (
	"bytes"
	"encoding/base64"
	"io"

	"github.com/valyala/fasthttp"

	"cairn/appliance/tokens"
)

// role returns what the request's token grants. A token is accepted as the
// password of HTTP Basic auth (any user name, as Nix sends it from netrc)
// and as a Bearer token.
func (s *Server) role(ctx *fasthttp.RequestCtx) tokens.Role {
	h := ctx.Request.Header.Peek("Authorization")
	if len(h) == 0 || s.cfg.Tokens == nil {
		return tokens.None
	}
	if tok, ok := bytes.CutPrefix(h, []byte("Bearer ")); ok {
		return s.cfg.Tokens.Role(bytes.TrimSpace(tok))
	}
	if enc, ok := bytes.CutPrefix(h, []byte("Basic ")); ok {
		dec := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
		n, err := base64.StdEncoding.Decode(dec, bytes.TrimSpace(enc))
		if err != nil {
			return tokens.None
		}
		if _, pass, ok := bytes.Cut(dec[:n], []byte(":")); ok {
			return s.cfg.Tokens.Role(pass)
		}
	}
	return tokens.None
}

// needed is the role a request needs: writes need write, deletes admin,
// and reads need read only with --read-auth. The cache's identity
// (nix-cache-info, pubkey) and health are always open.
func (s *Server) needed(ctx *fasthttp.RequestCtx, r route) tokens.Role {
	switch {
	case r.kind == kindAdmin:
		return tokens.Admin
	case ctx.IsPut():
		return tokens.Write
	case ctx.IsDelete():
		return tokens.Admin
	}
	switch r.kind {
	case kindCacheInfo, kindPubKey, kindHealth:
		return tokens.None
	}
	if s.cfg.ReadAuth {
		return tokens.Read
	}
	return tokens.None
}

// authorize answers 401 or 403 and returns false when the request lacks
// the role it needs.
func (s *Server) authorize(ctx *fasthttp.RequestCtx, r route) bool {
	need := s.needed(ctx, r)
	if need == tokens.None {
		return true
	}
	have := s.role(ctx)
	if have >= need {
		return true
	}
	drainRefused(ctx)
	switch {
	case have == tokens.None:
		reason := "a " + need.String() + " token is needed"
		if s.cfg.Tokens.Len() == 0 {
			reason += ", and this cairn has none (--tokens-file)"
		}
		fail(ctx, fasthttp.StatusUnauthorized, reason)
		ctx.Response.Header.Set("WWW-Authenticate", `Basic realm="cairn"`)
	default:
		fail(ctx, fasthttp.StatusForbidden, "this token may not "+need.String())
	}
	return false
}

// drainLimit is how much of a refused upload is read, so that a client
// still sending it gets the answer rather than a reset connection.
const drainLimit = 1 << 20

// drainRefused reads a refused request's body up to drainLimit; a longer
// one closes the connection after the answer.
func drainRefused(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPut() && !ctx.IsPost() {
		return
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(requestBody(ctx), drainLimit+1))
	if n > drainLimit {
		ctx.SetConnectionClose()
	}
}
