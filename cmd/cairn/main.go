// Command cairn is a Nix binary cache appliance: a pull-through proxy for
// upstream caches that stores NARs deduplicated in one data directory.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `cairn is a Nix binary cache appliance.

Usage:
  cairn serve [flags]     run the cache (cairn serve -h lists the flags)
  cairn mount DIR --data DATADIR | --remote URL
                          mount the read-only view of a cache (cairn mount -h)
  cairn pin add|rm|ls STOREPATH... --server URL --token T
                          protect closures from eviction, fetching what is missing
  cairn gc [--evict]      evict over the size limit, sweep orphans, give disk space back
  cairn stats             paths, sizes, dedup, hits and misses, pins, last GC
  cairn verify [--repair] re-hash every chunk and NAR; --repair drops damaged ones
  cairn seed export|verify|import DIR
                          write, check or load an air-gapped seed drive (cairn seed -h)
  cairn version           print the version

The admin commands (pin, gc, stats, verify) talk to a running cairn with an
admin token, print progress on long work, and print JSON with --json.

Every flag can also be set as CAIRN_<FLAG> in the environment, e.g.
CAIRN_LISTEN=:8501; flags on the command line win.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process's exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "mount":
		err = mount(args[1:], stderr)
	case "pin", "gc", "stats", "verify":
		err = adminCmd(args[0], args[1:], stdout, stderr)
	case "seed":
		err = seedCmd(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "cairn", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "cairn: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "cairn %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// newLogger returns the process logger at the given level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
