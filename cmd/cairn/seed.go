package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/appliance/seed"
	"cairn/kv"
)

const seedUsage = `usage:
  cairn seed export DIR [--closure STOREPATH]... [--pinned] [--all] [STOREPATH...]
                        [--server URL --token T | --data DATADIR]
  cairn seed verify DIR [--trusted-key NAME:BASE64]...
  cairn seed import DIR [--trusted-key NAME:BASE64]... [--server URL --token T | --data DATADIR]

export writes closures to DIR as a binary cache that stock Nix reads
(nix copy --from file://DIR); verify checks every file, signature and NAR;
import loads a drive into a running cairn (--server, a write token) or a
stopped one's data directory (--data). Without --trusted-key, verify and
import trust the key recorded on the drive, which proves it intact but not
who made it.
`

// seedFlags are the flags of cairn seed's subcommands.
type seedFlags struct {
	closure, trustedKeys list
	pinned, all          bool
	server, token, data  string
	keyFile, keyName     string
}

// seedLocalServer is the server a seed command talks to when given
// neither --server nor --data.
const seedLocalServer = "http://127.0.0.1:8501"

func (f *seedFlags) register(fs *flag.FlagSet, sub string) {
	if sub == "export" {
		fs.Var(&f.closure, "closure", "store path whose closure to export, repeatable")
		fs.BoolVar(&f.pinned, "pinned", false, "export the closures of the pinned roots")
		fs.BoolVar(&f.all, "all", false, "export every stored path whose closure is stored")
	}
	if sub == "verify" || sub == "import" {
		fs.Var(&f.trustedKeys, "trusted-key", "NAME:BASE64 key the narinfos must be signed by, repeatable (default: the key recorded on the drive)")
	}
	if sub == "export" || sub == "import" {
		fs.StringVar(&f.server, "server", "", "URL of a running cairn (default "+seedLocalServer+" unless --data is given)")
		fs.StringVar(&f.token, "token", "", "token for --server: import needs a write token, --pinned an admin token")
		fs.StringVar(&f.data, "data", "", "data directory of a stopped cairn, instead of --server")
		fs.StringVar(&f.keyFile, "signing-key-file", "", "with --data: cairn's Nix secret key file (default DATADIR/signing-key)")
	}
	if sub == "import" {
		fs.StringVar(&f.keyName, "key-name", "", "with --data: name of the key generated for a new data directory (default <hostname>-1)")
	}
}

// seedCmd runs cairn seed export, verify or import until it ends or
// SIGINT/SIGTERM.
func seedCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, seedUsage)
		return flag.ErrHelp
	}
	if len(args) == 0 || (args[0] != "export" && args[0] != "verify" && args[0] != "import") {
		fmt.Fprint(stderr, seedUsage)
		return errors.New("want seed export, verify or import")
	}
	sub := args[0]
	fs := flag.NewFlagSet("cairn seed "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, seedUsage+"\nflags of "+sub+":\n")
		fs.PrintDefaults()
	}
	var f seedFlags
	f.register(fs, sub)
	rest, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return fmt.Errorf("seed %s: which drive directory?", sub)
	}
	dir, extra := rest[0], rest[1:]
	if sub == "export" {
		f.closure.vals = append(f.closure.vals, extra...)
	} else if len(extra) > 0 {
		return fmt.Errorf("seed %s: unexpected arguments %q", sub, extra)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	prog := newProgress(progressTo(stdout))
	defer prog.Close()
	switch sub {
	case "export":
		return f.export(ctx, dir, prog, stdout)
	case "verify":
		return f.verify(ctx, dir, prog, stdout)
	}
	return f.importDrive(ctx, dir, prog, stdout)
}

// cache is a cairn a seed command reads from or writes to.
type cache interface {
	seed.Source
	seed.Sink
}

// open returns the cairn --server or --data names: a running one over
// HTTP, or the store in a stopped one's data directory, and the func that
// closes it. A data directory is created only for an import.
func (f *seedFlags) open(ctx context.Context, create bool) (cache, func(), error) {
	if f.data == "" {
		server := f.server
		if server == "" {
			server = seedLocalServer
		}
		r, err := seed.NewRemote(seed.RemoteConfig{URL: server, Token: f.token})
		return r, func() {}, err
	}
	if f.server != "" {
		return nil, nil, errors.New("give --server (a running cairn) or --data (a stopped one), not both")
	}
	ok, err := appliance.IsStore(f.data)
	if err != nil {
		return nil, nil, err
	}
	if !ok && !create {
		return nil, nil, fmt.Errorf("--data %s: not a cairn data directory (no index.db)", f.data)
	}
	log := slog.New(slog.DiscardHandler)
	key, err := f.signingKey(ok, log)
	if err != nil {
		return nil, nil, err
	}
	store, err := appliance.Open(ctx, appliance.Config{Dir: f.data, Logger: log, RecompressDelay: -1})
	if errors.Is(err, kv.ErrLocked) {
		return nil, nil, fmt.Errorf("--data %s is in use by a running cairn: use --server URL --token T instead (%w)", f.data, err)
	}
	if err != nil {
		return nil, nil, err
	}
	return seed.NewLocal(store, key), func() { store.Close() }, nil
}

