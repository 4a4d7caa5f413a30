package fusefs_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"golang.org/x/sys/unix"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/fusefs"
	"cairn/httpd"
	"cairn/internal/nixtest"
)

// BenchmarkMount measures the FUSE view of a Go toolchain (go1.25.0, a
// 191 MB NAR of about 11,000 files) against the same bytes without FUSE,
// in the same run:
//
//   - sequential reads of nar/<h>.nar with cat, through a local mount and
//     a remote one, against cat of the plain NAR file and curl of
//     /nar/<h>.nar from cairn's HTTP server;
//   - `find -type f -exec cat` of the whole tree through both mounts,
//     against the same tree on disk.
//
// Each figure is measured from a fresh mount (empty chunk cache, nothing
// in the kernel's page cache for the mount) over a store whose files are
// in the page cache, against the plain file or tree in the page cache;
// then again on the same mount (kernel caches warm); and with nothing
// cached at all: the store's and the plain files' pages dropped with
// fadvise(DONTNEED). The store holds
// frames at zstd's best level, as after background recompression.
// CAIRN_BENCH_RUNS (default 3) sets how many samples each figure is the
// median of.
func BenchmarkMount(b *testing.B) {
	nixtest.RequireFUSE(b)
	for _, tool := range []string{"cat", "find", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s not found: the benchmark needs it; run `make bench-deps`", tool)
		}
	}
	runs := 3
	if v := os.Getenv("CAIRN_BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 20 {
			b.Fatalf("CAIRN_BENCH_RUNS=%q: want 1..20", v)
		}
		runs = n
	}
	tc := nixtest.Toolchains(b, "1.25.0")[0]
	for range b.N {
		benchMountRun(b, tc, runs)
	}
}

// benchEnv is one run's store, HTTP server and fixture.
type benchEnv struct {
	b       *testing.B
	tc      nixtest.Toolchain
	dataDir string
	base    string // store path basename
	narFile string // nar/<h>.nar
	url     string // cairn's HTTP server
}

func benchMountRun(b *testing.B, tc nixtest.Toolchain, runs int) {
	e := &benchEnv{b: b, tc: tc, dataDir: filepath.Join(b.TempDir(), "data"), base: filepath.Base(tc.StorePath)}
	narHash, err := narinfo.ParseNarHash(tc.NarHash)
	if err != nil {
		b.Fatal(err)
	}
	e.narFile = nixbase32.EncodeToString(narHash[:]) + ".nar"
	e.ingest(narHash)
	store := e.open()
	defer func() { store.Close() }()
	stop := e.serve(store)
	defer stop()

	var r benchMountResults
	r.size = tc.NarSize
	r.loadBefore = loadAverage()
	mountCat := func(src fusefs.Source, path string) (first, again float64) {
		m := e.mount(src)
		defer m.Close()
		first = e.timed("cat", filepath.Join(m.Dir(), path))
		again = e.timed("cat", filepath.Join(m.Dir(), path))
		return
	}
	mountWalk := func(src fusefs.Source) (first, again float64) {
		m := e.mount(src)
		defer m.Close()
		first = e.walk(filepath.Join(m.Dir(), "store", e.base))
		again = e.walk(filepath.Join(m.Dir(), "store", e.base))
		return
	}
	// The host may drop cached pages at any time (a VM's balloon or
	// DAMON), so each warm figure comes right after a pass that loads its
	// files into the page cache: the plain NAR, the tree, or the store.
	for i := range runs {
		b.Logf("run %d of %d", i+1, runs)
		e.timed("cat", tc.NAR)
		r.plainWarm = append(r.plainWarm, e.timed("cat", tc.NAR))
		e.walk(e.dataDir)
		r.decode = append(r.decode, e.decode(store, narHash))
		e.walk(e.dataDir)
		r.httpGet = append(r.httpGet, e.timed("curl", e.url+"/nar/"+e.narFile))
		e.walk(e.dataDir)
		first, again := mountCat(fusefs.NewLocal(store), filepath.Join("nar", e.narFile))
		r.localFirst, r.localAgain = append(r.localFirst, first), append(r.localAgain, again)
		e.walk(e.dataDir)
		first, again = mountCat(e.remote(), filepath.Join("nar", e.narFile))
		r.remoteFirst, r.remoteAgain = append(r.remoteFirst, first), append(r.remoteAgain, again)

		e.walk(tc.Tree)
		r.diskWalk = append(r.diskWalk, e.walk(tc.Tree))
		e.walk(e.dataDir)
		first, again = mountWalk(fusefs.NewLocal(store))
		r.localWalk, r.localWalkAgain = append(r.localWalk, first), append(r.localWalkAgain, again)
		e.walk(e.dataDir)
		first, _ = mountWalk(e.remote())
		r.remoteWalk = append(r.remoteWalk, first)
	}
	// Nothing cached: the store is reopened after its files' pages are
	// dropped, so no mapping keeps them.
	stop()
	store.Close()
	for range runs {
		dropCache(b, tc.NAR)
		r.plainCold = append(r.plainCold, e.timed("cat", tc.NAR))
		dropCache(b, e.dataDir)
		store = e.open()
		first, _ := mountCat(fusefs.NewLocal(store), filepath.Join("nar", e.narFile))
		r.localCold = append(r.localCold, first)
		store.Close()

		dropCache(b, tc.Tree)
		r.diskWalkCold = append(r.diskWalkCold, e.walk(tc.Tree))
		dropCache(b, e.dataDir)
		store = e.open()
		first, _ = mountWalk(fusefs.NewLocal(store))
		r.localWalkCold = append(r.localWalkCold, first)
		store.Close()
	}
	r.loadAfter = loadAverage()
	r.print(b, runs)
}

