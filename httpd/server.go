// Package httpd serves the Nix binary cache protocol over fasthttp. Its
// handlers translate HTTP to appliance calls and back and hold no policy.
package httpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/appliance/tokens"
)

// Config is what a Server needs.
type Config struct {
	Service  *appliance.Service
	Priority int          // the Priority cairn advertises in nix-cache-info
	Logger   *slog.Logger // one line per request goes here
	// MaxHeaderBytes bounds a request's header block; larger ones get 431.
	MaxHeaderBytes int
	// AccessLog, when set, receives the one line per request in the
	// logger's text format, written without slog's per-record cost;
	// otherwise the lines go to Logger at info level.
	AccessLog io.Writer
	Tokens    *tokens.Set // accepted tokens; nil accepts none
	ReadAuth  bool        // reads need a read token too
	// SendStall is how long a streamed response may move no byte to its
	// client before it is cut; 0 means DefaultSendStall.
	SendStall time.Duration
}

// DefaultSendStall is Config.SendStall's default.
const DefaultSendStall = time.Minute

// Server is cairn's HTTP front end.
type Server struct {
	cfg       Config
	access    *accessLog
	svc       *appliance.Service
	log       *slog.Logger
	fs        *fasthttp.Server
	cacheInfo []byte
	pubKey    []byte
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 8 << 10
	}
	if cfg.SendStall <= 0 {
		cfg.SendStall = DefaultSendStall
	}
	s := &Server{cfg: cfg, svc: cfg.Service, log: cfg.Logger, access: newAccessLog(cfg.AccessLog, cfg.Logger),
		cacheInfo: fmt.Appendf(nil, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: %d\n", cfg.Priority),
		pubKey:    []byte(cfg.Service.PublicKey() + "\n")}
	s.fs = &fasthttp.Server{
		Handler:            s.handle,
		Name:               "cairn",
		ReadBufferSize:     cfg.MaxHeaderBytes,
		MaxRequestBodySize: 1 << 20, // larger bodies are streamed
		StreamRequestBody:  true,
		ReadTimeout:        time.Minute,
		// Set afresh before each response; a streamed body moves it on
		// with every piece it sends (see body).
		WriteTimeout:                  cfg.SendStall,
		IdleTimeout:                   2 * time.Minute,
		DisablePreParseMultipartForm:  true,
		NoDefaultDate:                 false,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{cfg.Logger},
	}
	return s
}

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.fs.Serve(ln) }

// Shutdown stops accepting connections and waits for open requests, up to
// ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error { return s.fs.ShutdownWithContext(ctx) }

// Handler exposes the request handler, for tests and embedding.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(fmt.Sprintf(format, args...))
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if stream := s.dispatch(ctx); stream != nil {
		stream.line = s.line(ctx, start) // logged when the body ends
		return
	}
	s.line(ctx, start).log(int64(len(ctx.Response.Body())), nil)
}

