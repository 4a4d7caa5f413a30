package main

import (
	"flag"
	"fmt"
	"os"
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
