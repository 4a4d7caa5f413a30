package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// envPrefix is how every flag is also read from the environment:
// --trusted-key is CAIRN_TRUSTED_KEY. Flags given on the command line win.
const envPrefix = "CAIRN_"

// list is a repeatable flag. Values from the environment are replaced, not
// extended, by values on the command line.
type list struct {
	vals    []string
	fromEnv bool
}

func (l *list) String() string { return strings.Join(l.vals, " ") }

func (l *list) Set(v string) error {
	if l.fromEnv {
		l.vals, l.fromEnv = nil, false
	}
	l.vals = append(l.vals, v)
	return nil
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse reads the environment, then args, into fs. A repeatable flag's
// variable holds space-separated values.
func parse(fs *flag.FlagSet, args []string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || err != nil {
			return
		}
		if l, isList := f.Value.(*list); isList {
			for _, item := range strings.Fields(v) {
				if err = l.Set(item); err != nil {
					break
				}
			}
			l.fromEnv = true
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
		}
	})
	if err != nil {
		return err
	}
	return fs.Parse(args)
}

// parseInterleaved is parse for commands whose flags may come before or
// after their arguments; it returns the arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := parse(fs, nil); err != nil {
		return nil, err
	}
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		if args[0] == "--" {
			return append(rest, args[1:]...), nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

// byteSize is a flag for sizes such as 200G, 1.5T or 500M (powers of 1024;
// a trailing B or iB is allowed) or a plain byte count.
type byteSize uint64

// String renders the size as Set reads it, in the largest unit that
// divides it (96M rather than 100663296).
func (b *byteSize) String() string {
	n := uint64(*b)
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

func (b *byteSize) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// parseSize reads a size such as 200G.
func parseSize(v string) (uint64, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(v)), "B"), "I")
	mult := 1.0
	if s != "" {
		if i := strings.IndexByte("KMGTP", s[len(s)-1]); i >= 0 {
			mult = float64(uint64(1) << (10 * (i + 1)))
			s = s[:len(s)-1]
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f*mult, 0) || f*mult >= 1<<63 {
		return 0, fmt.Errorf("size %q: want a number with an optional K, M, G, T or P suffix, e.g. 200G", v)
	}
	return uint64(f * mult), nil
}
