package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// body is a response body that fails when a read stalls, when it ends short
// of Content-Length, or when the caller's context ends.
type body struct {
	rc     io.ReadCloser
	ctx    context.Context // the caller's
	reqCtx context.Context // the request's, cancelled with errStalled on a stall
	cancel context.CancelCauseFunc
	stall  time.Duration
	timer  *time.Timer
	left   int64  // bytes still due by Content-Length; <0 when unknown
	size   int64  // Content-Length; <0 when unknown
	key    string // names the body in errors; "" for none
	once   sync.Once
}

func newBody(ctx, reqCtx context.Context, cancel context.CancelCauseFunc, resp *http.Response, stall time.Duration) *body {
	b := &body{
		rc: resp.Body, ctx: ctx, reqCtx: reqCtx, cancel: cancel, stall: stall,
		left: resp.ContentLength, size: resp.ContentLength,
	}
	b.timer = time.AfterFunc(stall, func() { cancel(errStalled) })
	b.timer.Stop()
	return b
}

// Read reads from the body; only time spent waiting inside Read counts toward a stall.
func (b *body) Read(p []byte) (int, error) {
	b.timer.Reset(b.stall)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if b.left >= 0 {
		b.left -= int64(n)
		if err == io.EOF && b.left > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	if err != nil && err != io.EOF {
		err = b.fail(err)
	}
	return n, err
}

func (b *body) fail(err error) error {
	switch {
	case b.ctx.Err() != nil:
		err = b.ctx.Err()
	case context.Cause(b.reqCtx) == errStalled:
		err = fmt.Errorf("%w: no data for %v", ErrUnavailable, b.stall)
	case err == io.ErrUnexpectedEOF:
		err = fmt.Errorf("%w: body shorter than Content-Length %d: %w", ErrUnavailable, b.size, err)
	default:
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if b.key != "" {
		err = fmt.Errorf("read %s: %w", b.key, err)
	}
	return err
}

// Close releases the connection and the request's context.
func (b *body) Close() error {
	b.once.Do(func() {
		b.timer.Stop()
		b.rc.Close()
		b.cancel(nil)
	})
	return nil
}

// fileBody reads a local file and stops when the caller's context ends.
type fileBody struct {
	ctx context.Context
	f   io.ReadCloser
	key string
}

func (b *fileBody) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", b.key, err)
	}
	n, err := b.f.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read %s: %w: %w", b.key, ErrUnavailable, err)
	}
	return n, err
}

func (b *fileBody) Close() error { return b.f.Close() }