// loadAverage returns the machine's load averages, as /proc/loadavg has
// them: other work on the machine skews every figure.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// decode reads the whole NAR from the store in-process, decoding 8 chunks
// at a time, and returns seconds: what a first read costs without FUSE.
func (e *benchEnv) decode(store *appliance.Store, narHash [32]byte) float64 {
	start := time.Now()
	n, err := store.OpenNAR(context.Background(), narHash)
	if err == nil {
		err = n.WriteRange(context.Background(), io.Discard, 0, n.Size())
	}
	if err != nil {
		e.b.Fatal(err)
	}
	return time.Since(start).Seconds()
}

// ingest stores the toolchain NAR with frames at zstd's best level.
func (e *benchEnv) ingest(narHash [32]byte) {
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: e.dataDir, CompressOnIngest: true, RecompressDelay: -1})
	if err != nil {
		e.b.Fatal(err)
	}
	defer s.Close()
	f, err := os.Open(e.tc.NAR)
	if err != nil {
		e.b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	info := &appliance.NarInfo{StorePath: e.tc.StorePath, NarHash: narHash, NarSize: uint64(e.tc.NarSize), Source: "bench"}
	if _, err := s.Ingest(context.Background(), appliance.Want{NarHash: narHash, NarSize: info.NarSize, Info: info}, f, appliance.CompressionNone); err != nil {
		e.b.Fatal(err)
	}
	e.b.Logf("ingested %s at zstd's best level in %.1fs", e.tc.StorePath, time.Since(start).Seconds())
}

func (e *benchEnv) open() *appliance.Store {
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: e.dataDir, RecompressDelay: -1})
	if err != nil {
		e.b.Fatal(err)
	}
	return s
}

// serve runs cairn's HTTP server over store; the returned func stops it.
func (e *benchEnv) serve(store *appliance.Store) func() {
	key, _, err := narinfo.LoadOrCreateKey(filepath.Join(e.b.TempDir(), "key"), "bench-1")
	if err != nil {
		e.b.Fatal(err)
	}
	svc, err := appliance.NewService(store, appliance.ServiceConfig{Key: key})
	if err != nil {
		e.b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.b.Fatal(err)
	}
	srv := httpd.New(httpd.Config{Service: svc})
	go srv.Serve(ln)
	e.url = "http://" + ln.Addr().String()
	stopped := false
	return func() {
		if !stopped {
			stopped = true
			srv.Shutdown(context.Background())
			svc.Close()
		}
	}
}

func (e *benchEnv) remote() fusefs.Source {
	r, err := fusefs.NewRemote(fusefs.RemoteConfig{URL: e.url})
	if err != nil {
		e.b.Fatal(err)
	}
	return r
}

func (e *benchEnv) mount(src fusefs.Source) *fusefs.Mount {
	m, err := fusefs.New(filepath.Join(e.b.TempDir(), "mnt"), src, fusefs.Config{})
	if err != nil {
		e.b.Fatal(err)
	}
	return m
}

// timed runs `cat file` or `curl url` into /dev/null and returns seconds.
func (e *benchEnv) timed(tool, arg string) float64 {
	args := []string{arg}
	if tool == "curl" {
		args = []string{"-sSf", "-o", "/dev/null", arg}
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		e.b.Fatal(err)
	}
	defer null.Close()
	var stderr strings.Builder
	cmd := exec.Command(tool, args...)
	cmd.Stdout, cmd.Stderr = null, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		e.b.Fatalf("%s %s: %v\n%s", tool, arg, err, stderr.String())
	}
	return time.Since(start).Seconds()
}

