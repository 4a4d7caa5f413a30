// Package fusefs is the read-only FUSE view of a cairn cache: every held
// NAR as a file, every store path as a browsable, readable tree, and every
// narinfo. Its data comes from a Source: the local store (Local) or a
// remote cairn over HTTP (Remote).
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Config is how a mount behaves; the zero value of each field means its
// default.
type Config struct {
	// CacheBytes bounds the LRU of decompressed chunks (local) or fetched
	// byte ranges (remote).
	CacheBytes int64
	// TreeBytes bounds the parsed listings of recently used store paths.
	TreeBytes int64
	// ReadAhead is how many bytes a sequential reader loads ahead.
	ReadAhead int64
	// PushAhead is how many bytes of the next small files are written
	// into the kernel's page cache when a tree is read file by file in
	// order; negative turns that off.
	PushAhead int64
	// Parallel is how many blocks load at once.
	Parallel int
	// KernelReadAhead is the kernel's read-ahead for the mount, in bytes.
	// FUSE caps it at 128 KiB, which leaves a sequential reader waiting on
	// one request at a time; a larger one is set through sysfs when the
	// process may (as root). Negative leaves the kernel's default.
	KernelReadAhead int64
	// Timeout is the kernel's entry and attribute timeout for everything
	// below the top directories, which never changes.
	Timeout time.Duration
	// AskOnOpen makes the kernel send every OPEN and RELEASE. By default
	// it opens files by itself when it can, two round trips fewer per file.
	AskOnOpen bool
	// AllowOther lets users other than the one mounting see the mount.
	AllowOther bool
	// Name is the source shown in /proc/mounts.
	Name   string
	Logger *slog.Logger
	// Debug logs every FUSE request.
	Debug bool
}

// Defaults for Config fields left zero.
const (
	DefaultCacheBytes = 256 << 20
	DefaultTreeBytes  = 64 << 20
	DefaultReadAhead  = 4 << 20
	DefaultParallel   = 8
	DefaultPushAhead  = 16 << 20
	// DefaultKernelReadAhead is the kernel read-ahead set on a mount.
	DefaultKernelReadAhead = 1 << 20
	DefaultTimeout         = time.Hour
)

