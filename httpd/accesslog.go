package httpd

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// accessLog writes one line per request. With a writer it formats the
// line itself, in slog's text format, into a pooled buffer: at tens of
// thousands of requests a second, slog's generic path costs a tenth of a
// request. Without one the line goes through the logger.
type accessLog struct {
	w    io.Writer
	mu   sync.Mutex
	log  *slog.Logger
	bufs sync.Pool
}

func newAccessLog(w io.Writer, log *slog.Logger) *accessLog {
	return &accessLog{w: w, log: log}
}

func (a *accessLog) write(l logLine, size int64, err error) {
	d := time.Since(l.start)
	if a.w == nil {
		attrs := []slog.Attr{slog.String("method", l.method), slog.String("path", l.path),
			slog.Int("status", l.status), slog.Int64("bytes", size), slog.Duration("duration", d),
			slog.String("remote", l.remote)}
		level := slog.LevelInfo
		if err != nil {
			attrs, level = append(attrs, slog.String("err", err.Error())), slog.LevelWarn
		}
		a.log.LogAttrs(context.Background(), level, "request", attrs...)
		return
	}
	bp, _ := a.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 256)
		bp = &b
	}
	b := append((*bp)[:0], "time="...)
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	if err != nil {
		b = append(b, " level=WARN msg=request method="...)
	} else {
		b = append(b, " level=INFO msg=request method="...)
	}
	b = appendValue(b, l.method)
	b = append(b, " path="...)
	b = appendValue(b, l.path)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(l.status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, size, 10)
	b = append(b, " duration="...)
	b = append(b, d.String()...)
	b = append(b, " remote="...)
	b = appendValue(b, l.remote)
	if err != nil {
		b = append(b, " err="...)
		b = appendValue(b, err.Error())
	}
	b = append(b, '\n')
	a.mu.Lock()
	a.w.Write(b)
	a.mu.Unlock()
	*bp = b
	a.bufs.Put(bp)
}

// appendValue appends v bare when it needs no quoting, as slog's text
// handler does, and quoted otherwise.
func appendValue(b []byte, v string) []byte {
	if v == "" {
		return append(b, `""`...)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\' {
			return strconv.AppendQuote(b, v)
		}
	}
	return append(b, v...)
}
