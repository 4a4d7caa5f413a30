package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cairn/internal/nixtest"
)

// BenchmarkProxy measures `cairn serve` as a pull-through proxy against
// nginx serving the same signed binary caches from disk (sendfile), in the
// same run, with the real Nix client, wrk and curl, the two taking turns:
//
//	a. cold pull of a closure (go1.25.1 + a small path that references it)
//	   through an empty cairn whose upstream is nginx-xz, against the same
//	   pull straight from nginx-xz, and through a store-less floor proxy
//	   that only decodes, verifies and frames (floor_bench_test.go); then
//	   go1.25.0, cold in cairn
//	b. warm pull of that closure, against nginx-zst and nginx-xz: once right
//	   away, and once after cairn has recompressed what it ingested
//	c. wrk on a narinfo hit and on a narinfo 404
//	d. curl GETs of the largest NAR, one stream and four in parallel
//	e. cairn's peak RSS, background recompression and data directory size
//
// Steps c and d run after the recompression and the space reclaim that
// follows it, so that background work cairn does a while after an ingest
// is measured on its own and does not land in the middle of a load step.
//
// It prints one table: every cairn figure next to its nginx baseline and the
// ratio. CAIRN_BENCH_WRK_DURATION (default 10s) and CAIRN_BENCH_RUNS
// (default 3) shorten a run.
func BenchmarkProxy(b *testing.B) {
	benchRequireTools(b)
	cfg := benchConfigFromEnv(b)
	fx := benchProxyFixtures(b)
	for range b.N {
		benchProxyRun(b, cfg, fx)
	}
}

// benchMissingHash is a store hash no cache here has: the narinfo 404 probe.
const benchMissingHash = "1b9p07z77phvv2hf6gm9f28syp39f1ag"

// benchClkTck is USER_HZ, the unit of the CPU times in /proc/PID/stat; it is
// 100 on every Linux architecture.
const benchClkTck = 100

type benchConfig struct {
	runs    int
	wrkDur  time.Duration
	wrkConn int
	narReps int
	narPar  int
	settle  time.Duration
}

func benchConfigFromEnv(b *testing.B) benchConfig {
	cfg := benchConfig{runs: 3, wrkDur: 10 * time.Second, wrkConn: 64, narReps: 5, narPar: 4, settle: 3 * time.Second}
	if v := os.Getenv("CAIRN_BENCH_WRK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			b.Fatalf("CAIRN_BENCH_WRK_DURATION=%q: want a duration of at least 1s, e.g. 10s", v)
		}
		cfg.wrkDur = d.Truncate(time.Second)
	}
	if v := os.Getenv("CAIRN_BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 20 {
			b.Fatalf("CAIRN_BENCH_RUNS=%q: want 1..20", v)
		}
		cfg.runs = n
	}
	return cfg
}

// benchRequireTools fails the benchmark when a tool it drives is missing.
func benchRequireTools(b *testing.B) {
	b.Helper()
	nixtest.RequireNix(b)
	for _, tool := range []struct{ bin, pkg string }{
		{"nginx", "nginx-light"}, {"wrk", "wrk"}, {"curl", "curl"},
	} {
		path, err := exec.LookPath(tool.bin)
		if err != nil && tool.bin == "nginx" {
			path, err = exec.LookPath("/usr/sbin/nginx") // Debian's, outside a user's PATH
		}
		if err != nil {
			b.Fatalf("%s not found on PATH: BenchmarkProxy compares cairn with nginx using wrk and curl; "+
				"run `make bench-deps` (apt-get install %s)", tool.bin, tool.pkg)
		}
		if tool.bin == "nginx" {
			benchNginxBin = path
		}
	}
}

// benchNginxBin is the nginx binary benchRequireTools found.
var benchNginxBin = "nginx"

// benchFixture is the closure the benchmark pulls, published as signed xz
// and zstd binary caches.
type benchFixture struct {
	root, gopath, extra string // closure root (small path → go1.25.1), go1.25.1, go1.25.0
	key                 string // the caches' public key
	xz, zst             string // cache directories
	narSize             int64  // NAR bytes of the closure
}

