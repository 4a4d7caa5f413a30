package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance"
	"cairn/internal/nixtest"
)

// This file holds the benchmarks of the push target and of the cache
// lifecycle. Like BenchmarkProxy (bench_test.go), whose /proc helpers they
// call, each prints one table in which every figure stands next to a
// baseline measured in the same run: other benchmarks may share the
// machine, so absolute numbers are noisy and only the ratios carry over.

// BenchmarkPush measures `nix copy --to http://cairn` into a push-only
// cairn against `nix copy --to file://DIR` of the same closure at the same
// compression, the two taking turns, with the real Nix client:
//
//   - the closure is the go1.25.0 toolchain (NAR 191 MB) and two small
//     paths on top of it, copied from the fixture-local store
//   - every copy gets a fresh cairn data directory or a fresh file://
//     directory, and a fresh Nix narinfo cache
//   - zstd on both URLs is the main row: with Nix's default for HTTP
//     stores, xz, the client's own compression (1-2 minutes of CPU for
//     this closure) would dominate both sides equally and hide cairn
//   - xz rows run only with CAIRN_BENCH_PUSH_XZ=N (N runs each): one pair
//     of xz copies takes 3-6 minutes on a 2-core machine
//
// Target: the median cairn copy takes at most 1.3x the median file:// copy.
// It also prints cairn's CPU seconds per push (utime+stime of the process).
//
// A third target, a sink that answers the same HTTP requests and throws
// every NAR away, shows what Nix's own HTTP upload path costs against
// file:// before any server does work: Nix compresses each NAR whole and
// only then uploads it, so a server's ingest time adds to that floor.
// CAIRN_BENCH_RUNS (default 3) sets the number of runs.
func BenchmarkPush(b *testing.B) {
	nixtest.RequireNix(b)
	runs := lbEnvInt(b, "CAIRN_BENCH_RUNS", 3, 1, 20)
	xzRuns := lbEnvInt(b, "CAIRN_BENCH_PUSH_XZ", 0, 0, 20)
	fx := pushBenchFixture(b)
	for range b.N {
		pushBenchRun(b, fx, runs, xzRuns)
	}
}

// pushTarget is the ratio of cairn's push time to file://'s it must stay
// under.
const pushTarget = 1.3

// pushFixture is the closure BenchmarkPush copies.
type pushFixture struct {
	store   string   // the fixture-local Nix store holding the closure
	tree    string   // the toolchain on disk, to read once before timing
	paths   []string // the closure, root first
	narSize int64    // NAR bytes of the whole closure
}

func (fx pushFixture) root() string { return fx.paths[0] }

// pushBenchFixture adds two small paths on top of the go1.25.0 toolchain in
// its fixture store: a push of a real closure uploads references before the
// paths that name them, and cairn checks that each reference is cached.
func pushBenchFixture(b *testing.B) pushFixture {
	b.Helper()
	tc := nixtest.Toolchains(b, "1.25.0")[0]
	cl := nixtest.Closure{Store: tc.Store}
	wrapper := cl.AddText(b, "go-push-wrapper", "#!/bin/sh\n# a small path that references the Go toolchain:", tc.StorePath)
	root := cl.AddText(b, "go-push-env", "# the environment of a CI job, on top of", wrapper)
	fx := pushFixture{store: tc.Store, tree: filepath.Join(tc.Store, tc.StorePath)}

	var infos []struct {
		Path    string `json:"path"`
		NarSize int64  `json:"narSize"`
	}
	out := nixtest.Run(b, "nix", "path-info", "--store", tc.Store, "--json", "-r", root)
	if err := json.Unmarshal(out, &infos); err != nil {
		b.Fatalf("nix path-info --json printed %q: %v", out, err)
	}
	fx.paths = []string{root}
	for _, in := range infos {
		fx.narSize += in.NarSize
		if in.Path != root {
			fx.paths = append(fx.paths, in.Path)
		}
	}
	if len(fx.paths) != 3 {
		b.Fatalf("closure of %s has %d paths, want 3 (itself, the wrapper, go1.25.0): %v", root, len(fx.paths), fx.paths)
	}
	return fx
}

// pushSample is one timed `nix copy --to`.
type pushSample struct {
	wall, clientCPU, serverCPU float64 // s
	put                        float64 // s cairn spent in PUT requests, from its request log; -1 when not found
	stored                     int64   // bytes the target holds right after the copy, as du counts them
}

// pushResult is every sample of one compression.
type pushResult struct {
	comp              string
	cairn, file, sink []pushSample
}

