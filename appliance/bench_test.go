package appliance_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"golang.org/x/sys/unix"

	"cairn/appliance"
	"cairn/cdc"
	"cairn/internal/nixtest"
)

// benchVersions are the Go toolchain patch releases the storage benchmarks
// use: real ~190 MB NARs that share their sources and differ in binaries.
var benchVersions = []string{"1.25.0", "1.25.1", "1.25.2", "1.25.3", "1.25.4"}

const mb = 1e6

// table prints one benchmark table to stdout, aligned.
type table struct {
	title string
	w     *tabwriter.Writer
}

func newTable(title string, header ...string) *table {
	t := &table{title: title, w: tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)}
	fmt.Printf("\n## %s\n\n", title)
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) { fmt.Fprintln(t.w, strings.Join(cells, "\t")+"\t") }
func (t *table) done()               { t.w.Flush() }

func mbs(bytes int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MB/s", float64(bytes)/mb/d.Seconds())
}

func size(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/mb) }

func ratio(a, b float64) string { return fmt.Sprintf("%.2fx", a/b) }

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// minorFaults is how many page faults this process has taken that needed
// no disk read.
func minorFaults() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}

// pageFaultCost is the CPU time this machine spends on one page fault: the
// median of three runs touching 64 MiB of fresh anonymous memory, one byte
// per 4 KiB page. Badger writes every frame through its memory-mapped value
// log, so an ingest takes about one such fault per 4 KiB of new frames.
func pageFaultCost(b *testing.B) time.Duration {
	const size = 64 << 20
	var costs []time.Duration
	for range 3 {
		m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			b.Fatal(err)
		}
		_ = unix.Madvise(m, unix.MADV_NOHUGEPAGE) // 4 KiB pages, as file mappings get
		c0, f0 := cpuTime(), minorFaults()
		for off := 0; off < size; off += 4096 {
			m[off] = 1
		}
		c, f := cpuTime()-c0, minorFaults()-f0
		if err := unix.Munmap(m); err != nil {
			b.Fatal(err)
		}
		costs = append(costs, c/time.Duration(max(f, 1)))
	}
	slices.Sort(costs)
	return costs[1]
}

// toolCPU runs a decompressor over file into /dev/null and returns its wall
// and CPU time.
func toolCPU(b *testing.B, file string, name string, args ...string) (wall, cpu time.Duration) {
	f, err := os.Open(file)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdin = f
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v (make deps installs it)", name, err)
	}
	return time.Since(start), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func parseHash(b *testing.B, s string) [32]byte {
	raw, err := nixbase32.DecodeString(strings.TrimPrefix(s, "sha256:"))
	if err != nil || len(raw) != 32 {
		b.Fatalf("bad hash %q: %v", s, err)
	}
	return [32]byte(raw)
}

func fixtureInfo(b *testing.B, tc nixtest.Toolchain) *appliance.NarInfo {
	return &appliance.NarInfo{StorePath: tc.StorePath, NarHash: parseHash(b, tc.NarHash), NarSize: uint64(tc.NarSize), Source: "bench"}
}