// dispatch answers a request. A streamed response returns its body, which
// logs the request when it ends.
func (s *Server) dispatch(ctx *fasthttp.RequestCtx) *body {
	r, err := parseRoute(ctx.Request.URI().PathOriginal())
	if err != nil {
		fail(ctx, fasthttp.StatusBadRequest, err.Error())
		return nil
	}
	get, head := ctx.IsGet(), ctx.IsHead()
	if !get && !head && !ctx.IsPut() && !ctx.IsDelete() && !(ctx.IsPost() && r.kind == kindAdmin) {
		ctx.Response.Header.Set("Allow", "GET, HEAD, PUT, DELETE")
		fail(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed")
		return nil
	}
	if !s.authorize(ctx, r) {
		return nil
	}
	if r.kind == kindAdmin {
		return s.admin(ctx, r.name)
	}
	switch {
	case ctx.IsPut():
		s.put(ctx, r)
		return nil
	case ctx.IsDelete():
		s.delete(ctx, r)
		return nil
	}
	switch r.kind {
	case kindCacheInfo:
		ctx.SetContentType("text/x-nix-cache-info")
		ctx.SetBody(s.cacheInfo)
	case kindPubKey:
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBody(s.pubKey)
	case kindHealth:
		s.health(ctx)
	case kindNarInfo:
		s.narInfo(ctx, r.hash, get)
	case kindListing:
		s.listing(ctx, r.hash)
	case kindNAR:
		return s.nar(ctx, r)
	case kindPaths:
		s.paths(ctx)
	case kindUpload:
		s.uploaded(ctx, r)
	case kindLog, kindRealisation:
		s.document(ctx, r)
	default:
		fail(ctx, fasthttp.StatusNotFound, "no such resource")
	}
	return nil
}

func (s *Server) health(ctx *fasthttp.RequestCtx) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.svc.Health(c); err != nil {
		s.log.Error("health check", "err", err)
		fail(ctx, fasthttp.StatusServiceUnavailable, "unhealthy: "+err.Error())
		return
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString("ok\n")
}

func (s *Server) narInfo(ctx *fasthttp.RequestCtx, hash string, get bool) {
	b, err := s.svc.NarInfo(ctx, hash, get)
	if err != nil {
		s.error(ctx, "narinfo "+hash, err)
		return
	}
	ctx.SetContentType("text/x-nix-narinfo")
	ctx.Response.Header.Set("Cache-Control", "public, max-age=3600")
	etag := strconv.AppendUint([]byte{'"'}, xxh(b), 36)
	ctx.Response.Header.SetBytesV("ETag", append(etag, '"'))
	if match := ctx.Request.Header.Peek("If-None-Match"); len(match) > 0 && string(match) == string(etag)+`"` {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	ctx.SetBody(b)
}

// paths lists every stored path's basename, one per line, for remote
// browsing such as a FUSE mount over HTTP.
func (s *Server) paths(ctx *fasthttp.RequestCtx) {
	paths, err := s.svc.Paths()
	if err != nil {
		s.error(ctx, "paths", err)
		return
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	for _, p := range paths {
		ctx.Response.AppendBodyString(p)
		ctx.Response.AppendBodyString("\n")
	}
}

func (s *Server) listing(ctx *fasthttp.RequestCtx, hash string) {
	b, err := s.svc.Listing(ctx, hash)
	if err != nil {
		s.error(ctx, "listing "+hash, err)
		return
	}
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "public, max-age=31536000, immutable")
	ctx.SetBody(b)
}

// fail answers status with a one-line reason.
func fail(ctx *fasthttp.RequestCtx, status int, reason string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(reason + "\n")
}

// error maps an appliance error to a status: 400 bad input, 404 not here,
// 503 when an upstream could not be asked (Nix retries it, and never
// remembers it as a miss), 500 otherwise.
func (s *Server) error(ctx *fasthttp.RequestCtx, what string, err error) {
	switch {
	case errors.Is(err, narinfo.ErrBad), errors.Is(err, appliance.ErrBadUpload):
		fail(ctx, fasthttp.StatusBadRequest, err.Error())
	case errors.Is(err, appliance.ErrNotFound):
		fail(ctx, fasthttp.StatusNotFound, what+": not found")
		ctx.Response.Header.Set("Cache-Control", "public, max-age=60")
	case errors.Is(err, appliance.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		s.log.Warn(what, "err", err)
		fail(ctx, fasthttp.StatusBadGateway, what+": upstream unavailable")
		ctx.Response.Header.Set("Retry-After", "10")
	default:
		s.log.Error(what, "err", err)
		fail(ctx, fasthttp.StatusInternalServerError, what+": internal error")
	}
}

// logLine is what a request's log line says besides its size and outcome,
// captured while the request is still valid.
type logLine struct {
	access       *accessLog
	method, path string
	status       int
	remote       string
	start        time.Time
}

func (s *Server) line(ctx *fasthttp.RequestCtx, start time.Time) logLine {
	return logLine{access: s.access, method: string(ctx.Method()), path: string(ctx.Request.URI().PathOriginal()),
		status: ctx.Response.StatusCode(), remote: ctx.RemoteIP().String(), start: start}
}

// log writes the request's one line.
func (l logLine) log(size int64, err error) {
	l.access.write(l, size, err)
}