func pushBenchRun(b *testing.B, fx pushFixture, runs, xzRuns int) {
	toks := lbTokensFile(b)
	netrc := filepath.Join(b.TempDir(), "netrc")
	if err := os.WriteFile(netrc, []byte("machine 127.0.0.1 login cairn password "+writeToken+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	// The first copy would otherwise read the toolchain from disk and the
	// later ones from the page cache.
	lbReadTree(b, fx.tree)
	fmt.Printf("push bench: %d cores, load %s; closure %s (%d paths, NAR %.0f MB); %d runs with zstd, %d with xz\n",
		runtime.NumCPU(), lbLoadAvg(), fx.root(), len(fx.paths), float64(fx.narSize)/1e6, runs, xzRuns)

	var results []pushResult
	for _, comp := range []struct {
		name string
		runs int
	}{{"zstd", runs}, {"xz", xzRuns}} {
		r := pushResult{comp: comp.name}
		for i := range comp.runs {
			// Alternate which target goes first, so that neither always
			// runs right after the other.
			order := []bool{true, false}
			if i%2 == 1 {
				order = []bool{false, true}
			}
			for _, toCairn := range order {
				if toCairn {
					r.cairn = append(r.cairn, pushToCairn(b, fx, comp.name, toks, netrc))
				} else {
					r.file = append(r.file, pushToFile(b, fx, comp.name, netrc))
				}
			}
			r.sink = append(r.sink, pushToSink(b, fx, comp.name, netrc))
			lbProgress("%s push %d/%d: cairn %.2fs (cairn CPU %.2fs, client CPU %.2fs), file:// %.2fs (client CPU %.2fs), null sink %.2fs",
				comp.name, i+1, comp.runs, r.cairn[i].wall, r.cairn[i].serverCPU, r.cairn[i].clientCPU, r.file[i].wall, r.file[i].clientCPU, r.sink[i].wall)
		}
		if comp.runs > 0 {
			results = append(results, r)
		}
	}

	var rows []lbRow
	for _, r := range results {
		rows = append(rows, pushRows(fx, r)...)
	}
	title := fmt.Sprintf("nix copy --to cairn vs --to file:// (same closure, same compression): medians of %d runs", runs)
	if xzRuns > 0 {
		title += fmt.Sprintf(" (xz: %d)", xzRuns)
	}
	lbPrintTable(title+", ratio = cairn / file://", rows)
	for _, r := range results {
		fmt.Printf("%s samples, s: cairn wall %s | file:// wall %s | null sink wall %s | cairn CPU %s | cairn PUT %s\n", r.comp,
			pushSamples(r.cairn, func(s pushSample) float64 { return s.wall }),
			pushSamples(r.file, func(s pushSample) float64 { return s.wall }),
			pushSamples(r.sink, func(s pushSample) float64 { return s.wall }),
			pushSamples(r.cairn, func(s pushSample) float64 { return s.serverCPU }),
			pushSamples(r.cairn, func(s pushSample) float64 { return s.put }))
	}
	if xzRuns == 0 {
		fmt.Println("xz rows skipped: each xz copy spends 1-2 minutes of client CPU compressing; set CAIRN_BENCH_PUSH_XZ=N for N runs")
	}
	fmt.Println("cairn's MB on disk are stored-block zstd frames; its background recompression (BenchmarkProxy, e.) shrinks them 2 minutes later.")
	fmt.Println()

	z := results[0]
	b.ReportMetric(benchMedian(z.cairn, func(s pushSample) float64 { return s.wall })/benchMedian(z.file, func(s pushSample) float64 { return s.wall }), "push-zstd-x")
	b.ReportMetric(benchMedian(z.cairn, func(s pushSample) float64 { return s.serverCPU }), "cairn-CPU-s/push")
}

// pushRows are the table lines of one compression.
func pushRows(fx pushFixture, r pushResult) []lbRow {
	wall := func(s pushSample) float64 { return s.wall }
	client := func(s pushSample) float64 { return s.clientCPU }
	server := func(s pushSample) float64 { return s.serverCPU }
	mbps := func(s pushSample) float64 { return float64(fx.narSize) / 1e6 / s.wall }
	stored := func(s pushSample) float64 { return float64(s.stored) / 1e6 }
	put := func(s pushSample) float64 { return s.put }
	rows := []lbRow{
		{metric: r.comp + ": nix copy wall s (file://)", value: benchMedian(r.cairn, wall), base: benchMedian(r.file, wall), target: pushTarget},
		{metric: r.comp + ": null HTTP sink wall s (file://)", value: benchMedian(r.sink, wall), base: benchMedian(r.file, wall)},
		{metric: r.comp + ": nix copy wall s (null HTTP sink)", value: benchMedian(r.cairn, wall), base: benchMedian(r.sink, wall)},
	}
	if benchMedian(r.cairn, put) > 0 {
		// Nix compresses the whole NAR into a temporary file before
		// it uploads anything, so a push is that, then the PUTs.
		rows = append(rows,
			lbRow{metric: r.comp + ": cairn PUT time s, upload+ingest (-)", value: benchMedian(r.cairn, put)},
			lbRow{metric: r.comp + ": wall minus PUT time s (file:// wall)", value: benchMedian(r.cairn, func(s pushSample) float64 { return s.wall - s.put }),
				base: benchMedian(r.file, wall)},
			lbRow{metric: r.comp + ": NAR MB/s during cairn's PUTs (-)", value: float64(fx.narSize) / 1e6 / benchMedian(r.cairn, put)},
		)
	} else {
		fmt.Println("(no PUT lines in cairn's request log: the PUT rows are left out)")
	}
	rows = append(rows,
		lbRow{metric: r.comp + ": closure NAR MB/s (file://)", value: benchMedian(r.cairn, mbps), base: benchMedian(r.file, mbps)},
		lbRow{metric: r.comp + ": nix client CPU s (file://)", value: benchMedian(r.cairn, client), base: benchMedian(r.file, client)},
		lbRow{metric: r.comp + ": cairn CPU s per push (-)", value: benchMedian(r.cairn, server)},
		lbRow{metric: r.comp + ": MB on disk after the push (file://)", value: benchMedian(r.cairn, stored), base: benchMedian(r.file, stored)},
	)
	return rows
}

func pushSamples(xs []pushSample, f func(pushSample) float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", f(x))
	}
	return strings.Join(s, " ")
}

// pushToCairn copies the closure into a fresh push-only cairn and checks
// that cairn serves every path of it.
func pushToCairn(b *testing.B, fx pushFixture, comp, toks, netrc string) pushSample {
	b.Helper()
	c := startCairn(b, "--upstream", "none", "--tokens-file", toks)
	defer os.RemoveAll(c.Data)
	pid := c.cmd.Process.Pid
	cpu0 := benchProcCPU(pid)
	s := pushCopy(b, fx, c.URL+"?compression="+comp, netrc)
	s.serverCPU = benchProcCPU(pid) - cpu0
	for _, p := range fx.paths {
		if st := lbStatus(b, c.URL+"/"+nixtest.HashPart(b, p)+".narinfo"); st != 200 {
			b.Fatalf("after nix copy --to cairn, GET of the narinfo of %s: HTTP %d, want 200\n%s", p, st, c.out.String())
		}
	}
	s.stored = nixtest.DiskUsage(b, c.Data)
	c.stop(b)
	// A request's log line follows its answer, so Nix may exit before it
	// is written; once cairn has exited, its output is complete.
	s.put = pushPutSeconds(c.out.String())
	return s
}

// pushToFile copies the closure into a fresh file:// cache and checks that
// it holds every path at the asked compression.
func pushToFile(b *testing.B, fx pushFixture, comp, netrc string) pushSample {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "cache")
	defer os.RemoveAll(dir)
	s := pushCopy(b, fx, "file://"+dir+"?compression="+comp, netrc)
	s.put = -1
	for _, p := range fx.paths {
		if got := nixtest.NarInfoField(b, dir, p, "Compression"); got != comp {
			b.Fatalf("file:// cache narinfo of %s: Compression %q, want %q", p, got, comp)
		}
	}
	s.stored = nixtest.DiskUsage(b, dir)
	return s
}