// BenchmarkChunkingSweep chooses the chunker parameters and zstd level: for
// each candidate it cuts five toolchain releases, keeps each distinct chunk
// once, compresses it as a frame at each level, and compares the stored
// bytes for two and for five releases with the same NARs as Nix's xz and
// zstd files.
func BenchmarkChunkingSweep(b *testing.B) {
	tcs := nixtest.Toolchains(b, benchVersions...)
	var xz2, xz5, zst2, zst5, nar2, nar5 int64
	for i, tc := range tcs {
		if i < 2 {
			xz2, zst2, nar2 = xz2+tc.XZSize, zst2+tc.ZstdSize, nar2+tc.NarSize
		}
		xz5, zst5, nar5 = xz5+tc.XZSize, zst5+tc.ZstdSize, nar5+tc.NarSize
	}
	levels := []cdc.Level{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression}
	candidates := []cdc.Params{
		{Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10, Normalization: 2},
		{Min: 8 << 10, Avg: 32 << 10, Max: 128 << 10, Normalization: 2},
		{Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10, Normalization: 2},
		{Min: 32 << 10, Avg: 128 << 10, Max: 512 << 10, Normalization: 2},
	}
	for range b.N {
		t := newTable(fmt.Sprintf("Chunking sweep: Go toolchain %s..%s, NAR %s (2 releases) and %s (5); Nix xz files %s and %s, zstd files %s and %s",
			benchVersions[0], benchVersions[len(benchVersions)-1], size(nar2), size(nar5), size(xz2), size(xz5), size(zst2), size(zst5)),
			"min/avg/max KiB", "level", "unique 2", "unique 5", "stored 2", "vs xz 2", "stored 5", "vs xz 5", "compress MB/s/core")
		for _, p := range candidates {
			uniq, uniq2 := sweepUnique(b, p, tcs)
			var raw2, raw5 int64
			for i, c := range uniq {
				raw5 += int64(len(c))
				if i < uniq2 {
					raw2 += int64(len(c))
				}
			}
			for _, level := range levels {
				// klauspost's best is the baseline of the libzstd frames a
				// cgo build makes at the best level.
				if level == zstd.SpeedBestCompression && cdc.EncoderName(level) != "klauspost "+level.String() {
					stored, elapsed := compressAll(b, uniq, level, false)
					t.row(sweepRow(p, "klauspost "+level.String(), raw2, raw5, stored, uniq2, xz2, xz5, elapsed)...)
				}
				stored, elapsed := compressAll(b, uniq, level, true)
				t.row(sweepRow(p, cdc.EncoderName(level), raw2, raw5, stored, uniq2, xz2, xz5, elapsed)...)
			}
		}
		t.done()
	}
}