// benchProxyFixtures returns the signed caches, made once and kept under
// nixtest.FixtureDir in a directory named after the store paths, so it can
// never describe other paths.
func benchProxyFixtures(b *testing.B) benchFixture {
	b.Helper()
	tcs := nixtest.Toolchains(b, "1.25.0", "1.25.1")
	go0, go1 := tcs[0], tcs[1]
	closure := nixtest.Closure{Store: go1.Store}
	root := closure.AddText(b, "go-wrapper", "#!/bin/sh\n# a small path that references the Go toolchain:", go1.StorePath)
	sum := sha256.Sum256([]byte("cairn proxy bench v1\n" + root + "\n" + go1.StorePath + "\n" + go0.StorePath + "\n"))
	dir := filepath.Join(nixtest.FixtureDir(b), "proxybench-"+hex.EncodeToString(sum[:8]))
	fx := benchFixture{root: root, gopath: go1.StorePath, extra: go0.StorePath,
		xz: filepath.Join(dir, "xz"), zst: filepath.Join(dir, "zst"), narSize: go1.NarSize}

	if pub, err := os.ReadFile(filepath.Join(dir, "upstream.pub")); err == nil {
		fx.key = strings.TrimSpace(string(pub))
		b.Logf("reusing signed caches %s", dir)
	} else {
		start := time.Now()
		fmt.Printf("proxy bench: making signed xz and zstd caches of %s and %s in %s (once; a few minutes)\n", root, go0.StorePath, dir)
		tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(tmp) // a no-op once renamed
		key := nixtest.NewKey(b, tmp, "upstream-1")
		nixtest.SignedCache(b, closure.Store, filepath.Join(tmp, "xz"), key, "xz", root, go0.StorePath)
		nixtest.SignedCache(b, closure.Store, filepath.Join(tmp, "zst"), key, "zstd", root, go0.StorePath)
		if err := os.WriteFile(filepath.Join(tmp, "upstream.pub"), []byte(key.Public+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, dir); err != nil {
			// Another run finished first: use its caches.
			if _, serr := os.Stat(filepath.Join(dir, "upstream.pub")); serr != nil {
				b.Fatalf("publishing the signed caches: %v", err)
			}
			pub, _ := os.ReadFile(filepath.Join(dir, "upstream.pub"))
			key.Public = strings.TrimSpace(string(pub))
		}
		fx.key = key.Public
		fmt.Printf("proxy bench: caches ready in %.0fs\n", time.Since(start).Seconds())
	}
	for _, cache := range []string{fx.xz, fx.zst} {
		for _, p := range []string{root, go1.StorePath, go0.StorePath} {
			if _, err := os.Stat(filepath.Join(cache, nixtest.HashPart(b, p)+".narinfo")); err != nil {
				b.Fatalf("fixture cache %s is incomplete (%v): remove %s and run again", cache, err, dir)
			}
		}
	}
	rootSize, err := strconv.ParseInt(nixtest.NarInfoField(b, fx.xz, root, "NarSize"), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	fx.narSize += rootSize
	return fx
}

// benchSample is one pull or one load step.
type benchSample struct{ wall, clientCPU, proxyCPU float64 }

// benchEnv is what one run works with.
type benchEnv struct {
	cfg        benchConfig
	clientRoot string // where throwaway client stores go (tmpfs when possible)
	wrkScript  string
	nginx      *benchNginx
}

func benchProxyRun(b *testing.B, cfg benchConfig, fx benchFixture) {
	e := &benchEnv{cfg: cfg, clientRoot: benchClientRoot(b), wrkScript: benchWrkScript(b)}
	e.nginx = benchStartNginx(b, fx.xz, fx.zst)
	ngx := e.nginx
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("proxy bench: %d cores, load %s; closure %s (2 paths, NAR %.0f MB); client stores in %s; %d runs, wrk -c%d -d%s\n",
		runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "), fx.root, float64(fx.narSize)/1e6, e.clientRoot,
		cfg.runs, cfg.wrkConn, cfg.wrkDur)

	var r benchResults
	var c *cairnProc
	var mem *benchMemWatch
	pid := func() int { return c.cmd.Process.Pid }

	// a. cold: a fresh, empty cairn per run, then the same pull straight from
	// nginx-xz, then through the floor proxy (which keeps nothing: always cold).
	floor := benchStartFloor(b, fx.xz)
	for i := range cfg.runs {
		if c != nil {
			mem.stop()
			c.stop(b)
		}
		c = startCairn(b, "--upstream", ngx.xzURL, "--trusted-key", fx.key)
		mem = benchWatchMem(b, pid())
		r.coldCairn = append(r.coldCairn, e.pull(b, "cold cairn", c.URL, c.PubKey, fx.root, pid()))
		r.coldXZ = append(r.coldXZ, e.pull(b, "cold nginx-xz", ngx.xzURL, fx.key, fx.root, ngx.pid()))
		r.coldFloor = append(r.coldFloor, e.pull(b, "cold floor proxy", floor.url, fx.key, fx.root, floor.pid()))
		e.progress("a. cold pull %d/%d: cairn %.2fs (server CPU %.2fs), nginx-xz %.2fs, floor proxy %.2fs (server CPU %.2fs)", i+1, cfg.runs,
			r.coldCairn[i].wall, r.coldCairn[i].proxyCPU, r.coldXZ[i].wall, r.coldFloor[i].wall, r.coldFloor[i].proxyCPU)
	}
	defer mem.stop()
	benchTrimLog(c)

	// e. the second toolchain, cold in cairn but sharing most chunks with
	// the first, so that the footprint covers both.
	r.extraCairn = e.pull(b, "extra cairn", c.URL, c.PubKey, fx.extra, pid())
	r.extraXZ = e.pull(b, "extra nginx-xz", ngx.xzURL, fx.key, fx.extra, ngx.pid())
	lastIngest := time.Now()
	e.progress("e. extra path %s: cairn %.2fs, nginx-xz %.2fs", filepath.Base(fx.extra), r.extraCairn.wall, r.extraXZ.wall)

	// b. warm: the last cold cairn, frames as ingest wrote them; nginx with a warm page cache.
	e.pull(b, "warm-up nginx-zst", ngx.zstURL, fx.key, fx.root, ngx.pid())
	for i := range cfg.runs {
		r.warmCairn = append(r.warmCairn, e.pull(b, "warm cairn", c.URL, c.PubKey, fx.root, pid()))
		r.warmZst = append(r.warmZst, e.pull(b, "warm nginx-zst", ngx.zstURL, fx.key, fx.root, ngx.pid()))
		r.warmXZ = append(r.warmXZ, e.pull(b, "warm nginx-xz", ngx.xzURL, fx.key, fx.root, ngx.pid()))
		e.progress("b. warm pull %d/%d: cairn %.2fs, nginx-zst %.2fs, nginx-xz %.2fs", i+1, cfg.runs,
			r.warmCairn[i].wall, r.warmZst[i].wall, r.warmXZ[i].wall)
	}
	time.Sleep(cfg.settle)
	r.hwmPulls = benchProcStatusKiB(b, pid(), "VmHWM")
	r.diskPulls = nixtest.DiskUsage(b, c.Data)

	// cairn rewrites new frames at a high zstd level a while after ingest.
	// Wait for that here, so that it neither lands in the middle of the load
	// steps below nor is left out of the footprint.
	e.progress("e. waiting for cairn's background recompression of both toolchains (RSS %d MiB, data dir %.0f MB)",
		benchProcStatusKiB(b, pid(), "VmRSS")/1024, float64(r.diskPulls)/1e6)
	cpu0, t0 := benchProcCPU(pid()), time.Now()
	r.recompressed = e.waitRecompressed(b, c.URL, []string{fx.gopath, fx.extra}, 6*time.Minute)
	r.recompressWait = time.Since(lastIngest).Seconds()
	// Reclaiming the replaced frames' space follows; wait for quiet.
	if !benchWaitIdle(pid(), 3*time.Minute) {
		fmt.Printf("  (cairn still busy 3 minutes after recompressing; measuring on)\n")
	}
	r.recompressCPU = benchProcCPU(pid()) - cpu0
	r.hwmRecompress = benchProcStatusKiB(b, pid(), "VmHWM")
	r.diskRecompress = nixtest.DiskUsage(b, c.Data)
	e.progress("e. recompressed=%v %.0fs after the last ingest, quiet %.0fs after the wait began; cairn CPU %.1fs, peak RSS %d MiB, data dir %.0f MB",
		r.recompressed, r.recompressWait, time.Since(t0).Seconds(), r.recompressCPU, r.hwmRecompress/1024, float64(r.diskRecompress)/1e6)

	// b. warm again, now from recompressed frames.
	for i := range cfg.runs {
		r.warm2Cairn = append(r.warm2Cairn, e.pull(b, "warm (recompressed) cairn", c.URL, c.PubKey, fx.root, pid()))
		r.warm2Zst = append(r.warm2Zst, e.pull(b, "warm nginx-zst", ngx.zstURL, fx.key, fx.root, ngx.pid()))
		e.progress("b. warm pull, recompressed %d/%d: cairn %.2fs, nginx-zst %.2fs", i+1, cfg.runs, r.warm2Cairn[i].wall, r.warm2Zst[i].wall)
	}

	// c. narinfo hit and 404, cairn and nginx-xz taking turns.
	rootHash := nixtest.HashPart(b, fx.root)
	for _, t := range []struct{ name, url string }{{"cairn", c.URL}, {"nginx-xz", ngx.xzURL}} {
		if st := benchStatus(b, "GET", t.url+"/"+benchMissingHash+".narinfo"); st != 404 {
			b.Fatalf("%s answers HTTP %d for a narinfo no cache has (%s); want 404", t.name, st, benchMissingHash)
		}
		if st := benchStatus(b, "GET", t.url+"/"+rootHash+".narinfo"); st != 200 {
			b.Fatalf("%s answers HTTP %d for the closure root's narinfo; want 200", t.name, st)
		}
	}
	for i := range cfg.runs {
		r.hitCairn = append(r.hitCairn, e.wrk(b, c.URL+"/"+rootHash+".narinfo", pid(), false))
		benchTrimLog(c)
		r.hitNginx = append(r.hitNginx, e.wrk(b, ngx.xzURL+"/"+rootHash+".narinfo", ngx.pid(), false))
		e.progress("c. narinfo hit %d/%d: cairn %.0f req/s p99 %.2fms, nginx-xz %.0f req/s p99 %.2fms", i+1, cfg.runs,
			r.hitCairn[i].rps, r.hitCairn[i].p99ms, r.hitNginx[i].rps, r.hitNginx[i].p99ms)
	}
	for i := range cfg.runs {
		r.missCairn = append(r.missCairn, e.wrk(b, c.URL+"/"+benchMissingHash+".narinfo", pid(), true))
		benchTrimLog(c)
		r.missNginx = append(r.missNginx, e.wrk(b, ngx.xzURL+"/"+benchMissingHash+".narinfo", ngx.pid(), true))
		e.progress("c. narinfo 404 %d/%d: cairn %.0f req/s p99 %.2fms, nginx-xz %.0f req/s p99 %.2fms", i+1, cfg.runs,
			r.missCairn[i].rps, r.missCairn[i].p99ms, r.missNginx[i].rps, r.missNginx[i].p99ms)
	}

	// d. GETs of the largest NAR, as each target's narinfo names it.
	cNAR := benchLargestNAR(b, c.URL, rootHash)
	zNAR := benchLargestNAR(b, ngx.zstURL, rootHash)
	for _, n := range []*benchNAR{&cNAR, &zNAR} {
		if n.compression != "zstd" {
			b.Fatalf("largest NAR %s: Compression %q, want zstd", n.url, n.compression)
		}
		n.wireSize = benchContentLength(b, n.url)
	}
	r.narSize, r.cairnZstSize, r.nginxZstSize = cNAR.narSize, cNAR.wireSize, zNAR.wireSize
	e.progress("d. largest NAR (NarSize %d): cairn %s (%d bytes), nginx-zst %s (%d bytes)", cNAR.narSize, cNAR.url, cNAR.wireSize, zNAR.url, zNAR.wireSize)
	for i := range cfg.runs {
		r.getCairn = append(r.getCairn, e.narGet(b, cNAR.url, 1, pid()))
		r.getZst = append(r.getZst, e.narGet(b, zNAR.url, 1, ngx.pid()))
		r.parCairn = append(r.parCairn, e.narGet(b, cNAR.url, cfg.narPar, pid()))
		r.parZst = append(r.parZst, e.narGet(b, zNAR.url, cfg.narPar, ngx.pid()))
		e.progress("d. NAR GET %d/%d: 1 stream cairn %.0f MB/s, nginx-zst %.0f MB/s; %d streams cairn %.0f MB/s, nginx-zst %.0f MB/s",
			i+1, cfg.runs, r.getCairn[i].mbps, r.getZst[i].mbps, cfg.narPar, r.parCairn[i].mbps, r.parZst[i].mbps)
	}

	time.Sleep(cfg.settle)
	r.hwmLoad = benchProcStatusKiB(b, pid(), "VmHWM")
	r.rssEnd = benchProcStatusKiB(b, pid(), "VmRSS")
	r.anonPeak = mem.stop()
	r.diskEnd = nixtest.DiskUsage(b, c.Data)
	r.nginxHWM = ngx.hwmKiB(b)
	r.xzDisk, r.zstDisk = nixtest.DiskUsage(b, fx.xz), nixtest.DiskUsage(b, fx.zst)
	c.stop(b)

	r.print(cfg)
	r.report(b)
}

// waitRecompressed polls the .nar.zst length of each store path's NAR until
// it is below NarSize, which it is once cairn has recompressed the frames
// ingest stored uncompressed. It gives up after limit.
func (e *benchEnv) waitRecompressed(b *testing.B, base string, paths []string, limit time.Duration) bool {
	b.Helper()
	var urls []string
	var sizes []int64
	for _, p := range paths {
		n := benchLargestNAR(b, base, nixtest.HashPart(b, p))
		urls, sizes = append(urls, n.url), append(sizes, n.narSize)
	}
	deadline := time.Now().Add(limit)
	for {
		done := true
		for i, u := range urls {
			if benchContentLength(b, u) >= sizes[i] {
				done = false
			}
		}
		if done {
			return true
		}
		if time.Now().After(deadline) {
			fmt.Printf("  (cairn did not recompress within %s; measuring on as it is)\n", limit)
			return false
		}
		time.Sleep(time.Second)
	}
}

// benchWaitIdle waits until pid has used under 3% of a core for three
// seconds in a row, and reports whether it did within limit.
func benchWaitIdle(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	quiet, last := 0, benchProcCPU(pid)
	for quiet < 3 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Second)
		cpu := benchProcCPU(pid)
		if cpu-last < 0.03 {
			quiet++
		} else {
			quiet = 0
		}
		last = cpu
	}
	return true
}