// pushToSink copies the closure to a null HTTP sink: a server that speaks
// just enough of the binary cache protocol for `nix copy --to` and drops
// every NAR it is sent.
func pushToSink(b *testing.B, fx pushFixture, comp, netrc string) pushSample {
	b.Helper()
	sink := newPushSink()
	srv := httptest.NewServer(sink)
	defer srv.Close()
	s := pushCopy(b, fx, srv.URL+"?compression="+comp, netrc)
	s.put = -1
	if n := sink.narinfos(); n != len(fx.paths) {
		b.Fatalf("null sink got %d narinfos, want %d", n, len(fx.paths))
	}
	return s
}

// pushSink is the null HTTP sink: narinfos are kept, so that HEAD and GET
// find what was pushed; every other body is read and dropped.
type pushSink struct {
	mu   sync.Mutex
	docs map[string][]byte
}

func newPushSink() *pushSink { return &pushSink{docs: map[string][]byte{}} }

func (k *pushSink) narinfos() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.docs)
}

func (k *pushSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/nix-cache-info":
		_, _ = io.WriteString(w, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n")
	case r.Method == http.MethodPut && strings.HasSuffix(p, ".narinfo"):
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		k.mu.Lock()
		k.docs[p] = body
		k.mu.Unlock()
	case r.Method == http.MethodPut:
		_, _ = io.Copy(io.Discard, r.Body)
	default:
		k.mu.Lock()
		body, ok := k.docs[p]
		k.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}
}

// pushPutSeconds sums the durations cairn logged for PUT requests: each
// runs from its headers to the commit of what it carried, so for a NAR it
// is the upload and the ingest. It returns -1 when the log has none.
func pushPutSeconds(log string) float64 {
	total, found := 0.0, false
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "msg=request method=PUT ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "duration="); ok {
				if d, err := time.ParseDuration(v); err == nil {
					total, found = total+d.Seconds(), true
				}
			}
		}
	}
	if !found {
		return -1
	}
	return total
}

// pushCopy times `nix copy --to url` of the closure, with the same options
// for both targets (the netrc only matters to cairn).
func pushCopy(b *testing.B, fx pushFixture, url, netrc string) pushSample {
	b.Helper()
	// Dirty pages of the previous copy are written back now rather than
	// during this one.
	syscall.Sync()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix", "copy", "--store", fx.store, "--to", url,
		"--option", "netrc-file", netrc,
		"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0", fx.root())
	cmd.Env = nixtest.Env(b) // a fresh XDG_CACHE_HOME: no narinfo disk cache
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("nix copy --to %s %s: %v\n%s", url, fx.root(), err, out.String())
	}
	ps := cmd.ProcessState
	return pushSample{wall: wall.Seconds(), clientCPU: (ps.UserTime() + ps.SystemTime()).Seconds()}
}

