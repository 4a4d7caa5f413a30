package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"cairn/appliance"
	"cairn/fusefs"
	"cairn/kv"
)

// mountFlags are cairn mount's settings.
type mountFlags struct {
	data, remote, token, logLevel string
	cacheMB                       int
	allowOther, debug             bool
}

func (f *mountFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.data, "data", "", "data directory of a stopped cairn to mount")
	fs.StringVar(&f.remote, "remote", "", "URL of a running cairn to mount over HTTP, e.g. http://box:8501")
	fs.StringVar(&f.token, "token", "", "token for --remote, sent as the HTTP Basic password of user cairn")
	fs.IntVar(&f.cacheMB, "cache-mb", fusefs.DefaultCacheBytes>>20, "MiB of decompressed chunks (--data) or fetched NAR ranges (--remote) kept in memory")
	fs.BoolVar(&f.allowOther, "allow-other", os.Geteuid() == 0, "let other users see the mount (needs user_allow_other in /etc/fuse.conf unless root)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.debug, "debug-fuse", false, "log every FUSE request (with --log-level debug)")
}

const mountUsage = `Usage:
  cairn mount DIR --data DATADIR       mount a stopped cairn's data directory
  cairn mount DIR --remote URL         mount a running cairn over HTTP

The mount is read-only: nar/<narhash>.nar, narinfo/<hash>.narinfo and
store/<hash>-<name>/... It stays until SIGTERM, Ctrl-C or fusermount3 -u DIR.

Flags:
`

// mount runs `cairn mount`: it serves the mount in the foreground until a
// signal or an unmount from outside.
func mount(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn mount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, mountUsage)
		fs.PrintDefaults()
	}
	var f mountFlags
	f.register(fs)
	dir, err := parseWithPositional(fs, args)
	if err != nil {
		return err
	}
	if dir == "" {
		fs.Usage()
		return errors.New("no mount point given")
	}
	if (f.data == "") == (f.remote == "") {
		return errors.New("give either --data DATADIR or --remote URL")
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cfg := fusefs.Config{CacheBytes: int64(f.cacheMB) << 20, AllowOther: f.allowOther, Logger: log, Debug: f.debug}
	var src fusefs.Source
	if f.remote != "" {
		r, err := fusefs.NewRemote(fusefs.RemoteConfig{URL: f.remote, Token: f.token})
		if err != nil {
			return err
		}
		if _, err := r.Paths(ctx); err != nil {
			return fmt.Errorf("remote %s: %w", f.remote, err)
		}
		src, cfg.Name = r, "cairn:"+r.URL()
	} else {
		store, err := openForMount(ctx, f.data, log)
		if err != nil {
			return err
		}
		defer store.Close()
		src, cfg.Name = fusefs.NewLocal(store), "cairn:"+f.data
	}
	m, err := fusefs.New(dir, src, cfg)
	if err != nil {
		return mountHint(dir, err)
	}
	log.Info("mounted", "dir", dir, "source", cfg.Name, "cache_mb", f.cacheMB)
	select {
	case <-ctx.Done():
		log.Info("unmounting", "dir", dir)
		if err := m.Close(); err != nil {
			return err
		}
	case <-m.Done():
		log.Info("unmounted from outside", "dir", dir)
		m.Close()
	}
	log.Info("stopped")
	return nil
}

// openForMount opens a stopped appliance's data directory, refusing one
// that does not exist or that a running cairn holds.
func openForMount(ctx context.Context, dir string, log *slog.Logger) (*appliance.Store, error) {
	ok, err := appliance.IsStore(dir)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("--data %s: not a cairn data directory (no index.db)", dir)
	}
	store, err := appliance.Open(ctx, appliance.Config{Dir: dir, Logger: log})
	if errors.Is(err, kv.ErrLocked) {
		return nil, fmt.Errorf("--data %s is locked by a running cairn: mount it from that server with "+
			"`cairn serve --mount DIR`, or over HTTP with `cairn mount DIR --remote http://HOST:8501` (%w)", dir, err)
	}
	return store, err
}

// mountHint adds what to do to a failed mount.
func mountHint(dir string, err error) error {
	if errors.Is(err, syscall.ENOTCONN) || strings.Contains(err.Error(), "not connected") {
		return fmt.Errorf("%w (a stale mount is left at %s: run fusermount3 -u %s)", err, dir, dir)
	}
	return err
}

// parseWithPositional parses flags that may come before or after the one
// positional argument, and returns it.
func parseWithPositional(fs *flag.FlagSet, args []string) (string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) > 1 {
		return "", fmt.Errorf("unexpected arguments %q", pos[1:])
	}
	if len(pos) == 0 {
		return "", nil
	}
	return pos[0], nil
}

// serveMountFlags are cairn serve's flags for the mount inside the server.
type serveMountFlags struct {
	dir     string
	cacheMB int
}

func (f *serveMountFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "mount", "", "also mount the read-only view of the cache at this directory")
	fs.IntVar(&f.cacheMB, "mount-cache-mb", fusefs.DefaultCacheBytes>>20, "MiB of decompressed chunks the mount keeps in memory")
}

// serveMount is the mount a cairn serve runs, or nothing without --mount.
type serveMount struct {
	m   *fusefs.Mount
	log *slog.Logger
}

// start mounts the serving store's view when --mount is set.
func (f *serveMountFlags) start(store *appliance.Store, log *slog.Logger) (*serveMount, error) {
	if f.dir == "" {
		return &serveMount{}, nil
	}
	// The box's users browse the view, so it is mounted for everyone;
	// fusermount3 allows that to a non-root server only with
	// user_allow_other in /etc/fuse.conf (the NixOS module sets it).
	cfg := fusefs.Config{CacheBytes: int64(f.cacheMB) << 20, AllowOther: true, Name: "cairn", Logger: log}
	m, err := fusefs.New(f.dir, fusefs.NewLocal(store), cfg)
	if err != nil && strings.Contains(err.Error(), "allow_other") {
		log.Warn("mounting for the server's user only: fusermount3 refused allow_other (set user_allow_other in /etc/fuse.conf)", "err", err)
		cfg.AllowOther = false
		m, err = fusefs.New(f.dir, fusefs.NewLocal(store), cfg)
	}
	if err != nil {
		return nil, mountHint(f.dir, err)
	}
	log.Info("mounted", "dir", f.dir, "cache_mb", f.cacheMB)
	go func() {
		<-m.Done()
		log.Info("mount gone", "dir", f.dir)
	}()
	return &serveMount{m: m, log: log}, nil
}

// Close unmounts; a second Close does nothing.
func (s *serveMount) Close() {
	if s.m != nil {
		if err := s.m.Close(); err != nil {
			s.log.Warn("unmount", "err", err)
		}
	}
}