// walk reads every file of a tree with find and cat, and returns seconds.
func (e *benchEnv) walk(dir string) float64 {
	cmd := exec.Command("sh", "-c", `find "$1" -type f -exec cat {} + > /dev/null`, "sh", dir)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		e.b.Fatalf("find %s -type f -exec cat: %v\n%s", dir, err, out)
	}
	return time.Since(start).Seconds()
}

// dropCache drops the page cache of a file or of every file in a tree.
func dropCache(b *testing.B, root string) {
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// benchMountResults are a run's samples, in seconds.
type benchMountResults struct {
	size                                     int64
	loadBefore, loadAfter                    string // load averages around the runs
	plainWarm, plainCold, httpGet, decode    []float64
	localFirst, localAgain, localCold        []float64
	remoteFirst, remoteAgain                 []float64
	diskWalk, diskWalkCold                   []float64
	localWalk, localWalkAgain, localWalkCold []float64
	remoteWalk                               []float64
}

func median(xs []float64) float64 {
	v := slices.Clone(xs)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// print writes the table: each mount figure beside its baseline.
func (r *benchMountResults) print(b *testing.B, runs int) {
	mbs := func(xs []float64) float64 { return float64(r.size) / 1e6 / median(xs) }
	type row struct {
		what, baseline string
		mount, base    float64
		unit           string
		target         float64 // ratio bound; 0 for none
		higherIsBetter bool
	}
	rows := []row{
		{"seq read nar/ local, fresh mount", "cat plain file (page cache)", mbs(r.localFirst), mbs(r.plainWarm), "MB/s", 0.5, true},
		{"seq read nar/ local, re-read", "cat plain file (page cache)", mbs(r.localAgain), mbs(r.plainWarm), "MB/s", 0.5, true},
		{"seq read nar/ local, nothing cached", "cat plain file (from disk)", mbs(r.localCold), mbs(r.plainCold), "MB/s", 0.5, true},
		{"seq read nar/ local, fresh mount", "decode from store, no FUSE", mbs(r.localFirst), mbs(r.decode), "MB/s", 0, true},
		{"seq read nar/ remote, fresh mount", "curl /nar/<h>.nar from cairn", mbs(r.remoteFirst), mbs(r.httpGet), "MB/s", 0, true},
		{"seq read nar/ remote, re-read", "curl /nar/<h>.nar from cairn", mbs(r.remoteAgain), mbs(r.httpGet), "MB/s", 0, true},
		{"find+cat tree local, fresh mount", "same tree on disk (page cache)", median(r.localWalk), median(r.diskWalk), "s", 3, false},
		{"find+cat tree local, again", "same tree on disk (page cache)", median(r.localWalkAgain), median(r.diskWalk), "s", 3, false},
		{"find+cat tree local, nothing cached", "same tree on disk (from disk)", median(r.localWalkCold), median(r.diskWalkCold), "s", 3, false},
		{"find+cat tree remote, fresh mount", "same tree on disk (page cache)", median(r.remoteWalk), median(r.diskWalk), "s", 0, false},
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nBenchmarkMount: go%s toolchain, NAR %.1f MB, median of %d runs; ratio = mount / baseline\n", "1.25.0", float64(r.size)/1e6, runs)
	fmt.Fprintf(&out, "load average: %s before, %s after\n", r.loadBefore, r.loadAfter)
	fmt.Fprintf(&out, "%-38s %10s   %-32s %10s %7s  %s\n", "measurement", "mount", "baseline", "baseline", "ratio", "target")
	for _, x := range rows {
		ratio := x.mount / x.base
		target := "-"
		if x.target > 0 {
			ok := ratio <= x.target
			op := "<="
			if x.higherIsBetter {
				ok, op = ratio >= x.target, ">="
			}
			verdict := "MISS"
			if ok {
				verdict = "ok"
			}
			target = fmt.Sprintf("%s %.1f %s", op, x.target, verdict)
		}
		fmt.Fprintf(&out, "%-38s %6.2f %-4s  %-32s %6.2f %-4s %6.2fx  %s\n", x.what, x.mount, x.unit, x.baseline, x.base, x.unit, ratio, target)
	}
	fmt.Print(out.String())
	b.ReportMetric(mbs(r.localFirst), "local-MB/s")
	b.ReportMetric(median(r.localWalk), "walk-s")
}