// BenchmarkEviction measures cairn evicting 10,000 small paths while
// clients keep asking it for a narinfo it holds:
//
//   - a data directory is filled in-process with 10,000 distinct store
//     paths of one 1 KiB file each (random bytes, so each is its own
//     chunk), plus the narinfo-hit target, which is then pinned with
//     `cairn pin add`
//   - cairn serves it with --max-size 1K, under the size of any one path,
//     so eviction must go through every path down to the hit target, the
//     most recently used, and remove all 10,000 others: the pin is what
//     keeps the target, and the benchmark checks that it was skipped and
//     answered 200 throughout; nothing triggers eviction until the
//     benchmark does
//   - a. wrk loads the pinned narinfo at rest
//   - b. wrk loads it again and, 1 s in, POST /_cairn/evict, then
//     POST /_cairn/gc, each timed; the peak RSS (VmHWM) is reset through
//     /proc/PID/clear_refs before each, so it shows that step alone
//   - c. wrk loads it at rest once more; the at-rest baseline pools a. and
//     c., which bracket the eviction, and c. against a. shows how much the
//     machine's other load moved meanwhile
//
// Request rates come from cairn's own narinfo-hit counter read at the
// edges of each window, so a rate covers exactly the eviction, not wrk's
// whole run. CAIRN_BENCH_WRK_DURATION (default 5s, at most 30s) sets the
// at-rest window.
func BenchmarkEviction(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Fatalf("wrk not found on PATH: BenchmarkEviction loads cairn with wrk during the eviction; " +
			"run `make bench-deps` (apt-get install wrk)")
	}
	// The 1-minute eviction tick must not beat the benchmark's own trigger.
	rest := lbEnvDuration(b, "CAIRN_BENCH_WRK_DURATION", 5*time.Second, time.Second, 30*time.Second)
	for range b.N {
		evictBenchRun(b, rest)
	}
}

const (
	evictBenchPaths    = 10000
	evictBenchFileSize = 1 << 10
	evictBenchMaxSize  = "1K"
	evictBenchConns    = 32
)

// evictPopulation is what evictBenchPopulate stored.
type evictPopulation struct {
	hit    string        // the pinned narinfo-hit target
	ingest time.Duration // ingesting the evictBenchPaths paths
}

// evictResult is everything one BenchmarkEviction run measured.
type evictResult struct {
	pop                 evictPopulation
	before, after       appliance.Report // cairn's stats before the eviction and after gc
	restWin, evictWin   lbWindow         // a. at rest; b. during POST /_cairn/evict
	gcWin, afterWin     lbWindow         // b. during POST /_cairn/gc; c. at rest again
	restWrk, loadedWrk  lbWrkResult      // a.; b. from 1 s before the eviction to the end of gc
	afterWrk            lbWrkResult      // c.
	ev                  *appliance.EvictReport
	gc                  appliance.GCReport
	hwmRest, anonRest   int64 // KiB: peak RSS up to the end of a., anonymous RSS then
	hwmEvict, anonEvict int64 // KiB: peak RSS of the eviction, sampled anonymous peak
	hwmGC               int64 // KiB: peak RSS of gc
	resetEvict, resetGC lbPeakReset
	duBefore, duAfter   int64 // bytes of the data directory
	pid                 int
}

func evictBenchRun(b *testing.B, restDur time.Duration) {
	dir := filepath.Join(b.TempDir(), "data")
	fmt.Printf("eviction bench: %d cores, load %s; filling %s with %d paths of %d bytes\n",
		runtime.NumCPU(), lbLoadAvg(), dir, evictBenchPaths, evictBenchFileSize)
	r := &evictResult{pop: evictBenchPopulate(b, dir)}
	lbProgress("ingested %d paths in-process in %.1fs (%.2f ms/path)", evictBenchPaths, r.pop.ingest.Seconds(),
		float64(r.pop.ingest.Milliseconds())/evictBenchPaths)

	c := startCairn(b, "--data", dir, "--upstream", "none", "--tokens-file", lbTokensFile(b), "--max-size", evictBenchMaxSize)
	r.pid = c.cmd.Process.Pid
	stopTrim := lbTrimLogs(c)
	defer stopTrim()
	url := evictBenchPin(b, c, r)
	r.duBefore = nixtest.DiskUsage(b, dir)
	script := lbWrkScript(b)

	// a. At rest.
	r.restWin, r.restWrk = evictBenchAtRest(b, c, url, script, restDur)
	if r.restWrk.sockErrs > 0 {
		b.Fatalf("wrk at rest: %d socket errors or timeouts in %d requests", r.restWrk.sockErrs, r.restWrk.requests)
	}
	r.hwmRest = benchProcStatusKiB(b, r.pid, "VmHWM")
	r.anonRest = lbStatusKiB(r.pid, "RssAnon")
	lbProgress("a. at rest: %.0f req/s (cairn's count %.0f), p99 %.2fms; cairn %.2f cores, peak RSS %d MiB",
		r.restWrk.rps, r.restWin.rps(), r.restWrk.p99ms, r.restWin.cores(), r.hwmRest/1024)

	// b. The same load, with the eviction and then GC 1 s into it.
	evictBenchUnderLoad(b, c, url, script, r)
	lbProgress("b. eviction: %d paths in %.2fs (cairn says %.2fs), %.0f req/s meanwhile; gc %.2fs, %.0f req/s meanwhile",
		r.ev.PathsEvicted, r.evictWin.wall, r.ev.Duration.Seconds(), r.evictWin.rps(), r.gcWin.wall, r.gcWin.rps())
	r.after = lbReport(b, c)
	if st := lbStatus(b, url); st != 200 {
		b.Fatalf("after eviction, GET of the pinned narinfo: HTTP %d, want 200", st)
	}
	if r.ev.PathsEvicted != evictBenchPaths || r.ev.SkippedPinned != 1 || r.after.PinnedPaths != 1 {
		b.Fatalf("eviction removed %d paths, skipped %d pinned, leaves %d pinned: want all %d unpinned ones gone, the pinned one skipped and kept\n%+v",
			r.ev.PathsEvicted, r.ev.SkippedPinned, r.after.PinnedPaths, evictBenchPaths, *r.ev)
	}
	r.duAfter = nixtest.DiskUsage(b, dir)

	// c. At rest again, the second half of the baseline.
	r.afterWin, r.afterWrk = evictBenchAtRest(b, c, url, script, restDur)
	lbProgress("c. at rest after gc: %.0f req/s (cairn's count %.0f), p99 %.2fms", r.afterWrk.rps, r.afterWin.rps(), r.afterWrk.p99ms)
	c.stop(b)

	r.print()
	r.report(b)
}