// sweepUnique cuts the releases and returns their distinct chunks, first
// seen first, and how many of them the first two releases hold.
func sweepUnique(b *testing.B, p cdc.Params, tcs []nixtest.Toolchain) ([][]byte, int) {
	seen := map[cdc.ID]bool{}
	var uniq [][]byte
	uniq2 := 0
	for i, tc := range tcs {
		c, err := cdc.NewChunker(p, func(chunk []byte) error {
			id := cdc.Sum(chunk)
			if !seen[id] {
				seen[id] = true
				uniq = append(uniq, bytes.Clone(chunk))
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(tc.NAR)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(c, f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		if i == 1 {
			uniq2 = len(uniq)
		}
	}
	return uniq, uniq2
}

// sweepRow renders one row of the chunking sweep: the bytes the frames of
// the first two and of all five releases' distinct chunks take.
func sweepRow(p cdc.Params, encoder string, raw2, raw5 int64, stored []int64, uniq2 int, xz2, xz5 int64, elapsed time.Duration) []string {
	var s2, s5 int64
	for i, n := range stored {
		s5 += n
		if i < uniq2 {
			s2 += n
		}
	}
	return []string{fmt.Sprintf("%d/%d/%d", p.Min>>10, p.Avg>>10, p.Max>>10), encoder,
		size(raw2), size(raw5), size(s2), ratio(float64(s2), float64(xz2)), size(s5), ratio(float64(s5), float64(xz5)),
		fmt.Sprintf("%.1f", float64(raw5)/mb/elapsed.Seconds())}
}

// compressAll compresses every chunk as its own frame on all cores and
// returns each frame's size and the CPU time it took. With encoder it uses
// cdc.Encoder, as the recompressor does; without, klauspost's Codec.
func compressAll(b *testing.B, chunks [][]byte, level cdc.Level, encoder bool) ([]int64, time.Duration) {
	codec, err := cdc.NewCodec(level, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	sizes := make([]int64, len(chunks))
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			compress := func(dst, raw []byte) ([]byte, error) { return codec.Compress(dst, raw), nil }
			if encoder {
				enc, err := codec.NewEncoder(level)
				if err != nil {
					b.Error(err)
					return
				}
				defer enc.Close()
				compress = enc.Compress
			}
			var buf []byte
			for i := w; i < len(chunks); i += workers {
				var err error
				if buf, err = compress(buf[:0], chunks[i]); err != nil {
					b.Error(err)
					return
				}
				sizes[i] = int64(len(buf))
			}
		}()
	}
	wg.Wait()
	return sizes, cpuTime() - cpu0
}

// BenchmarkStorage runs the chosen configuration end to end on real NARs:
// ingest speed against the decompressors, reassembly and frame copy against
// reading a file, and bytes on disk against Nix's own xz and zstd files.
func BenchmarkStorage(b *testing.B) {
	tcs := nixtest.Toolchains(b, benchVersions...)
	ctx := context.Background()
	for range b.N {
		dir := b.TempDir()
		open := func() *appliance.Store {
			// Recompression runs explicitly below, so its cost is measured
			// on its own instead of overlapping the next ingest.
			s, err := appliance.Open(ctx, appliance.Config{Dir: dir, RecompressDelay: -1})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}

		ing := newTable(fmt.Sprintf("Ingest (chunker %s, recompressed with %s, %d cores)", cdc.DefaultParams, cdc.EncoderName(appliance.DefaultLevel), runtime.GOMAXPROCS(0)),
			"release", "input", "NAR", "wall", "ingest MB/s", "CPU", "MB/s per core", "new chunks", "baseline", "baseline MB/s per core", "ratio", "background recompress MB/s per core")
		disk := make([]int64, len(tcs)+1) // disk[k]: du after k releases
		faultCost := pageFaultCost(b)
		var faultRows [][]string
		ingest := func(s *appliance.Store, tc nixtest.Toolchain) (res *appliance.Result, wall, cpu time.Duration, faults int64) {
			f, err := os.Open(tc.NAR)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			cpu0, flt0, start := cpuTime(), minorFaults(), time.Now()
			res, err = s.Ingest(ctx, appliance.Want{Info: fixtureInfo(b, tc)}, f, appliance.CompressionNone)
			wall, cpu, faults = time.Since(start), cpuTime()-cpu0, minorFaults()-flt0
			if err != nil {
				b.Fatal(err)
			}
			return res, wall, cpu, faults
		}
		addRows := func(label string, tc nixtest.Toolchain, res *appliance.Result, wall, cpu time.Duration, faults int64, recompress string) {
			xzWall, xzCPU := toolCPU(b, tc.XZFile, "xz", "-dc")
			perCore := float64(tc.NarSize) / mb / cpu.Seconds()
			xzPerCore := float64(tc.NarSize) / mb / xzCPU.Seconds()
			ing.row(label, "none", size(tc.NarSize), wall.Round(time.Millisecond).String(), mbs(tc.NarSize, wall),
				cpu.Round(time.Millisecond).String(), fmt.Sprintf("%.0f", perCore), fmt.Sprintf("%d/%d", res.NewChunks, res.Chunks),
				"xz -dc", fmt.Sprintf("%.0f (wall %s)", xzPerCore, xzWall.Round(time.Millisecond)), ratio(perCore, xzPerCore), recompress)
			faultCPU := time.Duration(faults) * faultCost
			faultRows = append(faultRows, []string{label, size(int64(res.NewBytes)), fmt.Sprint(faults), faultCPU.Round(time.Millisecond).String(),
				cpu.Round(time.Millisecond).String(), fmt.Sprintf("%.0f", perCore), fmt.Sprintf("%.0f", float64(tc.NarSize)/mb/(cpu-faultCPU).Seconds())})
		}
		for i, tc := range tcs {
			s := open()
			res, wall, cpu, faults := ingest(s, tc)
			rc0 := cpuTime()
			rc, err := s.RecompressDue(ctx, time.Now().Add(time.Hour))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Reclaim(ctx); err != nil {
				b.Fatal(err)
			}
			rcCPU := cpuTime() - rc0
			addRows("go"+tc.Version, tc, res, wall, cpu, faults,
				fmt.Sprintf("%.1f (%s of new chunks in %s CPU)", float64(rc.RawBytes)/mb/rcCPU.Seconds(), size(int64(rc.RawBytes)), rcCPU.Round(time.Millisecond)))
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			disk[i+1] = nixtest.DiskUsage(b, dir)
		}
		// The first release again, into a fresh store: every chunk is new
		// again, but this process's heap has grown already, as a running
		// server's has. The first row pays for that growth.
		{
			s, err := appliance.Open(ctx, appliance.Config{Dir: b.TempDir(), RecompressDelay: -1})
			if err != nil {
				b.Fatal(err)
			}
			res, wall, cpu, faults := ingest(s, tcs[0])
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			addRows("go"+tcs[0].Version+", again", tcs[0], res, wall, cpu, faults, "-")
		}
		// The same first release from its compressed files, in fresh stores:
		// the whole cold path against the decompression floor.
		for _, comp := range []appliance.Compression{appliance.CompressionXZ, appliance.CompressionZstd} {
			tc := tcs[0]
			file, tool := tc.XZFile, []string{"xz", "-dc"}
			if comp == appliance.CompressionZstd {
				file, tool = tc.ZstdFile, []string{"zstd", "-dc"}
			}
			s, err := appliance.Open(ctx, appliance.Config{Dir: b.TempDir(), RecompressDelay: -1})
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(file)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := s.Ingest(ctx, appliance.Want{Info: fixtureInfo(b, tc)}, f, comp); err != nil {
				b.Fatal(err)
			}
			wall := time.Since(start)
			f.Close()
			s.Close()
			toolWall, toolCPUt := toolCPU(b, file, tool[0], tool[1:]...)
			ing.row("go"+tc.Version, string(comp), size(tc.NarSize), wall.Round(time.Millisecond).String(), mbs(tc.NarSize, wall),
				"-", "-", "-", strings.Join(tool, " "),
				fmt.Sprintf("%s wall (%.0f per core)", mbs(tc.NarSize, toolWall), float64(tc.NarSize)/mb/toolCPUt.Seconds()),
				ratio(toolWall.Seconds(), wall.Seconds())+" of floor", "")
		}
		ing.done()
		flt := newTable(fmt.Sprintf("Page faults during those ingests (this machine: %s of CPU per fault on fresh memory)", faultCost.Round(10*time.Nanosecond)),
			"release", "new frames", "page faults", "fault CPU (est.)", "CPU", "MB/s per core", "without fault CPU")
		for _, r := range faultRows {
			flt.row(r...)
		}
		flt.done()

		d := newTable("Bytes on disk (du of the data directory) against the same NARs as Nix files",
			"releases", "NAR", "cairn on disk", "xz files", "cairn/xz", "target", "zstd files", "cairn/zstd")
		var nar, xz, zst int64
		for i, tc := range tcs {
			nar, xz, zst = nar+tc.NarSize, xz+tc.XZSize, zst+tc.ZstdSize
			target := "-"
			switch i + 1 {
			case 2:
				target = "<= 1.00x"
			case 5:
				target = "<= 0.60x"
			}
			d.row(fmt.Sprint(i+1), size(nar), size(disk[i+1]), size(xz), ratio(float64(disk[i+1]), float64(xz)), target,
				size(zst), ratio(float64(disk[i+1]), float64(zst)))
		}
		d.done()

		s := open()
		st, err := s.Stats()
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("\nstore: %d NARs, %d chunks, logical %s, physical (frames) %s, on disk %s, dedup %.2fx\n",
			st.NARs, st.Chunks, size(int64(st.LogicalBytes)), size(int64(st.PhysicalBytes)), size(disk[len(tcs)]), st.DedupRatio)

		rd := newTable("Reads (warm page cache): the first release, and the last, whose new chunks are stored as deltas", "release", "read", "bytes", "cairn", "baseline", "baseline MB/s", "ratio")
		for _, tc := range []nixtest.Toolchain{tcs[0], tcs[len(tcs)-1]} {
			nar, err := s.OpenNAR(ctx, parseHash(b, tc.NarHash))
			if err != nil {
				b.Fatal(err)
			}
			var deltaRaw int64
			for _, c := range nar.Chunks() {
				if c.Level == cdc.DeltaLevel {
					deltaRaw += int64(c.Raw)
				}
			}
			label := fmt.Sprintf("go%s (%.0f%% deltas)", tc.Version, 100*float64(deltaRaw)/float64(nar.Size()))
			// Each side is timed three times, in turns after a pass that
			// warms the page cache, and the medians compared: one pass takes
			// a fifth of a second, short enough for a neighbour's burst to
			// halve it.
			reassemble := func() time.Duration {
				start := time.Now()
				if err := nar.WriteRange(ctx, io.Discard, 0, nar.Size()); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			var n int64
			copyFrames := func() time.Duration {
				start := time.Now()
				var err error
				if n, err = nar.WriteFrames(ctx, io.Discard, 0, len(nar.Chunks())-1); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			reasm, fileWall := medianInTurns(reassemble, func() time.Duration { return readFile(b, tc.NAR) })
			rd.row(label, "raw NAR reassembly", size(nar.Size()), mbs(nar.Size(), reasm), "read the .nar file", mbs(nar.Size(), fileWall),
				ratio(fileWall.Seconds(), reasm.Seconds()))
			copyWall, zstWall := medianInTurns(copyFrames, func() time.Duration { return readFile(b, tc.ZstdFile) })
			rd.row(label, ".nar.zst frame copy", size(n), mbs(n, copyWall), "read Nix's .nar.zst file", mbs(tc.ZstdSize, zstWall),
				ratio(float64(n)/copyWall.Seconds(), float64(tc.ZstdSize)/zstWall.Seconds()))
			rd.row(label, ".nar.zst frame copy as NAR bytes", size(nar.Size()), mbs(nar.Size(), copyWall), "", "", "")
		}
		rd.done()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// readFile reads a whole file into io.Discard and returns how long it took.
// medianInTurns runs a and baseline once each to warm up, then three times
// each in turns, and returns the median time of each.
func medianInTurns(a, baseline func() time.Duration) (time.Duration, time.Duration) {
	a()
	baseline()
	var as, bs []time.Duration
	for range 3 {
		as = append(as, a())
		bs = append(bs, baseline())
	}
	slices.Sort(as)
	slices.Sort(bs)
	return as[1], bs[1]
}

func readFile(b *testing.B, path string) time.Duration {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	if _, err := io.Copy(io.Discard, f); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkConcurrentIngests ingests every benchmark release at once from
// its xz file, as a fleet's cold misses arrive, under the soft memory limit
// cairn serve sets by default: fixed, and raised by IngestHeadroom per
// running ingest through Config.Running (what cairn serve does). The
// baseline is the same run with no limit at all. Wall, GC cycles and GC CPU
// share (of the process's CPU time) are means of two rounds, peak RSS the
// higher.
func BenchmarkConcurrentIngests(b *testing.B) {
	tcs := nixtest.Toolchains(b, benchVersions...)
	const limit = 96 << 20 // cairn serve's default --memory-limit
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	modes := []struct {
		name    string
		limit   int64
		running func(int)
	}{
		{"no limit (baseline)", math.MaxInt64, nil},
		{"fixed 96M", limit, nil},
		{"96M + 16M per running ingest", limit, func(n int) { debug.SetMemoryLimit(limit + int64(n)*appliance.IngestHeadroom) }},
	}
	type result struct {
		wall    time.Duration
		cycles  uint32
		gc, cpu float64 // seconds: collecting garbage, and the process's CPU in all
		peak    int64   // bytes
	}
	run := func(limit int64, running func(int)) result {
		syscall.Sync() // the last run's writeback stays out of this one
		runtime.GC()
		debug.SetMemoryLimit(limit)
		defer debug.SetMemoryLimit(math.MaxInt64)
		s, err := appliance.Open(context.Background(), appliance.Config{Dir: b.TempDir(), RecompressDelay: -1, Running: running})
		if err != nil {
			b.Fatal(err)
		}
		debug.FreeOSMemory() // the last run's freed heap does not count in this one's peak
		resetPeakRSS(b)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		gc0, cpu0 := gcCPUSeconds(), cpuTime()
		start := time.Now()
		var wg sync.WaitGroup
		for _, tc := range tcs {
			wg.Go(func() {
				f, err := os.Open(tc.XZFile)
				if err != nil {
					b.Error(err)
					return
				}
				defer f.Close()
				if _, err := s.Ingest(context.Background(), appliance.Want{Info: fixtureInfo(b, tc)}, f, appliance.CompressionXZ); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		r := result{wall: time.Since(start)}
		runtime.ReadMemStats(&ms1)
		r.cycles, r.gc, r.cpu, r.peak = ms1.NumGC-ms0.NumGC, gcCPUSeconds()-gc0, (cpuTime() - cpu0).Seconds(), peakRSS(b)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		return r
	}
	var narTotal int64
	for _, tc := range tcs {
		narTotal += tc.NarSize
	}
	for range b.N {
		// Two rounds, the second in reverse order, so that no mode always
		// runs first or last.
		got := make([][]result, len(modes))
		for round := range 2 {
			for i := range modes {
				if round == 1 {
					i = len(modes) - 1 - i
				}
				got[i] = append(got[i], run(modes[i].limit, modes[i].running))
			}
		}
		t := newTable(fmt.Sprintf("%d concurrent ingests from xz (%s of NAR), %d cores: mean of 2 rounds", len(tcs), size(narTotal), runtime.GOMAXPROCS(0)),
			"memory limit", "wall", "vs baseline", "GC cycles", "GC CPU share", "peak RSS")
		mean := func(rs []result) result {
			var m result
			var cycles uint32
			for _, r := range rs {
				m.wall += r.wall / time.Duration(len(rs))
				cycles += r.cycles
				m.gc, m.cpu = m.gc+r.gc, m.cpu+r.cpu
				m.peak = max(m.peak, r.peak)
			}
			m.cycles = cycles / uint32(len(rs))
			return m
		}
		base := mean(got[0])
		for i, m := range modes {
			r := mean(got[i])
			t.row(m.name, r.wall.Round(time.Millisecond).String(), ratio(r.wall.Seconds(), base.wall.Seconds()),
				fmt.Sprint(r.cycles), fmt.Sprintf("%.1f%%", 100*r.gc/r.cpu), fmt.Sprintf("%.0f MiB", float64(r.peak)/(1<<20)))
		}
		t.done()
	}
}

// gcCPUSeconds is the CPU time the Go runtime estimates it has spent
// collecting garbage so far, without the marking it did on spare
// processors: the compulsory part, as runtime/metrics describes it.
func gcCPUSeconds() float64 {
	samples := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/cpu/classes/gc/mark/idle:cpu-seconds"}}
	metrics.Read(samples)
	return samples[0].Value.Float64() - samples[1].Value.Float64()
}

// resetPeakRSS restarts the process's VmHWM count from its current RSS.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatalf("reset peak RSS: %v", err)
	}
}

// peakRSS is the process's VmHWM in bytes.
func peakRSS(b *testing.B) int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			if _, err := fmt.Sscan(v, &kib); err == nil {
				return kib << 10
			}
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}