// benchTrimLog drops all but the tail of the cairn output startCairn
// collects: one log line per request would otherwise pile up hundreds of MB
// in the benchmark process during the wrk runs.
func benchTrimLog(c *cairnProc) {
	const keep = 64 << 10
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	if n := c.out.b.Len(); n > keep {
		tail := bytes.Clone(c.out.b.Bytes()[n-keep:])
		c.out.b.Reset()
		c.out.b.Write(tail)
	}
}

// benchMemWatch samples a process's anonymous RSS (heap, stacks: what
// VmHWM counts besides mapped file pages) every 100ms and keeps the peak.
type benchMemWatch struct {
	done chan struct{}
	peak chan int64
}

func benchWatchMem(b *testing.B, pid int) *benchMemWatch {
	w := &benchMemWatch{done: make(chan struct{}), peak: make(chan int64, 1)}
	go func() {
		var peak int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for _, line := range strings.Split(string(status), "\n") {
					if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
						n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
						peak = max(peak, n)
					}
				}
			}
			select {
			case <-w.done:
				w.peak <- peak
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// stop ends the sampling and returns the peak in KiB; later calls return 0.
func (w *benchMemWatch) stop() int64 {
	select {
	case <-w.done:
		return 0
	default:
	}
	close(w.done)
	return <-w.peak
}

// progress prints one line while the benchmark runs, so a long `make bench`
// shows where it is.
func (e *benchEnv) progress(format string, args ...any) {
	fmt.Printf("  %s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// benchClientRoot is where client stores go: /dev/shm when it is a tmpfs with
// room, because client disk writes otherwise dominate the noise of a pull.
func benchClientRoot(b *testing.B) string {
	b.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err == nil && int64(st.Bavail)*st.Bsize >= 2<<30 {
		if dir, err := os.MkdirTemp("/dev/shm", "cairn-bench-"); err == nil {
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return b.TempDir()
}

// pull copies path from url into a fresh client store with a fresh narinfo
// disk cache, signatures checked against key, and times it. pid is the
// server whose CPU time the pull is charged.
func (e *benchEnv) pull(b *testing.B, what, url, key, path string, pid int) benchSample {
	b.Helper()
	store, err := os.MkdirTemp(e.clientRoot, "client-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(store)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix", "copy", "--from", url, "--to", store,
		"--option", "trusted-public-keys", key,
		"--option", "narinfo-cache-negative-ttl", "0",
		"--option", "narinfo-cache-positive-ttl", "0", path)
	cmd.Env = nixtest.Env(b) // a fresh XDG_CACHE_HOME each time
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cpu0 := benchProcCPU(pid)
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	cpu1 := benchProcCPU(pid)
	if err != nil {
		b.Fatalf("%s: nix copy --from %s %s: %v\n%s", what, url, path, err, out.String())
	}
	if _, err := os.Stat(filepath.Join(store, path)); err != nil {
		b.Fatalf("%s: nix copy succeeded but the client store lacks %s: %v", what, path, err)
	}
	ps := cmd.ProcessState
	s := benchSample{wall: wall.Seconds(), clientCPU: (ps.UserTime() + ps.SystemTime()).Seconds(), proxyCPU: cpu1 - cpu0}
	b.Logf("%s: %.2fs, client CPU %.2fs, server CPU %.2fs", what, s.wall, s.clientCPU, s.proxyCPU)
	return s
}

// benchProcCPU is the user+system CPU seconds of pid and its live
// descendants, including the children they have reaped.
func benchProcCPU(pid int) float64 {
	ticks := int64(0)
	var walk func(p int)
	walk = func(p int) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return
		}
		// Fields after "(comm) ": state is field 3; utime, stime, cutime, cstime are 14..17.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 14 {
			for _, v := range f[11:15] {
				n, _ := strconv.ParseInt(v, 10, 64)
				ticks += n
			}
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, t := range tasks {
			kids, _ := os.ReadFile(t)
			for _, k := range strings.Fields(string(kids)) {
				if n, err := strconv.Atoi(k); err == nil {
					walk(n)
				}
			}
		}
	}
	walk(pid)
	return float64(ticks) / benchClkTck
}

// benchProcStatusKiB reads a kB field (VmHWM, VmRSS) of /proc/PID/status.
func benchProcStatusKiB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("reading %s of process %d: %v", field, pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("/proc/%d/status %s: %q", pid, field, v)
			}
			return n
		}
	}
	b.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// benchStatus is the HTTP status of a request without a body.
func benchStatus(b *testing.B, method, url string) int {
	b.Helper()
	return benchHead(b, method, url).StatusCode
}

// benchContentLength is the length a HEAD of url announces.
func benchContentLength(b *testing.B, url string) int64 {
	b.Helper()
	resp := benchHead(b, "HEAD", url)
	if resp.StatusCode != 200 || resp.ContentLength < 0 {
		b.Fatalf("HEAD %s: HTTP %d, Content-Length %d", url, resp.StatusCode, resp.ContentLength)
	}
	return resp.ContentLength
}

func benchHead(b *testing.B, method, url string) *http.Response {
	b.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// benchNAR is a NAR URL read from a target's narinfo.
type benchNAR struct {
	url, compression string
	fileSize         int64 // FileSize, or NarSize when the narinfo has none
	narSize          int64
	wireSize         int64 // the GET's Content-Length
}

// benchLargestNAR reads the narinfo of the closure root at base and of its
// references and returns the NAR with the largest FileSize (or NarSize).
func benchLargestNAR(b *testing.B, base, rootHash string) benchNAR {
	b.Helper()
	client := &http.Client{Timeout: 60 * time.Second}
	fetch := func(hash string) map[string]string {
		resp, err := client.Get(base + "/" + hash + ".narinfo")
		if err != nil {
			b.Fatalf("GET %s/%s.narinfo: %v", base, hash, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("GET %s/%s.narinfo: HTTP %d %v\n%s", base, hash, resp.StatusCode, err, body)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(body), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok {
				if _, seen := fields[k]; !seen {
					fields[k] = v
				}
			}
		}
		return fields
	}
	root := fetch(rootHash)
	var best benchNAR
	for _, hash := range append([]string{rootHash}, strings.Fields(root["References"])...) {
		hash = strings.SplitN(hash, "-", 2)[0]
		ni := root
		if hash != rootHash {
			ni = fetch(hash)
		}
		size, _ := strconv.ParseInt(ni["FileSize"], 10, 64)
		if size == 0 {
			size, _ = strconv.ParseInt(ni["NarSize"], 10, 64)
		}
		if size > best.fileSize {
			nar, _ := strconv.ParseInt(ni["NarSize"], 10, 64)
			best = benchNAR{url: ni["URL"], compression: ni["Compression"], fileSize: size, narSize: nar}
		}
	}
	if best.url == "" {
		b.Fatalf("no NAR URL in the narinfo files of %s at %s", rootHash, base)
	}
	if !strings.HasPrefix(best.url, "http") {
		best.url = base + "/" + best.url
	}
	return best
}

// benchGet is one NAR GET step: wire MB/s and server CPU per GB sent.
type benchGet struct{ mbps, cpuPerGB float64 }

// narGet runs streams curl processes at once, each fetching url narReps
// times back to back on one connection, and checks every answer.
func (e *benchEnv) narGet(b *testing.B, url string, streams, pid int) benchGet {
	b.Helper()
	args := []string{"-sS", "--max-time", "300", "-w", "%{http_code} %{size_download}\\n"}
	for range e.cfg.narReps {
		args = append(args, "-o", "/dev/null", url)
	}
	outs := make([]bytes.Buffer, streams)
	cmds := make([]*exec.Cmd, streams)
	cpu0 := benchProcCPU(pid)
	start := time.Now()
	for i := range cmds {
		cmds[i] = exec.Command("curl", args...)
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
		if err := cmds[i].Start(); err != nil {
			b.Fatalf("curl: %v", err)
		}
	}
	errs := make([]error, streams)
	for i, cmd := range cmds {
		errs[i] = cmd.Wait()
	}
	wall := time.Since(start)
	cpu := benchProcCPU(pid) - cpu0
	var total int64
	for i := range cmds {
		lines := strings.Fields(outs[i].String())
		if errs[i] != nil || len(lines) != 2*e.cfg.narReps {
			b.Fatalf("curl %s (stream %d): %v\n%s", url, i, errs[i], outs[i].String())
		}
		for j := 0; j < len(lines); j += 2 {
			n, _ := strconv.ParseInt(lines[j+1], 10, 64)
			if lines[j] != "200" || n == 0 {
				b.Fatalf("GET %s: HTTP %s, %d bytes", url, lines[j], n)
			}
			total += n
		}
	}
	return benchGet{mbps: float64(total) / 1e6 / wall.Seconds(), cpuPerGB: cpu * 1e9 / float64(total)}
}

// benchWrkScript writes the wrk script that prints one parseable line with
// exact latency percentiles and error counts.
func benchWrkScript(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "report.lua")
	const script = `done = function(s, lat, req)
  io.write("CAIRNBENCH ", table.concat({
    "requests=" .. s.requests, "duration_us=" .. s.duration,
    "p50_us=" .. lat:percentile(50), "p99_us=" .. lat:percentile(99),
    "connect=" .. s.errors.connect, "read=" .. s.errors.read, "write=" .. s.errors.write,
    "timeout=" .. s.errors.timeout, "status=" .. s.errors.status}, " "), "\n")
end
`
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// benchWrk is one wrk run.
type benchWrk struct{ rps, p50ms, p99ms, cpuUS float64 }

// wrk loads url for the configured time. A socket error or timeout fails the
// benchmark; so does any non-2xx answer, unless notFound, where every answer
// must be one.
func (e *benchEnv) wrk(b *testing.B, url string, pid int, notFound bool) benchWrk {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.wrkDur+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", "-t2", fmt.Sprintf("-c%d", e.cfg.wrkConn),
		fmt.Sprintf("-d%ds", int(e.cfg.wrkDur.Seconds())), "--timeout", "5s", "-s", e.wrkScript, url)
	cpu0 := benchProcCPU(pid)
	out, err := cmd.CombinedOutput()
	cpu := benchProcCPU(pid) - cpu0
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	kv := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "CAIRNBENCH "); ok {
			for _, f := range strings.Fields(rest) {
				k, v, _ := strings.Cut(f, "=")
				kv[k], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	n := kv["requests"]
	if n == 0 || kv["duration_us"] == 0 {
		b.Fatalf("wrk %s: no requests completed\n%s", url, out)
	}
	if sock := kv["connect"] + kv["read"] + kv["write"] + kv["timeout"]; sock > 0 {
		b.Fatalf("wrk %s: %.0f socket errors or timeouts in %.0f requests\n%s", url, sock, n, out)
	}
	if notFound && kv["status"] != n {
		b.Fatalf("wrk %s: %.0f of %.0f answers were not 404-like (non-2xx)\n%s", url, n-kv["status"], n, out)
	}
	if !notFound && kv["status"] > 0 {
		b.Fatalf("wrk %s: %.0f non-2xx answers in %.0f requests\n%s", url, kv["status"], n, out)
	}
	return benchWrk{rps: n / (kv["duration_us"] / 1e6), p50ms: kv["p50_us"] / 1e3, p99ms: kv["p99_us"] / 1e3, cpuUS: cpu * 1e6 / n}
}

// benchNginx is nginx serving the xz and the zstd cache, each on its own
// loopback port, from a generated configuration.
type benchNginx struct {
	cmd           *exec.Cmd
	xzURL, zstURL string
	exited        chan error
}

func (n *benchNginx) pid() int { return n.cmd.Process.Pid }

// hwmKiB is the peak RSS of nginx's master and workers together.
func (n *benchNginx) hwmKiB(b *testing.B) int64 {
	total := benchProcStatusKiB(b, n.pid(), "VmHWM")
	kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", n.pid()))
	for _, k := range kids {
		list, _ := os.ReadFile(k)
		for _, p := range strings.Fields(string(list)) {
			if pid, err := strconv.Atoi(p); err == nil {
				total += benchProcStatusKiB(b, pid, "VmHWM")
			}
		}
	}
	return total
}

func benchStartNginx(b *testing.B, xzDir, zstDir string) *benchNginx {
	b.Helper()
	dir := b.TempDir()
	for _, sub := range []string{"logs", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	var conf strings.Builder
	// As root, workers would run as nobody, who cannot read a fixture
	// directory under /root: keep them as the current user.
	if os.Geteuid() == 0 {
		u, err := user.Current()
		if err != nil {
			b.Fatal(err)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&conf, "user %s %s;\n", u.Username, g.Name)
	}
	fmt.Fprintf(&conf, `worker_processes 2;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path %[1]s/tmp;
  proxy_temp_path %[1]s/tmp;
  fastcgi_temp_path %[1]s/tmp;
  uwsgi_temp_path %[1]s/tmp;
  scgi_temp_path %[1]s/tmp;
  types { text/x-nix-narinfo narinfo; text/plain nix-cache-info ls; application/x-nix-nar nar xz zst; }
  default_type application/octet-stream;
`, dir)
	n := &benchNginx{exited: make(chan error, 1)}
	for _, c := range []struct {
		root string
		url  *string
	}{{xzDir, &n.xzURL}, {zstDir, &n.zstURL}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		*c.url = "http://" + addr
		fmt.Fprintf(&conf, "  server { listen %s; root %s; }\n", addr, c.root)
	}
	conf.WriteString("}\n")
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	var out syncBuffer
	n.cmd = exec.Command(benchNginxBin, "-c", confPath, "-p", dir, "-e", filepath.Join(dir, "logs", "error.log"))
	n.cmd.Stdout, n.cmd.Stderr = &out, &out
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // workers share its group, for the cleanup
	if err := n.cmd.Start(); err != nil {
		b.Fatalf("starting nginx: %v", err)
	}
	go func() { n.exited <- n.cmd.Wait() }()
	b.Cleanup(func() {
		pgid := n.cmd.Process.Pid
		syscall.Kill(pgid, syscall.SIGTERM) // fast shutdown; the master stops its workers
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL) // the master and its workers
			<-n.exited
		}
	})
	errorLog := func() string {
		l, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
		return out.String() + string(l)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, u := range []string{n.xzURL, n.zstURL} {
		for {
			resp, err := http.Get(u + "/nix-cache-info")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("nginx %s/nix-cache-info: HTTP %d\n%s", u, resp.StatusCode, errorLog())
				}
				break
			}
			select {
			case err := <-n.exited:
				b.Fatalf("nginx exited before answering: %v\n%s", err, errorLog())
			default:
			}
			if time.Now().After(deadline) {
				b.Fatalf("nginx did not answer on %s within 15s\n%s", u, errorLog())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return n
}

// benchResults holds every sample of a run.
type benchResults struct {
	coldCairn, coldXZ, coldFloor             []benchSample
	warmCairn, warmZst, warmXZ               []benchSample
	warm2Cairn, warm2Zst                     []benchSample
	extraCairn, extraXZ                      benchSample
	hitCairn, hitNginx, missCairn, missNginx []benchWrk
	getCairn, getZst, parCairn, parZst       []benchGet
	narSize, cairnZstSize, nginxZstSize      int64 // the largest NAR, raw and as each serves it
	recompressed                             bool
	recompressCPU, recompressWait            float64 // s
	hwmPulls, hwmRecompress, hwmLoad, rssEnd int64   // KiB
	anonPeak, nginxHWM                       int64   // KiB
	diskPulls, diskRecompress, diskEnd       int64   // bytes
	xzDisk, zstDisk                          int64   // bytes
}

// benchMedian is the median of f over xs.
func benchMedian[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	switch {
	case len(v) == 0:
		return 0
	case len(v)%2 == 1:
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func benchWall(s benchSample) float64   { return s.wall }
func benchServer(s benchSample) float64 { return s.proxyCPU }
func benchClient(s benchSample) float64 { return s.clientCPU }
func benchRPS(w benchWrk) float64       { return w.rps }
func benchP99(w benchWrk) float64       { return w.p99ms }
func benchReqCPU(w benchWrk) float64    { return w.cpuUS }
func benchMBps(g benchGet) float64      { return g.mbps }
func benchGBCPU(g benchGet) float64     { return g.cpuPerGB }

// benchRow is one line of the table. A target bounds the ratio
// (cairn/baseline), or cairn's own figure when abs is set.
type benchRow struct {
	metric          string
	cairn, baseline float64
	hasTarget       bool
	target          float64
	atMost, abs     bool
}

func (r *benchResults) rows() []benchRow {
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	mb := func(b int64) float64 { return float64(b) / 1e6 }
	row := func(m string, c, base float64) benchRow { return benchRow{metric: m, cairn: c, baseline: base} }
	ratioAtMost := func(m string, c, base, t float64) benchRow {
		return benchRow{metric: m, cairn: c, baseline: base, hasTarget: true, target: t, atMost: true}
	}
	ratioAtLeast := func(m string, c, base, t float64) benchRow {
		return benchRow{metric: m, cairn: c, baseline: base, hasTarget: true, target: t}
	}
	absAtMost := func(m string, c, base, t float64) benchRow {
		return benchRow{metric: m, cairn: c, baseline: base, hasTarget: true, target: t, atMost: true, abs: true}
	}
	// NAR bytes the client gets per second of GET: wire speed scaled by how
	// many NAR bytes each wire byte carries, so that compressions compare.
	narMBps := func(gs []benchGet, wire int64) float64 {
		return benchMedian(gs, benchMBps) * float64(r.narSize) / float64(wire)
	}
	recompress := "e. recompress + reclaim, cairn CPU s"
	if !r.recompressed {
		recompress = "e. (no recompression seen) idle CPU s"
	}
	return []benchRow{
		ratioAtMost("a. cold pull, s (nginx-xz straight)", benchMedian(r.coldCairn, benchWall), benchMedian(r.coldXZ, benchWall), 1),
		row("a. cold pull, server CPU s (nginx-xz)", benchMedian(r.coldCairn, benchServer), benchMedian(r.coldXZ, benchServer)),
		row("a. cold pull, client CPU s (nginx-xz)", benchMedian(r.coldCairn, benchClient), benchMedian(r.coldXZ, benchClient)),
		row("a. floor proxy cold pull, s (nginx-xz straight)", benchMedian(r.coldFloor, benchWall), benchMedian(r.coldXZ, benchWall)),
		row("a. cold pull, s (floor proxy)", benchMedian(r.coldCairn, benchWall), benchMedian(r.coldFloor, benchWall)),
		row("a. cold pull, server CPU s (floor proxy)", benchMedian(r.coldCairn, benchServer), benchMedian(r.coldFloor, benchServer)),
		row("a. extra path cold in cairn, s (nginx-xz)", r.extraCairn.wall, r.extraXZ.wall),
		row("b. warm pull, new frames, s (nginx-zst)", benchMedian(r.warmCairn, benchWall), benchMedian(r.warmZst, benchWall)),
		row("b. warm pull, new frames, s (nginx-xz)", benchMedian(r.warmCairn, benchWall), benchMedian(r.warmXZ, benchWall)),
		row("b. warm pull, recompressed, s (nginx-zst)", benchMedian(r.warm2Cairn, benchWall), benchMedian(r.warm2Zst, benchWall)),
		row("b. warm pull, recompr., server CPU s (zst)", benchMedian(r.warm2Cairn, benchServer), benchMedian(r.warm2Zst, benchServer)),
		row("b. warm pull, recompr., client CPU s (zst)", benchMedian(r.warm2Cairn, benchClient), benchMedian(r.warm2Zst, benchClient)),
		ratioAtLeast("c. narinfo hit, req/s (nginx-xz)", benchMedian(r.hitCairn, benchRPS), benchMedian(r.hitNginx, benchRPS), 0.8),
		row("c. narinfo hit, p99 ms (nginx-xz)", benchMedian(r.hitCairn, benchP99), benchMedian(r.hitNginx, benchP99)),
		row("c. narinfo hit, server CPU us/req", benchMedian(r.hitCairn, benchReqCPU), benchMedian(r.hitNginx, benchReqCPU)),
		ratioAtLeast("c. narinfo 404, req/s (nginx-xz)", benchMedian(r.missCairn, benchRPS), benchMedian(r.missNginx, benchRPS), 0.8),
		row("c. narinfo 404, p99 ms (nginx-xz)", benchMedian(r.missCairn, benchP99), benchMedian(r.missNginx, benchP99)),
		row("c. narinfo 404, server CPU us/req", benchMedian(r.missCairn, benchReqCPU), benchMedian(r.missNginx, benchReqCPU)),
		row("d. largest NAR as .nar.zst, MB (nginx-zst)", mb(r.cairnZstSize), mb(r.nginxZstSize)),
		ratioAtLeast("d. NAR GET 1 stream, MB/s (nginx-zst)", benchMedian(r.getCairn, benchMBps), benchMedian(r.getZst, benchMBps), 0.7),
		ratioAtLeast("d. NAR GET 4 streams, MB/s (nginx-zst)", benchMedian(r.parCairn, benchMBps), benchMedian(r.parZst, benchMBps), 0.7),
		row("d. NAR GET 1 stream, NarSize MB/s", narMBps(r.getCairn, r.cairnZstSize), narMBps(r.getZst, r.nginxZstSize)),
		absAtMost("d. NAR GET 1 stream, server CPU s/GB", benchMedian(r.getCairn, benchGBCPU), benchMedian(r.getZst, benchGBCPU), 0.6),
		absAtMost("d. NAR GET 4 streams, server CPU s/GB", benchMedian(r.parCairn, benchGBCPU), benchMedian(r.parZst, benchGBCPU), 0.6),
		row(recompress, r.recompressCPU, 0),
		row("e. peak RSS after pulls, MiB (nginx)", mib(r.hwmPulls), mib(r.nginxHWM)),
		row("e. peak RSS after recompress, MiB (nginx)", mib(r.hwmRecompress), mib(r.nginxHWM)),
		absAtMost("e. peak RSS after load, MiB (nginx)", mib(r.hwmLoad), mib(r.nginxHWM), 150),
		row("e. peak anonymous RSS (sampled), MiB", mib(r.anonPeak), 0),
		row("e. RSS at end, MiB (nginx peak)", mib(r.rssEnd), mib(r.nginxHWM)),
		row("e. data dir after pulls, MB (xz cache)", mb(r.diskPulls), mb(r.xzDisk)),
		row("e. data dir after reclaim, MB (xz cache)", mb(r.diskRecompress), mb(r.xzDisk)),
		row("e. data dir at end, MB (xz cache)", mb(r.diskEnd), mb(r.xzDisk)),
		row("e. data dir at end, MB (zstd cache)", mb(r.diskEnd), mb(r.zstDisk)),
	}
}

// benchNum formats a figure with about three significant digits.
func benchNum(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func (row benchRow) cells() (ratio, target, ok string) {
	ratio = "-"
	var q float64
	if row.baseline > 0 {
		q = row.cairn / row.baseline
		ratio = fmt.Sprintf("%.2fx", q)
	}
	if !row.hasTarget {
		return ratio, "", ""
	}
	op := ">="
	if row.atMost {
		op = "<="
	}
	got := q
	target = fmt.Sprintf("%s %.2fx", op, row.target)
	if row.abs {
		got = row.cairn
		target = fmt.Sprintf("%s %s", op, benchNum(row.target))
	} else if row.baseline <= 0 {
		return ratio, target, "?"
	}
	if (row.atMost && got <= row.target) || (!row.atMost && got >= row.target) {
		return ratio, target, "yes"
	}
	return ratio, target, "NO"
}

func (r *benchResults) print(cfg benchConfig) {
	rows := r.rows()
	w := len("metric (baseline)")
	for _, row := range rows {
		w = max(w, len(row.metric))
	}
	fmt.Printf("\n## cairn serve vs nginx on the same files: medians of %d runs, ratio = cairn / baseline\n\n", cfg.runs)
	line := func(c ...string) {
		fmt.Printf("%-*s  %9s  %9s  %7s  %8s  %s\n", w, c[0], c[1], c[2], c[3], c[4], c[5])
	}
	line("metric (baseline)", "cairn", "baseline", "ratio", "target", "ok?")
	var missed []string
	for _, row := range rows {
		ratio, target, ok := row.cells()
		base := benchNum(row.baseline)
		if row.baseline == 0 && ratio == "-" {
			base = "-"
		}
		line(row.metric, benchNum(row.cairn), base, ratio, target, ok)
		if ok == "NO" {
			missed = append(missed, row.metric)
		}
	}
	samples := func(name string, xs []benchSample) string {
		s := make([]string, len(xs))
		for i, x := range xs {
			s[i] = fmt.Sprintf("%.2f", x.wall)
		}
		return name + " " + strings.Join(s, " ")
	}
	fmt.Printf("\npull samples, s: %s | %s | %s\n                 %s | %s | %s\n                 %s | %s\n",
		samples("cold cairn", r.coldCairn), samples("cold nginx-xz", r.coldXZ), samples("cold floor proxy", r.coldFloor),
		samples("warm cairn", r.warmCairn), samples("nginx-zst", r.warmZst), samples("nginx-xz", r.warmXZ),
		samples("warm recompressed cairn", r.warm2Cairn), samples("nginx-zst", r.warm2Zst))
	if len(missed) > 0 {
		fmt.Printf("targets missed in this run: %s\n", strings.Join(missed, "; "))
	}
	fmt.Println()
}

// report adds the key ratios to the benchmark line, for benchstat.
func (r *benchResults) report(b *testing.B) {
	for _, m := range []struct {
		unit string
		v    float64
	}{
		{"cold-pull-x", benchMedian(r.coldCairn, benchWall) / benchMedian(r.coldXZ, benchWall)},
		{"floor-pull-x", benchMedian(r.coldFloor, benchWall) / benchMedian(r.coldXZ, benchWall)},
		{"warm-pull-x", benchMedian(r.warm2Cairn, benchWall) / benchMedian(r.warm2Zst, benchWall)},
		{"narinfo-hit-x", benchMedian(r.hitCairn, benchRPS) / benchMedian(r.hitNginx, benchRPS)},
		{"narinfo-404-x", benchMedian(r.missCairn, benchRPS) / benchMedian(r.missNginx, benchRPS)},
		{"nar-get-x", benchMedian(r.getCairn, benchMBps) / benchMedian(r.getZst, benchMBps)},
		{"nar-cpu-s/GB", benchMedian(r.getCairn, benchGBCPU)},
		{"peak-RSS-MiB", float64(r.hwmLoad) / 1024},
	} {
		b.ReportMetric(m.v, m.unit)
	}
}
