package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const userAgent = "cairn"

var (
	errHeaderTimeout = errors.New("header timeout")
	errStalled       = errors.New("body stalled")
)

// transientError marks an error worth retrying.
type transientError struct{ err error }

func (t *transientError) Error() string { return t.err.Error() }
func (t *transientError) Unwrap() error { return t.err }

func transient(err error) error { return &transientError{err} }

// retry runs attempt until it succeeds, fails for good, or the retries run out.
func (u *Upstream) retry(ctx context.Context, attempt func() error) error {
	delay := u.cfg.Backoff
	for n := 1; ; n++ {
		err := attempt()
		var t *transientError
		if !errors.As(err, &t) {
			return err
		}
		if n > u.cfg.Retries {
			return fmt.Errorf("%w (%d attempts)", err, n)
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		delay *= 4
	}
}

// get sends one GET and returns the body of a 2xx response. Other statuses,
// network errors and timeouts come back classified; transient ones marked.
func (u *Upstream) get(ctx context.Context, target *url.URL) (*body, error) {
	reqCtx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, target.String(), nil)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	req.Header.Set("User-Agent", userAgent)
	if u.user != nil && target.Host == u.host {
		pw, _ := u.user.Password()
		req.SetBasicAuth(u.user.Username(), pw)
	}
	timer := time.AfterFunc(u.cfg.HeaderTimeout, func() { cancel(errHeaderTimeout) })
	resp, err := u.client.Do(req)
	if !timer.Stop() && err == nil {
		resp.Body.Close()
		err = errHeaderTimeout
	}
	if err != nil {
		cancel(nil)
		return nil, u.requestError(ctx, reqCtx, err)
	}
	b := newBody(ctx, reqCtx, cancel, resp, u.cfg.StallTimeout)
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return b, nil
	}
	_, _ = io.CopyN(io.Discard, b, 4<<10) // lets a small error page keep the connection
	b.Close()
	switch {
	case code == http.StatusNotFound || code == http.StatusGone || code == http.StatusForbidden:
		return nil, fmt.Errorf("%w: status %s", ErrNotFound, resp.Status)
	case code >= 500 || code == http.StatusTooManyRequests:
		return nil, transient(fmt.Errorf("%w: status %s", ErrUnavailable, resp.Status))
	default:
		return nil, fmt.Errorf("%w: status %s", ErrUnavailable, resp.Status)
	}
}

// requestError classifies an error from sending a request.
func (u *Upstream) requestError(ctx, reqCtx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if context.Cause(reqCtx) == errHeaderTimeout {
		return transient(fmt.Errorf("%w: no response headers within %v", ErrUnavailable, u.cfg.HeaderTimeout))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the message names the URL already
	}
	var cert *tls.CertificateVerificationError
	if errors.As(err, &cert) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return transient(fmt.Errorf("%w: %w", ErrUnavailable, err))
}