func (c *Config) setDefaults() {
	if c.CacheBytes <= 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.TreeBytes <= 0 {
		c.TreeBytes = DefaultTreeBytes
	}
	if c.ReadAhead <= 0 {
		c.ReadAhead = DefaultReadAhead
	}
	if c.PushAhead == 0 {
		c.PushAhead = DefaultPushAhead
	}
	if c.Parallel <= 0 {
		c.Parallel = DefaultParallel
	}
	if c.KernelReadAhead == 0 {
		c.KernelReadAhead = DefaultKernelReadAhead
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Name == "" {
		c.Name = "cairn"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// minAheadBytes is the least room for blocks loaded ahead of sequential
// readers: a few of them at once, each with its read-ahead window.
const minAheadBytes = 32 << 20

// aheadBytes bounds the cache's read-ahead segment: room for what read-ahead
// and pushes load before a reader gets to it, with slack for a few readers.
func (c *Config) aheadBytes() int64 {
	return max(minAheadBytes, 2*(c.ReadAhead+max(c.PushAhead, 0)))
}

// ErrNoFUSE reports a machine without what a FUSE mount needs.
var ErrNoFUSE = errors.New("FUSE is not available")

// Check reports whether this machine can mount: /dev/fuse and fusermount3
// (or fusermount) must be there.
func Check() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("%w: %v (load the fuse module, or give the container /dev/fuse)", ErrNoFUSE, err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			return fmt.Errorf("%w: fusermount3 not found on PATH (install fuse3)", ErrNoFUSE)
		}
	}
	return nil
}

// Mount is a mounted view.
type Mount struct {
	dir    string
	srv    *fuse.Server
	cancel context.CancelFunc
	f      *fsys
	log    *slog.Logger
	gone   chan struct{} // closed when the kernel connection ends

	closeOnce sync.Once
	closeErr  error
}

// New mounts src read-only at dir, creating dir if needed, and serves it
// until Close or an unmount from outside (fusermount3 -u).
func New(dir string, src Source, cfg Config) (*Mount, error) {
	cfg.setDefaults()
	if err := Check(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	base, cancel := context.WithCancel(context.Background())
	f := &fsys{src: src, cfg: cfg,
		ld:    newLoader(base, newCache(cfg.CacheBytes, byteCost).withAhead(cfg.aheadBytes()), cfg.Parallel, cfg.ReadAhead),
		paths: newCache(cfg.TreeBytes, func(sp *storePath) int64 { return sp.tree.bytes })}
	zero := time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &cfg.Timeout,
		AttrTimeout:     &cfg.Timeout,
		NegativeTimeout: &zero, // names that arrive later must not be remembered as missing
		RootStableAttr:  &fs.StableAttr{Ino: rootIno},
		Logger:          log.New(slogWriter{cfg.Logger}, "", 0),
		MountOptions: fuse.MountOptions{
			FsName:        cfg.Name,
			Name:          "cairn",
			Options:       []string{"ro", "default_permissions"},
			AllowOther:    cfg.AllowOther,
			DisableXAttrs: true,
			MaxWrite:      1 << 20,
			MaxReadAhead:  1 << 20,
			Debug:         cfg.Debug,
			Logger:        log.New(slogWriter{cfg.Logger}, "", 0),
		},
	}
	srv, err := fs.Mount(dir, &root{f: f}, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	f.noOpen.Store(!cfg.AskOnOpen && srv.KernelSettings().Flags64()&fuse.CAP_NO_OPEN_SUPPORT != 0)
	if err := setReadAhead(dir, cfg.KernelReadAhead); err != nil {
		cfg.Logger.Debug("mount: kernel read-ahead left at its default", "dir", dir, "err", err)
	}
	m := &Mount{dir: dir, srv: srv, cancel: cancel, f: f, log: cfg.Logger, gone: make(chan struct{})}
	go func() {
		srv.Wait()
		close(m.gone)
	}()
	return m, nil
}

// Dir is the mount point.
func (m *Mount) Dir() string { return m.dir }

// Done is closed when the mount has gone: after Close, or an unmount from
// outside.
func (m *Mount) Done() <-chan struct{} { return m.gone }

// Stats are a mount's counters.
type Stats struct {
	Blocks      CacheStats // the block cache: decompressed chunks or fetched ranges
	PushedFiles uint64     // files written into the kernel's page cache ahead of a walk
	PushedBytes uint64
}

// Stats returns the mount's counters.
func (m *Mount) Stats() Stats {
	return Stats{Blocks: m.f.ld.cache.stats(), PushedFiles: m.f.pushedFiles.Load(), PushedBytes: m.f.pushedBytes.Load()}
}

// unmountGrace is how long Close waits for a lazily detached mount's last
// user before it stops serving anyway.
const unmountGrace = 5 * time.Second

// Close unmounts and stops serving, and returns once no background load
// runs any more, so that the source may be closed next. When the mount is
// busy, it is detached lazily: it disappears from the namespace at once,
// and processes still in it get errors once cairn stops serving.
func (m *Mount) Close() error {
	m.closeOnce.Do(func() {
		m.closeErr = m.unmount()
		m.cancel()
		m.f.close()
	})
	return m.closeErr
}

func (m *Mount) unmount() error {
	select {
	case <-m.gone: // unmounted from outside
		return nil
	default:
	}
	err := m.srv.Unmount()
	if err == nil {
		return nil
	}
	m.log.Warn("mount busy: detaching it lazily", "dir", m.dir, "err", err)
	if lerr := lazyUnmount(m.dir); lerr != nil {
		return fmt.Errorf("unmount %s: %w; lazy unmount: %w", m.dir, err, lerr)
	}
	select {
	case <-m.gone:
	case <-time.After(unmountGrace):
		m.log.Warn("mount still in use after lazy unmount; no longer serving it", "dir", m.dir)
	}
	return nil
}

// slogWriter turns go-fuse's log lines into debug records.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("fuse: " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
