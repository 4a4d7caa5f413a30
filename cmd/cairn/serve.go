package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/appliance/tokens"
	"cairn/appliance/upstream"
	"cairn/cdc"
	"cairn/httpd"
	"cairn/kv"
)

// The upstream cairn uses when none is given.
const (
	defaultUpstream = "https://cache.nixos.org"
	defaultKey      = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
)

// serveFlags are cairn serve's settings.
type serveFlags struct {
	listen, data, keyName, keyFile, logLevel, compression string
	upstreams, trustedKeys, uploadKeys                    list
	tokensFile                                            string
	readAuth                                              bool
	uploadGrace, gcEvery                                  time.Duration
	maxSize, memoryLimit                                  byteSize
	lowWatermark                                          float64
	priority                                              int
	prefetch, insecure, deltas                            bool
	negativeTTL, shutdownGrace, closeWait, sendStall      time.Duration
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":8501", "address to serve on")
	fs.StringVar(&f.data, "data", "./cairn-data", "data directory")
	fs.Var(&f.upstreams, "upstream", "upstream binary cache URL, repeatable; ?priority=N orders them; none for a push-only cache (default "+defaultUpstream+")")
	fs.Var(&f.trustedKeys, "trusted-key", "NAME:BASE64 key whose signature an upstream narinfo must carry, repeatable")
	fs.StringVar(&f.keyName, "key-name", "", "name of cairn's signing key when it is generated (default <hostname>-1)")
	fs.StringVar(&f.keyFile, "signing-key-file", "", "cairn's Nix secret key file, generated when missing (default DATA/signing-key)")
	fs.IntVar(&f.priority, "priority", 30, "Priority advertised in nix-cache-info (lower is preferred; cache.nixos.org is 40)")
	fs.BoolVar(&f.prefetch, "prefetch", true, "start fetching a NAR when its narinfo is first served")
	fs.BoolVar(&f.deltas, "deltas", true, "store a chunk as a delta against a similar stored chunk when that saves an eighth of its frame; false keeps every chunk an independent frame")
	fs.BoolVar(&f.insecure, "insecure-no-signatures", false, "accept upstream paths without a valid trusted signature (dangerous)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.compression, "compression", "zstd", "what narinfos offer: zstd, or none for clients older than Nix 2.4")
	fs.DurationVar(&f.negativeTTL, "negative-ttl", upstream.DefaultNegativeTTL, "how long an upstream's 404 is remembered")
	fs.StringVar(&f.tokensFile, "tokens-file", "", `file of "ROLE TOKEN" lines (read, write, admin); uploads need a write token`)
	fs.BoolVar(&f.readAuth, "read-auth", false, "reads need a read token too")
	fs.Var(&f.uploadKeys, "trusted-upload-key", "NAME:BASE64 key an uploaded narinfo must be signed with, repeatable (default: any write token may upload)")
	fs.DurationVar(&f.uploadGrace, "upload-grace", time.Hour, "how long an uploaded NAR waits for its narinfo before it is dropped")
	fs.DurationVar(&f.gcEvery, "gc-every", appliance.DefaultGCEvery, "how often GC runs on its own (drops unclaimed uploads, sweeps orphan chunks, gives disk back); 0 never")
	fs.Var(&f.maxSize, "max-size", "evict least recently used paths when stored chunks exceed this size, e.g. 200G (default: no limit)")
	fs.Float64Var(&f.lowWatermark, "low-watermark", appliance.DefaultLowWatermark, "share of --max-size eviction runs down to")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 15*time.Second, "how long SIGTERM waits for running downloads")
	fs.DurationVar(&f.closeWait, "close-wait", 30*time.Second, "how long shutdown then waits for the stores to close before exiting anyway, as after a crash")
	fs.DurationVar(&f.sendStall, "send-stall", httpd.DefaultSendStall, "how long a download may move no byte to its client before it is cut")
	if os.Getenv("GOMEMLIMIT") == "" {
		f.memoryLimit = defaultMemoryLimit // otherwise GOMEMLIMIT stands unless the flag is given
	}
	fs.Var(&f.memoryLimit, "memory-limit", "soft limit of the Go heap while no NAR is being ingested (each running ingest adds 16M): garbage is collected harder as it nears this, e.g. 256M; 0 keeps GOMEMLIMIT or none (no default when GOMEMLIMIT is set)")
}