// evictBenchPin pins the narinfo-hit target with `cairn pin add`, checks
// what cairn holds, and returns the target's narinfo URL.
func evictBenchPin(b *testing.B, c *cairnProc, r *evictResult) string {
	b.Helper()
	if out, err := lbCLI(c, "pin", "add", r.pop.hit); err != nil {
		b.Fatalf("cairn pin add %s: %v\n%s", r.pop.hit, err, out)
	}
	url := c.URL + "/" + nixtest.HashPart(b, r.pop.hit) + ".narinfo"
	if st := lbStatus(b, url); st != 200 {
		b.Fatalf("GET %s: HTTP %d, want 200", url, st)
	}
	r.before = lbReport(b, c)
	if r.before.Paths != evictBenchPaths+1 || r.before.PinnedPaths != 1 {
		b.Fatalf("cairn holds %d paths (%d pinned), want %d (1 pinned)", r.before.Paths, r.before.PinnedPaths, evictBenchPaths+1)
	}
	if r.before.PhysicalBytes <= r.before.MaxSize {
		b.Fatalf("cairn holds %d bytes of chunks, not over --max-size %d: nothing to evict", r.before.PhysicalBytes, r.before.MaxSize)
	}
	return url
}

// evictBenchAtRest runs wrk on url for dur and returns what cairn counted
// meanwhile and what wrk did.
func evictBenchAtRest(b *testing.B, c *cairnProc, url, script string, dur time.Duration) (lbWindow, lbWrkResult) {
	b.Helper()
	m0 := lbMark(b, c)
	w := lbStartWrk(b, url, script, dur).wait(b, false)
	return lbMark(b, c).since(m0), w
}

// evictBenchUnderLoad starts wrk on url and, 1 s in, asks cairn to evict,
// then to collect garbage, each step timed, with the peak RSS reset before
// it; it stops wrk once GC has answered.
func evictBenchUnderLoad(b *testing.B, c *cairnProc, url, script string, r *evictResult) {
	b.Helper()
	if rep := lbReport(b, c); rep.LastEviction != nil {
		b.Fatalf("cairn evicted on its own before the benchmark asked (the 1-minute tick?): %+v", *rep.LastEviction)
	}
	loaded := lbStartWrk(b, url, script, 10*time.Minute)
	time.Sleep(time.Second)

	r.resetEvict = lbResetPeak(b, r.pid)
	mem := benchWatchMem(b, r.pid)
	e0 := lbMark(b, c)
	lbAdmin(b, c, "POST", "/_cairn/evict", &r.ev)
	r.evictWin = lbMark(b, c).since(e0)
	r.hwmEvict = benchProcStatusKiB(b, r.pid, "VmHWM")
	r.anonEvict = mem.stop()

	r.resetGC = lbResetPeak(b, r.pid)
	g0 := lbMark(b, c)
	lbAdmin(b, c, "POST", "/_cairn/gc", &r.gc)
	r.gcWin = lbMark(b, c).since(g0)
	r.hwmGC = benchProcStatusKiB(b, r.pid, "VmHWM")

	r.loadedWrk = loaded.wait(b, true)
	if r.ev == nil {
		b.Fatal("POST /_cairn/evict answered null: cairn found nothing to evict")
	}
}

// rest is the at-rest baseline: the windows before and after pooled.
// Together they bracket the eviction in time, so a change in the
// machine's other load weighs on both sides alike.
func (r *evictResult) rest() lbWindow { return r.restWin.plus(r.afterWin) }

func (r *evictResult) rows() []lbRow {
	rest := r.rest()
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	return []lbRow{
		{metric: "narinfo hit req/s during eviction (at rest)", value: r.evictWin.rps(), base: rest.rps()},
		{metric: "narinfo hit req/s during gc (at rest)", value: r.gcWin.rps(), base: rest.rps()},
		{metric: "narinfo hit req/s at rest, after (before)", value: r.afterWin.rps(), base: r.restWin.rps()},
		{metric: "narinfo hit req/s, wrk incl. 1s lead-in (at rest)", value: r.loadedWrk.rps, base: lbWrkPooled(r.restWrk, r.afterWrk)},
		{metric: "narinfo hit p99 ms, wrk incl. lead-in (at rest)", value: r.loadedWrk.p99ms, base: (r.restWrk.p99ms + r.afterWrk.p99ms) / 2},
		{metric: "narinfo hit p99 ms at rest, after (before)", value: r.afterWrk.p99ms, base: r.restWrk.p99ms},
		{metric: "narinfo hit max ms, wrk incl. lead-in (at rest)", value: r.loadedWrk.maxms, base: max(r.restWrk.maxms, r.afterWrk.maxms)},
		{metric: "wrk socket errors + timeouts (at rest)", value: float64(r.loadedWrk.sockErrs), base: float64(r.restWrk.sockErrs + r.afterWrk.sockErrs)},
		{metric: "eviction wall s (in-process ingest of the paths)", value: r.evictWin.wall, base: r.pop.ingest.Seconds()},
		{metric: "eviction ms/path (in-process ingest ms/path)", value: r.evictWin.wall * 1e3 / float64(max(r.ev.PathsEvicted, 1)),
			base: r.pop.ingest.Seconds() * 1e3 / evictBenchPaths},
		{metric: "paths evicted (paths held before)", value: float64(r.ev.PathsEvicted), base: float64(r.before.Paths)},
		{metric: "chunk KB after eviction (before; limit 1 KiB)", value: float64(r.ev.PhysicalAfter) / 1e3, base: float64(r.ev.PhysicalBefore) / 1e3},
		{metric: "cairn CPU s, eviction (at rest, same wall)", value: r.evictWin.cpu, base: rest.cores() * r.evictWin.wall},
		{metric: "cairn cores busy, eviction (at rest)", value: r.evictWin.cores(), base: rest.cores()},
		{metric: "peak RSS MiB, eviction (peak at rest)", value: mib(r.hwmEvict), base: mib(r.hwmRest)},
		{metric: "peak RSS MiB, gc (peak at rest)", value: mib(r.hwmGC), base: mib(r.hwmRest)},
		{metric: "peak anon RSS MiB, eviction, 100ms samples (at rest)", value: mib(r.anonEvict), base: mib(r.anonRest)},
		{metric: "gc wall s (eviction wall)", value: r.gcWin.wall, base: r.evictWin.wall},
		{metric: "data dir MB after eviction + gc (before)", value: float64(r.duAfter) / 1e6, base: float64(r.duBefore) / 1e6},
	}
}

