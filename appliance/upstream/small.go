package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
)

// fetchSmall returns the whole of a small file, bounded to limit bytes, retrying
// transient failures including a body that fails part-way.
func (u *Upstream) fetchSmall(ctx context.Context, name string, limit int64) ([]byte, error) {
	if u.dir != "" {
		f, err := u.openFile(ctx, name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readLimited(f, limit)
	}
	target, err := url.Parse(u.base + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	target.RawQuery = u.query
	var data []byte
	err = u.retry(ctx, func() error {
		b, err := u.get(ctx, target)
		if err != nil {
			return err
		}
		defer b.Close()
		if b.size > limit {
			return fmt.Errorf("%w: Content-Length %d over %d bytes", ErrTooLarge, b.size, limit)
		}
		data, err = readLimited(b, limit)
		if errors.Is(err, ErrUnavailable) {
			err = transient(err)
		}
		return err
	})
	return data, err
}

// readLimited reads r to the end, failing with ErrTooLarge past limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
	}
	return data, nil
}