// signingKey loads the data directory's key as cairn serve does. Only a
// new data directory gets a new key.
func (f *seedFlags) signingKey(existing bool, log *slog.Logger) (signature.SecretKey, error) {
	sf := serveFlags{data: f.data, keyFile: f.keyFile, keyName: f.keyName}
	if existing {
		path := f.keyFile
		if path == "" {
			path = filepath.Join(f.data, "signing-key")
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return signature.SecretKey{}, fmt.Errorf("signing key %s is missing: pass --signing-key-file", path)
		}
	}
	return sf.signingKey(log)
}

// trusted parses --trusted-key.
func (f *seedFlags) trusted() ([]signature.PublicKey, error) {
	keys, err := narinfo.ParsePublicKeys(f.trustedKeys.vals)
	if err != nil {
		return nil, fmt.Errorf("--trusted-key: %w", err)
	}
	return keys, nil
}

func (f *seedFlags) export(ctx context.Context, dir string, prog *progress, stdout io.Writer) error {
	if len(f.closure.vals) == 0 && !f.pinned && !f.all {
		return errors.New("seed export: what to export? --closure STOREPATH, --pinned or --all")
	}
	src, closeSrc, err := f.open(ctx, false)
	if err != nil {
		return err
	}
	defer closeSrc()
	rep, err := seed.Export(ctx, seed.ExportConfig{Dir: dir, Source: src, Roots: f.closure.vals,
		Pinned: f.pinned, All: f.all, Tool: "cairn " + version, Progress: prog})
	prog.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "exported %d paths to %s: wrote %d files (%s), kept %d files already there (%s)\n",
		rep.Paths, dir, len(rep.Written), human(uint64(rep.WrittenBytes)), rep.Kept, human(uint64(rep.KeptBytes)))
	if rep.Removed > 0 {
		fmt.Fprintf(stdout, "removed %d temporary files of an interrupted export\n", rep.Removed)
	}
	if len(rep.Left) > 0 {
		fmt.Fprintf(stdout, "left out %d paths whose closure is not stored:\n", len(rep.Left))
		for _, l := range rep.Left {
			fmt.Fprintf(stdout, "  %s\n", l)
		}
	}
	fmt.Fprintf(stdout, "signed by %s\nread it with: nix copy --from file://%s --option trusted-public-keys %s STOREPATH\n",
		rep.PublicKey, absPath(dir), rep.PublicKey)
	return nil
}

func absPath(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

func (f *seedFlags) verify(ctx context.Context, dir string, prog *progress, stdout io.Writer) error {
	keys, err := f.trusted()
	if err != nil {
		return err
	}
	rep, err := seed.Verify(ctx, seed.VerifyConfig{Dir: dir, TrustedKeys: keys, Progress: prog})
	prog.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checked %d files (%s): %d narinfos, %d NARs against their NarHash\n",
		rep.Files, human(uint64(rep.Bytes)), rep.NarInfos, rep.NARs)
	printTrust(stdout, rep.Keys, rep.KeyFromDrive)
	if rep.OK() {
		fmt.Fprintln(stdout, "OK")
		return nil
	}
	fmt.Fprintf(stdout, "%d problems:\n", len(rep.Problems))
	for _, p := range rep.Problems {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	return fmt.Errorf("seed verify: %s has %d problems", dir, len(rep.Problems))
}

// printTrust says which keys signatures were checked against, and what a
// key taken from the drive itself proves.
func printTrust(w io.Writer, keys []string, fromDrive bool) {
	if fromDrive {
		fmt.Fprintf(w, "signatures checked against the key recorded on the drive, %s: this proves the drive intact, "+
			"not who made it; pass --trusted-key NAME:BASE64 to check that\n", strings.Join(keys, " "))
		return
	}
	fmt.Fprintf(w, "signatures checked against --trusted-key %s\n", strings.Join(keys, " "))
}

func (f *seedFlags) importDrive(ctx context.Context, dir string, prog *progress, stdout io.Writer) error {
	keys, err := f.trusted()
	if err != nil {
		return err
	}
	sink, closeSink, err := f.open(ctx, true)
	if err != nil {
		return err
	}
	defer closeSink()
	rep, err := seed.Import(ctx, seed.ImportConfig{Dir: dir, Sink: sink, TrustedKeys: keys, Progress: prog})
	prog.Close()
	if rep != nil {
		fmt.Fprintf(stdout, "imported %d paths (%s of NAR files), %d already present, %d refused\n",
			len(rep.Imported), human(uint64(rep.NARBytes)), len(rep.Present), len(rep.Refused))
		printTrust(stdout, rep.Keys, rep.KeyFromDrive)
		for _, p := range rep.Refused {
			fmt.Fprintf(stdout, "  refused %s\n", p)
		}
	}
	if err != nil {
		return err
	}
	if len(rep.Refused) > 0 {
		return fmt.Errorf("seed import: refused %d paths of %s", len(rep.Refused), dir)
	}
	return nil
}