func (r *evictResult) print() {
	lbPrintTable(fmt.Sprintf("eviction of %d small paths under wrk -t2 -c%d on a pinned narinfo: one run, baseline in brackets from the same run; "+
		"at rest = a. and c. pooled (p99: their mean, max: the larger)", evictBenchPaths, evictBenchConns), r.rows())
	fmt.Printf("eviction answer: %d paths, %d NARs, %d chunks, %d pinned skipped, %.2fs by cairn's clock; gc: %d orphan chunks, %d value-log rewrites, %.2fs\n",
		r.ev.PathsEvicted, r.ev.NARsDeleted, r.ev.ChunksDeleted, r.ev.SkippedPinned, r.ev.Duration.Seconds(),
		r.gc.OrphanChunks, r.gc.LogRewrites, r.gc.Duration.Seconds())
	fmt.Printf("peak RSS reset through /proc/%d/clear_refs: before eviction %s; before gc %s\n", r.pid, r.resetEvict, r.resetGC)
	fmt.Printf("cairn after gc: %d paths, %d chunks, %d bytes of chunks; wrk during b.: %d requests in %.1fs\n\n",
		r.after.Paths, r.after.Chunks, r.after.PhysicalBytes, r.loadedWrk.requests, r.loadedWrk.seconds)
}

// report adds the key figures to the benchmark line, for benchstat.
func (r *evictResult) report(b *testing.B) {
	b.ReportMetric(r.evictWin.wall, "evict-s")
	b.ReportMetric(r.evictWin.rps()/r.rest().rps(), "evict-req/s-x")
	b.ReportMetric(float64(r.hwmEvict)/1024, "evict-peak-RSS-MiB")
}