// defaultMemoryLimit is the Go heap's soft limit unless --memory-limit says
// otherwise: room for Badger's memtables and the frames of a running ingest
// (and for klauspost's best-level encoder in a build without cgo; libzstd's
// context lives outside the Go heap), on a small box.
const defaultMemoryLimit = 96 << 20

// applyMemoryLimit sets the Go runtime's soft memory limit; 0 leaves it as
// GOMEMLIMIT set it.
func (f *serveFlags) applyMemoryLimit() {
	if f.memoryLimit > 0 {
		debug.SetMemoryLimit(int64(f.memoryLimit))
	}
}

// ingestMemory is the store's Running hook: it raises the limit
// --memory-limit set by appliance.IngestHeadroom per running ingest. A limit that
// GOMEMLIMIT set is left as it is.
func (f *serveFlags) ingestMemory() func(ingests int) {
	if f.memoryLimit == 0 {
		return nil
	}
	base := int64(f.memoryLimit)
	return func(n int) { debug.SetMemoryLimit(base + int64(n)*appliance.IngestHeadroom) }
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	f.register(fs)
	var mf serveMountFlags
	mf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	logs := newLogBuffer(stderr)
	defer logs.Close()
	log, err := newLogger(logs, f.logLevel)
	if err != nil {
		return err
	}
	cfg, err := f.service(log)
	if err != nil {
		return err
	}
	f.applyMemoryLimit()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	store, err := appliance.Open(ctx, appliance.Config{Dir: f.data, Logger: log, Running: f.ingestMemory(), NoDeltas: !f.deltas})
	if err != nil {
		if errors.Is(err, kv.ErrLocked) {
			return fmt.Errorf("%w: is another cairn serving %s?", err, f.data)
		}
		return err
	}
	storeClosing := false
	defer func() {
		if !storeClosing {
			store.Close()
		}
	}()
	svc, err := appliance.NewService(store, cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	toks, err := f.tokens(log)
	if err != nil {
		return err
	}
	hcfg := httpd.Config{Service: svc, Priority: f.priority, Logger: log, Tokens: toks, ReadAuth: f.readAuth, SendStall: f.sendStall}
	if log.Enabled(ctx, slog.LevelInfo) {
		hcfg.AccessLog = logs // request lines skip slog's generic path
	}
	srv := httpd.New(hcfg)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ups := make([]string, len(cfg.Upstreams))
	for i, u := range cfg.Upstreams {
		ups[i] = fmt.Sprintf("%s (priority %d)", u, u.Priority())
	}
	log.Info("cairn serving", "version", version, "listen", ln.Addr().String(), "data", f.data,
		"upstreams", ups, "key", svc.PublicKey(), "prefetch", f.prefetch, "recompress", cdc.EncoderName(appliance.DefaultLevel))
	mnt, err := mf.start(store, log)
	if err != nil {
		return err
	}
	defer mnt.Close()

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	mnt.Close()
	log.Info("shutting down: no new connections; waiting for running requests", "grace", f.shutdownGrace)
	grace, cancel := context.WithTimeout(context.Background(), f.shutdownGrace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(grace) }()
	select {
	case err = <-done:
	case <-grace.Done():
		log.Warn("shutdown grace over: aborting running downloads")
		svc.Close() // cuts followers of running fetches, so Shutdown can end
		err = <-done
	}
	svc.Close()
	storeClosing = true
	if cerr := closeWithin(store, f.closeWait); cerr != nil {
		return cerr
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// errCloseTimeout reports stores that did not close in time.
var errCloseTimeout = errors.New("stores did not close in time")

// closeWithin closes store, or gives up after wait: Badger retries a
// memtable flush that fails (a full disk, a data directory gone) forever,
// and its Close waits for that. Exiting without it is safe: every commit
// was synced, so the next start finds what a crash would leave.
func closeWithin(store *appliance.Store, wait time.Duration) error {
	closed := make(chan error, 1)
	go func() { closed <- store.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			return fmt.Errorf("close store: %w", err)
		}
		return nil
	case <-time.After(wait):
		return fmt.Errorf("close store: %w after %s (see the log for why); exiting without it, as after a crash", errCloseTimeout, wait)
	}
}

// service builds the cache's configuration from the flags: upstreams,
// trusted keys and cairn's own key.
func (f *serveFlags) service(log *slog.Logger) (appliance.ServiceConfig, error) {
	cfg := appliance.ServiceConfig{Prefetch: f.prefetch, Insecure: f.insecure, Logger: log, UploadGrace: f.uploadGrace,
		GCEvery: f.gcEvery, MaxSize: uint64(f.maxSize), LowWatermark: f.lowWatermark}
	if f.gcEvery <= 0 {
		cfg.GCEvery = -1 // never
	}
	if f.lowWatermark <= 0 || f.lowWatermark > 1 {
		return cfg, fmt.Errorf("--low-watermark %v: want a share of --max-size between 0 and 1, e.g. 0.9", f.lowWatermark)
	}
	switch f.compression {
	case "zstd":
	case "none":
		cfg.PlainNAR = true
	default:
		return cfg, fmt.Errorf("--compression %q: want zstd or none", f.compression)
	}
	rawUps, keys := f.upstreams.vals, f.trustedKeys.vals
	switch {
	case len(rawUps) == 0:
		rawUps = []string{defaultUpstream}
		keys = append([]string{defaultKey}, keys...)
	case len(rawUps) == 1 && rawUps[0] == "none":
		rawUps = nil // a push-only cache
	}
	for _, raw := range rawUps {
		uc, err := upstream.ParseURL(raw)
		if err != nil {
			return cfg, fmt.Errorf("--upstream: %w", err)
		}
		uc.NegativeTTL = f.negativeTTL
		if f.negativeTTL == 0 {
			uc.NegativeTTL = -1
		}
		u, err := upstream.New(uc)
		if err != nil {
			return cfg, fmt.Errorf("--upstream %s: %w", raw, err)
		}
		cfg.Upstreams = append(cfg.Upstreams, u)
	}
	var err error
	if cfg.TrustedKeys, err = narinfo.ParsePublicKeys(keys); err != nil {
		return cfg, fmt.Errorf("--trusted-key: %w", err)
	}
	if len(cfg.TrustedKeys) == 0 && len(cfg.Upstreams) > 0 && !f.insecure {
		return cfg, errors.New("no --trusted-key for the upstreams: cairn verifies every upstream narinfo's signature. " +
			"Pass each upstream's public key (e.g. --trusted-key " + defaultKey + "), " +
			"or --insecure-no-signatures to accept unsigned paths")
	}
	if cfg.UploadKeys, err = narinfo.ParsePublicKeys(f.uploadKeys.vals); err != nil {
		return cfg, fmt.Errorf("--trusted-upload-key: %w", err)
	}
	cfg.Key, err = f.signingKey(log)
	return cfg, err
}

// tokens loads the tokens file, if any.
func (f *serveFlags) tokens(log *slog.Logger) (*tokens.Set, error) {
	if f.tokensFile == "" {
		if f.readAuth {
			return nil, errors.New("--read-auth needs --tokens-file")
		}
		log.Info("no --tokens-file: uploads and deletes are refused")
		return nil, nil
	}
	toks, err := tokens.Load(f.tokensFile)
	if err != nil {
		return nil, err
	}
	log.Info("tokens loaded", "file", f.tokensFile, "count", toks.Len())
	return toks, nil
}

// signingKey loads cairn's key, generating it on first start.
func (f *serveFlags) signingKey(log *slog.Logger) (signature.SecretKey, error) {
	path := f.keyFile
	if path == "" {
		if err := os.MkdirAll(f.data, 0o755); err != nil {
			return signature.SecretKey{}, fmt.Errorf("data directory: %w", err)
		}
		path = filepath.Join(f.data, "signing-key")
	}
	name := f.keyName
	if name == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "cairn"
		}
		name = host + "-1"
	}
	sk, created, err := narinfo.LoadOrCreateKey(path, name)
	if err != nil {
		return sk, fmt.Errorf("signing key: %w", err)
	}
	pub := narinfo.PublicKey(sk)
	if created {
		log.Info("generated signing key", "file", path, "public", pub.String())
	} else if f.keyName != "" && pub.Name != f.keyName {
		log.Warn("--key-name differs from the existing key's name; keeping the key", "file", path, "name", pub.Name)
	}
	return sk, nil
}
