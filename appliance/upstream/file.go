package upstream

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// openFile opens name, a slash-separated path relative to a file:// upstream's
// directory, refusing any path that would leave it, symlinks included.
func (u *Upstream) openFile(ctx context.Context, name string) (*fileBody, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rel := filepath.FromSlash(name)
	if !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("%w: path %q leaves the cache directory", ErrBadURL, name)
	}
	root, err := os.OpenRoot(u.dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer root.Close()
	f, err := root.Open(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%w: not a regular file", ErrNotFound)
	} else if err != nil {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileBody{ctx: ctx, f: f, key: filepath.Join(u.dir, rel)}, nil
}