// evictBenchPopulate fills a new data directory in-process: far faster than
// pushing 10,000 paths through nix copy, and what it stores is the same.
func evictBenchPopulate(b *testing.B, dir string) evictPopulation {
	b.Helper()
	ctx := context.Background()
	// Compressed at ingest: stored-block frames would leave 10,000 NARs in
	// the recompress queue, due by the time cairn starts, and the
	// recompressor would run in the middle of the measurements.
	s, err := appliance.Open(ctx, appliance.Config{Dir: dir, CompressOnIngest: true, RecompressDelay: -1})
	if err != nil {
		b.Fatalf("open a new data directory %s: %v", dir, err)
	}
	defer s.Close()

	start := time.Now()
	jobs := make(chan int)
	errs := make(chan error, evictBenchPaths)
	var wg sync.WaitGroup
	// Each ingest mostly waits for its commit's fsync: more goroutines
	// than cores keep the disk busy.
	for range 4 * runtime.NumCPU() {
		wg.Go(func() {
			for i := range jobs {
				if _, err := evictBenchIngest(ctx, s, fmt.Sprintf("evict-bench-%05d", i), uint64(i)); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range evictBenchPaths {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("ingesting %d small paths: %v", evictBenchPaths, err)
	}
	hit, err := evictBenchIngest(ctx, s, "evict-bench-hit", evictBenchPaths)
	if err != nil {
		b.Fatalf("ingesting the narinfo-hit target: %v", err)
	}
	if err := s.Close(); err != nil {
		b.Fatalf("closing %s: %v", dir, err)
	}
	return evictPopulation{hit: hit, ingest: took}
}

// evictBenchIngest stores a path named name holding one file of random
// bytes from seed and returns its store path.
func evictBenchIngest(ctx context.Context, s *appliance.Store, name string, seed uint64) (string, error) {
	content := make([]byte, evictBenchFileSize)
	r := rand.New(rand.NewPCG(seed, 0x636169726e)) // "cairn"
	for i := 0; i < len(content); i += 8 {
		binary.LittleEndian.PutUint64(content[i:], r.Uint64())
	}
	nar := lbFileNAR(content)
	sum := sha256.Sum256([]byte(name))
	p := "/nix/store/" + nixbase32.EncodeToString(sum[:20]) + "-" + name
	ni := &appliance.NarInfo{StorePath: p, NarHash: sha256.Sum256(nar), NarSize: uint64(len(nar)), Source: "bench"}
	if _, err := s.Ingest(ctx, appliance.Want{Info: ni}, bytes.NewReader(nar), appliance.CompressionNone); err != nil {
		return "", fmt.Errorf("ingest %s: %w", p, err)
	}
	return p, nil
}

// lbFileNAR is the NAR of a single regular file: each token is a 64-bit
// little-endian length and the bytes, padded with zeros to 8.
func lbFileNAR(content []byte) []byte {
	var out []byte
	for _, tok := range [][]byte{[]byte("nix-archive-1"), []byte("("), []byte("type"), []byte("regular"),
		[]byte("contents"), content, []byte(")")} {
		out = binary.LittleEndian.AppendUint64(out, uint64(len(tok)))
		out = append(out, tok...)
		out = append(out, make([]byte, (8-len(tok)%8)%8)...)
	}
	return out
}

// lbMarkAt is cairn's narinfo-hit count and CPU time at one moment.
type lbMarkAt struct {
	at   time.Time
	hits uint64
	cpu  float64
}

// lbWindow is what cairn did between two marks.
type lbWindow struct {
	wall, cpu float64 // s
	hits      uint64
}

func (w lbWindow) rps() float64   { return float64(w.hits) / w.wall }
func (w lbWindow) cores() float64 { return w.cpu / w.wall }

// plus pools two windows, as if they were one.
func (w lbWindow) plus(o lbWindow) lbWindow {
	return lbWindow{wall: w.wall + o.wall, cpu: w.cpu + o.cpu, hits: w.hits + o.hits}
}

func lbMark(b *testing.B, c *cairnProc) lbMarkAt {
	b.Helper()
	r := lbReport(b, c)
	return lbMarkAt{at: time.Now(), hits: r.Hits, cpu: benchProcCPU(c.cmd.Process.Pid)}
}

func (m lbMarkAt) since(from lbMarkAt) lbWindow {
	return lbWindow{wall: m.at.Sub(from.at).Seconds(), cpu: m.cpu - from.cpu, hits: m.hits - from.hits}
}

// lbReport is cairn's GET /_cairn/stats.
func lbReport(b *testing.B, c *cairnProc) appliance.Report {
	b.Helper()
	var r appliance.Report
	lbAdmin(b, c, "GET", "/_cairn/stats", &r)
	return r
}

// lbAdmin calls the admin API with the admin token and decodes the JSON
// answer into out. Eviction answers only when it is done, hence the long
// timeout.
func lbAdmin(b *testing.B, c *cairnProc, method, path string, out any) {
	b.Helper()
	req, err := http.NewRequest(method, c.URL+path, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := (&http.Client{Timeout: 15 * time.Minute}).Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("%s %s: HTTP %d %v\n%s", method, path, resp.StatusCode, err, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		b.Fatalf("%s %s: %v\n%s", method, path, err, body)
	}
}

// lbCLI runs a cairn admin command against c with the admin token.
func lbCLI(c *cairnProc, args ...string) (string, error) {
	cmd := exec.Command(cairnBin, args...)
	cmd.Env = append(os.Environ(), "CAIRN_SERVER="+c.URL, "CAIRN_TOKEN="+adminToken)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lbStatus is the status of a GET of url, its body discarded.
func lbStatus(b *testing.B, url string) int {
	b.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		b.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// lbTokensFile writes a cairn tokens file with the write and admin tokens
// the tests use.
func lbTokensFile(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("write %s\nadmin %s\n", writeToken, adminToken)), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// lbTrimLogs keeps the cairn output startCairn collects short while wrk
// runs: cairn logs one line per request. It returns the function that
// stops it.
func lbTrimLogs(c *cairnProc) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				benchTrimLog(c)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// lbPeakReset is what writing "5" to /proc/PID/clear_refs did to VmHWM.
type lbPeakReset struct {
	before, after, rss int64 // KiB
	err                error
}

// String says whether the reset visibly worked: the kernel sets the peak
// to the resident size, which shows only when the peak was above it.
func (r lbPeakReset) String() string {
	const slack = 1024 // KiB the RSS may grow between the reads
	verdict := "worked"
	switch {
	case r.err != nil:
		return "failed: " + r.err.Error()
	case r.after > r.rss+slack:
		verdict = "did NOT work"
	case r.before <= r.rss+slack:
		verdict = "no visible effect, the peak was the RSS already"
	}
	return fmt.Sprintf("%s (VmHWM %d -> %d MiB, VmRSS %d MiB)", verdict, r.before/1024, r.after/1024, r.rss/1024)
}

// lbResetPeak resets pid's VmHWM to its current RSS, so that the next
// reading is the peak of what comes after.
func lbResetPeak(b *testing.B, pid int) lbPeakReset {
	b.Helper()
	r := lbPeakReset{before: benchProcStatusKiB(b, pid, "VmHWM")}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/clear_refs", pid), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("5")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	r.err = err
	r.after = benchProcStatusKiB(b, pid, "VmHWM")
	r.rss = benchProcStatusKiB(b, pid, "VmRSS")
	return r
}

// lbStatusKiB is a kB field of /proc/PID/status, 0 when it is missing.
func lbStatusKiB(pid int, field string) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// lbWrkScript writes a wrk script that prints one parseable line at the
// end, with the maximum latency, which shows a stall, besides percentiles.
func lbWrkScript(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "lifecycle.lua")
	const script = `done = function(s, lat, req)
  io.write("CAIRNLB requests=", s.requests, " duration_us=", s.duration,
    " p99_us=", lat:percentile(99), " max_us=", lat.max,
    " sock=", s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout,
    " status=", s.errors.status, "\n")
end
`
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// lbWrk is a running wrk.
type lbWrk struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error
	dur  time.Duration
}

// lbWrkResult is one wrk run, as wrk counted it.
type lbWrkResult struct {
	requests, sockErrs, status int64
	seconds, rps, p99ms, maxms float64
}

// lbWrkPooled is the request rate of two wrk runs taken together.
func lbWrkPooled(a, b lbWrkResult) float64 {
	return float64(a.requests+b.requests) / (a.seconds + b.seconds)
}

// lbStartWrk starts wrk -t2 on url for dur; the benchmark's cleanup kills
// it if it is still running.
func lbStartWrk(b *testing.B, url, script string, dur time.Duration) *lbWrk {
	b.Helper()
	w := &lbWrk{done: make(chan struct{}), dur: dur}
	w.cmd = exec.Command("wrk", "-t2", fmt.Sprintf("-c%d", evictBenchConns), fmt.Sprintf("-d%ds", int(dur.Seconds())),
		"--timeout", "5s", "-s", script, url)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		b.Fatalf("starting wrk: %v", err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.done) }()
	b.Cleanup(func() {
		select {
		case <-w.done:
		default:
			w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// wait waits for wrk to finish, first stopping it with SIGINT (on which it
// prints its results as at the end) when interrupt is set, and returns
// what it measured. Any non-2xx answer fails the benchmark: the target is
// pinned and must be served throughout.
func (w *lbWrk) wait(b *testing.B, interrupt bool) lbWrkResult {
	b.Helper()
	if interrupt {
		if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil {
			b.Fatalf("stopping wrk: %v", err)
		}
	}
	select {
	case <-w.done:
	case <-time.After(w.dur + time.Minute):
		b.Fatalf("wrk did not end within a minute of its %s:\n%s", w.dur, w.out.String())
	}
	if w.err != nil {
		b.Fatalf("wrk: %v\n%s", w.err, w.out.String())
	}
	kv := map[string]float64{}
	for _, line := range strings.Split(w.out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "CAIRNLB "); ok {
			for _, f := range strings.Fields(rest) {
				k, v, _ := strings.Cut(f, "=")
				kv[k], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	r := lbWrkResult{requests: int64(kv["requests"]), sockErrs: int64(kv["sock"]), status: int64(kv["status"]),
		seconds: kv["duration_us"] / 1e6, p99ms: kv["p99_us"] / 1e3, maxms: kv["max_us"] / 1e3}
	if r.requests == 0 || r.seconds == 0 {
		b.Fatalf("wrk completed no requests:\n%s", w.out.String())
	}
	if r.status > 0 {
		b.Fatalf("wrk: %d of %d answers were not 2xx:\n%s", r.status, r.requests, w.out.String())
	}
	r.rps = float64(r.requests) / r.seconds
	return r
}

// lbRow is one line of a table: a figure, the baseline it is read against
// (0: none), and, when target > 0, the largest ratio that passes.
type lbRow struct {
	metric      string
	value, base float64
	target      float64
}

// lbPrintTable prints rows with the ratio of each figure to its baseline.
func lbPrintTable(title string, rows []lbRow) {
	w := len("metric (baseline)")
	for _, r := range rows {
		w = max(w, len(r.metric))
	}
	fmt.Printf("\n## %s\n\n", title)
	line := func(c ...string) {
		fmt.Printf("%-*s  %9s  %9s  %7s  %8s  %s\n", w, c[0], c[1], c[2], c[3], c[4], c[5])
	}
	line("metric (baseline)", "value", "baseline", "ratio", "target", "ok?")
	var missed []string
	for _, r := range rows {
		base, ratio, target, ok := "-", "-", "", ""
		if r.base > 0 {
			base, ratio = benchNum(r.base), fmt.Sprintf("%.2fx", r.value/r.base)
		}
		if r.target > 0 {
			target, ok = fmt.Sprintf("<= %.2fx", r.target), "?"
			if r.base > 0 {
				ok = "yes"
				if r.value/r.base > r.target {
					ok = "NO"
					missed = append(missed, r.metric)
				}
			}
		}
		line(r.metric, benchNum(r.value), base, ratio, target, ok)
	}
	if len(missed) > 0 {
		fmt.Printf("targets missed in this run: %s\n", strings.Join(missed, "; "))
	}
	fmt.Println()
}

// lbReadTree reads every file under dir once, into the page cache.
func lbReadTree(b *testing.B, dir string) {
	b.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
	if err != nil {
		b.Fatalf("reading %s: %v", dir, err)
	}
}

// lbLoadAvg is the 1, 5 and 15 minute load average, to tell a reader of
// the output how busy the machine was.
func lbLoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// lbProgress prints one timestamped line while a benchmark runs.
func lbProgress(format string, args ...any) {
	fmt.Printf("  %s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// lbEnvInt reads an integer setting from the environment.
func lbEnvInt(b *testing.B, name string, def, lo, hi int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		b.Fatalf("%s=%q: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n
}

// lbEnvDuration reads a duration setting from the environment, in whole
// seconds because that is what wrk takes.
func lbEnvDuration(b *testing.B, name string, def, lo, hi time.Duration) time.Duration {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		b.Fatalf("%s=%q: want a duration from %s to %s for this benchmark", name, v, lo, hi)
	}
	return d.Truncate(time.Second)
}
