package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"

	"cairn/appliance/narinfo"
)

// sameUpstreamTries is how often a NAR body that fails part-way is reopened
// at the same upstream before the next upstream is asked.
const sameUpstreamTries = 2

// failover reads a NAR's plaintext from its upstreams. When a body fails
// part-way, it reopens the NAR at the same upstream, then at the next ones
// that hold the same NAR, and skips the bytes already delivered, so one
// broken connection does not fail the ingest. The ingest's NarHash check
// covers the spliced stream.
type failover struct {
	s    *Service
	info *narinfo.Info // the narinfo of the upstream being read
	from int           // its index in s.ups
	ctx  context.Context

	cur   io.ReadCloser // plaintext of the current body
	pos   uint64        // plaintext bytes delivered
	tries int           // opens at the current upstream
	errs  []error
}

// open is the Opener handed to Store.Start: the stream it returns is
// already plaintext.
func (f *failover) open(ctx context.Context) (io.ReadCloser, Compression, error) {
	f.ctx = ctx
	if err := f.reopen(); err != nil {
		return nil, "", err
	}
	return f, CompressionNone, nil
}

// reopen opens the NAR at the current upstream, or at the next one that has
// it, and skips what was delivered already.
func (f *failover) reopen() error {
	for {
		if f.tries >= sameUpstreamTries {
			info, from, err := f.s.find(f.ctx, f.info.Hash(), f.from, f.info)
			if err != nil {
				return fmt.Errorf("no upstream could deliver %s: %w", f.info.StorePath, errors.Join(append(f.errs, err)...))
			}
			f.info, f.from, f.tries = info, from, 0
		}
		f.tries++
		err := f.openHere()
		if err == nil {
			return nil
		}
		if f.ctx.Err() != nil {
			return f.ctx.Err()
		}
		f.s.log.Warn("open nar upstream", "upstream", f.s.ups[f.from].String(), "url", f.info.URL, "err", err)
		f.errs = append(f.errs, err)
	}
}

func (f *failover) openHere() error {
	u := f.s.ups[f.from]
	comp, err := parseCompression(f.info)
	if err != nil {
		return err
	}
	body, err := u.Open(f.ctx, f.info.URL)
	if err != nil {
		return err
	}
	plain, err := decompress(f.ctx, comp, body, f.s.store.cfg.XZ, nil)
	if err != nil {
		body.Close()
		return fmt.Errorf("%s: %w", u.String(), err)
	}
	rc := &bodyCloser{Reader: plain, closers: []io.Closer{plain, body}}
	if f.pos > 0 {
		if n, err := io.CopyN(io.Discard, rc, int64(f.pos)); err != nil {
			rc.Close()
			return fmt.Errorf("%s: skip %d bytes already read (got %d): %w", u.String(), f.pos, n, err)
		}
	}
	f.cur = rc
	return nil
}

func (f *failover) Read(p []byte) (int, error) {
	for {
		if f.cur == nil {
			if err := f.reopen(); err != nil {
				return 0, err
			}
		}
		n, err := f.cur.Read(p)
		f.pos += uint64(n)
		if err == nil || (err == io.EOF && f.pos >= f.info.NarSize) {
			return n, err
		}
		if err == io.EOF {
			err = fmt.Errorf("body ended after %d of %d bytes", f.pos, f.info.NarSize)
		}
		if f.ctx.Err() != nil {
			return n, f.ctx.Err()
		}
		f.s.log.Warn("nar body failed part-way; trying again", "upstream", f.s.ups[f.from].String(), "url", f.info.URL, "at", f.pos, "err", err)
		f.errs = append(f.errs, err)
		f.cur.Close()
		f.cur = nil
		if n > 0 {
			return n, nil
		}
	}
}

func (f *failover) Close() error {
	if f.cur != nil {
		return f.cur.Close()
	}
	return nil
}

// bodyCloser closes a decompressor and the body under it.
type bodyCloser struct {
	io.Reader
	closers []io.Closer
}

func (b *bodyCloser) Close() error {
	var errs []error
	for _, c := range b.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
