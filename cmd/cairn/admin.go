package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"cairn/appliance"
)

// adminFlags are what every command that talks to a running server takes.
type adminFlags struct {
	server, token string
	json          bool
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.server, "server", "http://127.0.0.1:8501", "URL of the running cairn")
	fs.StringVar(&a.token, "token", "", "admin token")
	fs.BoolVar(&a.json, "json", false, "print JSON for scripts")
}

// adminClient calls a running cairn's admin API.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func (a *adminFlags) client() (*adminClient, error) {
	u, err := url.Parse(a.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want http://host:port", a.server)
	}
	if a.token == "" {
		return nil, errors.New("--token: the admin API needs an admin token (or CAIRN_TOKEN)")
	}
	return &adminClient{base: strings.TrimSuffix(a.server, "/"), token: a.token, http: &http.Client{}}, nil
}

// do sends a request and fails with the server's one-line reason on a
// non-2xx answer.
func (c *adminClient) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp, nil
}

// call sends a request and decodes the JSON answer into out.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// streamed is one line of a streamed admin answer: an event or the final
// line.
type streamed struct {
	End    bool            `json:"end"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

// stream sends a request whose answer is JSON lines, handing each event
// line to onEvent, and returns the final line's result.
func (c *adminClient) stream(ctx context.Context, method, path string, body any, onEvent func([]byte) error) (json.RawMessage, error) {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var line streamed
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("%s %s: bad line %q: %w", method, path, sc.Text(), err)
		}
		if line.End {
			if line.Error != "" {
				return line.Result, errors.New(line.Error)
			}
			return line.Result, nil
		}
		if err := onEvent(sc.Bytes()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil, fmt.Errorf("%s %s: the answer ended before its last line", method, path)
}

// human prints a byte count for people.
func human(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// adminCommand parses a command's flags (before or after its arguments)
// and returns its arguments and client.
func adminCommand(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*adminFlags, *adminClient, []string, error) {
	fs := flag.NewFlagSet("cairn "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a adminFlags
	a.register(fs)
	if extra != nil {
		extra(fs)
	}
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := a.client()
	return &a, c, rest, err
}

func pinCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("want pin add|rm|ls [--server URL] [--token T] [--json] [STOREPATH...]")
	}
	sub := args[0]
	a, c, paths, err := adminCommand("pin "+sub, args[1:], stderr, nil)
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		if len(paths) == 0 {
			return errors.New("pin add: which store paths?")
		}
		res, err := c.stream(ctx, "POST", "/_cairn/pins", map[string][]string{"paths": paths}, func(line []byte) error {
			if a.json {
				_, err := fmt.Fprintf(stdout, "%s\n", line)
				return err
			}
			var ev appliance.PinEvent
			if err := json.Unmarshal(line, &ev); err != nil {
				return err
			}
			msg := fmt.Sprintf("[%d/%d] %-7s %s", ev.Done, ev.Queued, ev.Action, ev.Path)
			if ev.Bytes > 0 {
				msg += " (" + human(ev.Bytes) + ")"
			}
			if ev.Error != "" {
				msg += ": " + ev.Error
			}
			_, err := fmt.Fprintln(stdout, msg)
			return err
		})
		if err == nil && !a.json {
			fmt.Fprintf(stdout, "pinned %s with its closure\n", strings.Join(paths, " "))
		}
		_ = res
		return err
	case "rm":
		if len(paths) == 0 {
			return errors.New("pin rm: which store paths?")
		}
		for _, p := range paths {
			base := strings.TrimPrefix(p, "/nix/store/")
			var out map[string]bool
			if err := c.call(ctx, "DELETE", "/_cairn/pins/"+url.PathEscape(base), nil, &out); err != nil {
				return err
			}
			if !a.json {
				fmt.Fprintln(stdout, "unpinned", p)
			}
		}
		return nil
	case "ls":
		var pins []appliance.PinReport
		if err := c.call(ctx, "GET", "/_cairn/pins", nil, &pins); err != nil {
			return err
		}
		if a.json {
			return json.NewEncoder(stdout).Encode(pins)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PATH\tCLOSURE\tNAR BYTES\tMISSING\tPINNED")
		for _, p := range pins {
			fmt.Fprintf(tw, "/nix/store/%s\t%d\t%s\t%d\t%s\n", p.Path, p.Members, human(p.Bytes), p.Missing, p.At.Format(time.DateTime))
		}
		return tw.Flush()
	}
	return fmt.Errorf("pin %s: want add, rm or ls", sub)
}

func gcCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var evict bool
	a, c, rest, err := adminCommand("gc", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&evict, "evict", false, "evict down to the low watermark of --max-size first, even below the limit")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("gc takes no arguments, got %q", rest)
	}
	if evict {
		var rep *appliance.EvictReport
		if err := c.call(ctx, "POST", "/_cairn/evict", nil, &rep); err != nil {
			return err
		}
		if !a.json && rep != nil {
			fmt.Fprintf(stdout, "evicted %d paths (%d NARs, %d chunks): %s -> %s\n", rep.PathsEvicted, rep.NARsDeleted,
				rep.ChunksDeleted, human(rep.PhysicalBefore), human(rep.PhysicalAfter))
		}
	}
	var rep appliance.GCReport
	if err := c.call(ctx, "POST", "/_cairn/gc", nil, &rep); err != nil {
		return err
	}
	if a.json {
		return json.NewEncoder(stdout).Encode(rep)
	}
	if rep.Evict != nil {
		fmt.Fprintf(stdout, "evicted %d paths: %s -> %s\n", rep.Evict.PathsEvicted, human(rep.Evict.PhysicalBefore), human(rep.Evict.PhysicalAfter))
	}
	fmt.Fprintf(stdout, "gc: %d unclaimed uploads dropped, %d orphan chunks swept, %d value-log files rewritten in %s\n",
		rep.UploadsDropped, rep.OrphanChunks, rep.LogRewrites, rep.Duration.Round(time.Millisecond))
	return nil
}

func statsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, c, rest, err := adminCommand("stats", args, stderr, nil)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("stats takes no arguments, got %q", rest)
	}
	var r appliance.Report
	if err := c.call(ctx, "GET", "/_cairn/stats", nil, &r); err != nil {
		return err
	}
	if a.json {
		return json.NewEncoder(stdout).Encode(r)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "paths\t%d\nNARs\t%d\nchunks\t%d\n", r.Paths, r.NARs, r.Chunks)
	fmt.Fprintf(tw, "logical bytes\t%s\nphysical bytes\t%s\ndedup ratio\t%.2f\n", human(r.LogicalBytes), human(r.PhysicalBytes), r.DedupRatio)
	if r.MaxSize > 0 {
		fmt.Fprintf(tw, "size limit\t%s (%.0f%% used)\n", human(r.MaxSize), 100*float64(r.PhysicalBytes)/float64(r.MaxSize))
	}
	fmt.Fprintf(tw, "narinfo hits\t%d\nnarinfo misses\t%d (not found: %d)\nNAR fetches\t%d (failed: %d)\n", r.Hits, r.Misses, r.NotFound, r.Fetches, r.FetchFailures)
	for _, u := range r.Upstreams {
		fmt.Fprintf(tw, "upstream %s\thits %d, misses %d (priority %d)\n", u.URL, u.Hits, u.Misses, u.Priority)
	}
	fmt.Fprintf(tw, "pinned\t%d roots, %d paths, %s of NAR\n", r.PinnedRoots, r.PinnedPaths, human(r.PinnedBytes))
	if e := r.LastEviction; e != nil {
		fmt.Fprintf(tw, "last eviction\t%s: %d paths, %s -> %s\n", e.Start.Format(time.DateTime), e.PathsEvicted, human(e.PhysicalBefore), human(e.PhysicalAfter))
	} else {
		fmt.Fprintf(tw, "last eviction\tnever\n")
	}
	if g := r.LastGC; g != nil {
		fmt.Fprintf(tw, "last gc\t%s: %d orphan chunks, %d value-log rewrites\n", g.Start.Format(time.DateTime), g.OrphanChunks, g.LogRewrites)
	} else {
		fmt.Fprintf(tw, "last gc\tnever\n")
	}
	return tw.Flush()
}

// errDamaged makes verify exit non-zero when it found damage it did not
// repair.
var errDamaged = errors.New("damaged NARs found; run cairn verify --repair to drop them so they are fetched again")

func verifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var repair bool
	a, c, rest, err := adminCommand("verify", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&repair, "repair", false, "drop damaged NARs so they are fetched from upstream when next asked")
	})
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("verify takes no arguments, got %q", rest)
	}
	path := "/_cairn/verify"
	if repair {
		path += "?repair=1"
	}
	var bytesDone uint64
	start := time.Now()
	last := time.Time{}
	res, err := c.stream(ctx, "POST", path, nil, func(line []byte) error {
		if a.json {
			_, err := fmt.Fprintf(stdout, "%s\n", line)
			return err
		}
		var ev appliance.VerifyEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return err
		}
		bytesDone += ev.Bytes
		if !ev.OK {
			what := "DAMAGED"
			if ev.Dropped {
				what = "DAMAGED, dropped"
			}
			fmt.Fprintf(stdout, "%s %s %s: %s\n", what, ev.NarHash, strings.Join(ev.Paths, " "), ev.Error)
		}
		if time.Since(last) > time.Second || ev.Done == ev.Total {
			last = time.Now()
			rate := float64(bytesDone) / max(time.Since(start).Seconds(), 1e-3)
			fmt.Fprintf(stderr, "verify: %d/%d NARs, %s, %s/s\n", ev.Done, ev.Total, human(bytesDone), human(uint64(rate)))
		}
		return nil
	})
	if err != nil {
		return err
	}
	var rep appliance.VerifyReport
	if err := json.Unmarshal(res, &rep); err != nil {
		return fmt.Errorf("verify: bad result: %w", err)
	}
	if a.json {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "verified %d NARs (%s) in %s: %d damaged, %d dropped\n", rep.NARs, human(rep.Bytes),
			rep.Duration.Round(time.Millisecond), rep.Damaged, rep.Dropped)
	}
	if rep.Damaged > rep.Dropped {
		return errDamaged
	}
	return nil
}

// adminCmd runs one admin command until it ends or SIGINT/SIGTERM.
func adminCmd(name string, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"pin": pinCmd, "gc": gcCmd, "stats": statsCmd, "verify": verifyCmd,
	}
	return cmds[name](ctx, args, stdout, stderr)
}
