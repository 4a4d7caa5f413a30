package seed_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/appliance/seed"
	"cairn/internal/nixtest"
)

// benchVersions are the Go toolchain releases the seed benchmark moves:
// two real ~190 MB NARs.
var benchVersions = []string{"1.25.0", "1.25.1"}

// benchRuns is how often each side is measured; the best run counts, as
// the machine is shared.
const benchRuns = 2

// cost is what one run took.
type cost struct{ wall, cpu time.Duration }

// cpuTime is this process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// best runs fn benchRuns times and returns its fastest run.
func best(b *testing.B, fn func(i int) cost) cost {
	b.Helper()
	var out cost
	for i := range benchRuns {
		c := fn(i)
		if i == 0 || c.wall < out.wall {
			out = c
		}
	}
	return out
}

// inProcess measures fn in this process.
func inProcess(fn func()) cost {
	c0, w0 := cpuTime(), time.Now()
	fn()
	return cost{time.Since(w0), cpuTime() - c0}
}

// command measures a shell command, its children included.
func command(b *testing.B, script string) cost {
	b.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v", script, err)
	}
	return cost{time.Since(start), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
}

// benchRow is one measured operation next to its baseline from the same
// run.
type benchRow struct {
	what     string
	bytes    int64
	took     cost
	baseline string
	base     cost
}

// BenchmarkSeed measures export to a drive against cp -r of the same
// bytes, and import from the drive against a plain ingest of the same NAR
// files, from a data directory and over HTTP, in one run.
func BenchmarkSeed(b *testing.B) {
	tcs := nixtest.Toolchains(b, benchVersions...)
	ctx := context.Background()
	for range b.N {
		k := getKeys(b)
		src := newStore(b, k.cairn)
		var roots []string
		var narBytes int64
		for _, tc := range tcs {
			f, err := os.Open(tc.NAR)
			if err != nil {
				b.Fatal(err)
			}
			h, err := narinfo.ParseNarHash(tc.NarHash)
			if err != nil {
				b.Fatal(err)
			}
			info := &narinfo.Info{StorePath: tc.StorePath, NarHash: h, NarSize: uint64(tc.NarSize)}
			info.Sign(k.upstream)
			_, err = src.Ingest(ctx, appliance.Want{Info: appliance.NewRecord(info, k.cairn, "bench")}, f, appliance.CompressionNone)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			roots, narBytes = append(roots, tc.StorePath), narBytes+tc.NarSize
		}
		// A store at rest: frames recompressed at the best level.
		if _, err := src.RecompressDue(ctx, time.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
		tmp := b.TempDir()
		dir := func(name string, i int) string { return filepath.Join(tmp, fmt.Sprintf("%s-%d", name, i)) }
		local := seed.NewLocal(src.Store, src.key)
		export := func(source seed.Source, to string) *seed.ExportReport {
			rep, err := seed.Export(ctx, seed.ExportConfig{Dir: to, Source: source, Roots: roots})
			if err != nil {
				b.Fatal(err)
			}
			return rep
		}
		var rows []benchRow

		// Export from the data directory and over HTTP, against cp -r of
		// the drive, synced as the export is, and not.
		var rep *seed.ExportReport
		exp := best(b, func(i int) cost { return inProcess(func() { rep = export(local, dir("drive", i)) }) })
		drive := dir("drive", 0)
		cpSync := best(b, func(i int) cost {
			return command(b, fmt.Sprintf("cp -r %q %q && sync -f %q", drive, dir("cp-sync", i), dir("cp-sync", i)))
		})
		cp := best(b, func(i int) cost { return command(b, fmt.Sprintf("cp -r %q %q", drive, dir("cp", i))) })
		// What checking the NARs alone costs, with the C tools.
		check := best(b, func(int) cost {
			return command(b, fmt.Sprintf("for f in %q/nar/*; do zstd -dcq \"$f\" | sha256sum >/dev/null; done", drive))
		})
		rows = append(rows,
			benchRow{"export --data (NARs checked, synced)", rep.WrittenBytes, exp, "cp -r && sync -f", cpSync},
			benchRow{"export --data (NARs checked, synced)", rep.WrittenBytes, exp, "cp -r", cp},
			benchRow{"export --data (NARs checked, synced)", rep.WrittenBytes, exp, "zstd -dc | sha256sum (the check alone)", check})
		srv := serve(b, src)
		expHTTP := best(b, func(i int) cost {
			return inProcess(func() { export(remote(b, srv.URL, ""), dir("drive-http", i)) })
		})
		rows = append(rows, benchRow{"export --server (HTTP on loopback)", rep.WrittenBytes, expHTTP, "cp -r && sync -f", cpSync})

		// A second export finds everything on the drive: it reads and
		// checks it. So does verify.
		sha := best(b, func(int) cost {
			return command(b, fmt.Sprintf("find %q -type f -exec cat {} + | sha256sum >/dev/null", drive))
		})
		again := best(b, func(int) cost { return inProcess(func() { export(local, drive) }) })
		rows = append(rows, benchRow{"export again (all kept, all checked)", rep.WrittenBytes, again, "cat drive | sha256sum", sha})
		ver := best(b, func(int) cost {
			return inProcess(func() {
				r, err := seed.Verify(ctx, seed.VerifyConfig{Dir: drive})
				if err != nil || !r.OK() {
					b.Fatalf("verify: %v %v", err, r)
				}
			})
		})
		rows = append(rows, benchRow{"verify", rep.WrittenBytes, ver, "cat drive | sha256sum", sha})

		// Import into an empty store, against a plain ingest of the same
		// .nar.zst files into another, in turns.
		ingest := best(b, func(int) cost {
			plain := newStore(b, k.other)
			return inProcess(func() {
				for _, tc := range tcs {
					h, _ := narinfo.ParseNarHash(tc.NarHash)
					f, err := os.Open(filepath.Join(drive, "nar", nixbase32.EncodeToString(h[:])+".nar.zst"))
					if err != nil {
						b.Fatal(err)
					}
					info := &appliance.NarInfo{StorePath: tc.StorePath, NarHash: h, NarSize: uint64(tc.NarSize), Source: "bench"}
					_, err = plain.Ingest(ctx, appliance.Want{Info: info}, f, appliance.CompressionZstd)
					f.Close()
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		})
		importTo := func(sink seed.Sink) {
			r, err := seed.Import(ctx, seed.ImportConfig{Dir: drive, Sink: sink})
			if err != nil || len(r.Refused) > 0 || len(r.Imported) != len(tcs) {
				b.Fatalf("import: %v %+v", err, r)
			}
		}
		imp := best(b, func(int) cost {
			dst := newStore(b, k.other)
			return inProcess(func() { importTo(seed.NewLocal(dst.Store, dst.key)) })
		})
		rows = append(rows, benchRow{"import --data (MB of NAR)", narBytes, imp, "Store.Ingest of the .nar.zst", ingest})
		impHTTP := best(b, func(int) cost {
			dst := newStore(b, k.other)
			srv := serve(b, dst)
			return inProcess(func() { importTo(remote(b, srv.URL, writeToken)) })
		})
		rows = append(rows, benchRow{"import --server (push API, MB of NAR)", narBytes, impHTTP, "Store.Ingest of the .nar.zst", ingest})

		printRows(fmt.Sprintf("Seed drives: Go toolchain %s, %.1f MB of NAR, %.1f MB of .nar.zst on the drive; best of %d, CPU is all cores",
			strings.Join(benchVersions, " and "), float64(narBytes)/1e6, float64(rep.WrittenBytes)/1e6, benchRuns), rows)
	}
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func printRows(title string, rows []benchRow) {
	fmt.Printf("\n## %s\n\n", title)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "operation\tMB\twall\tMB/s\tCPU\tbaseline\twall\tMB/s\tCPU\tratio (MB/s)\t")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%.1f\t%s\t%.0f\t%s\t%s\t%s\t%.0f\t%s\t%.2fx\t\n", r.what, float64(r.bytes)/1e6,
			r.took.wall.Round(time.Millisecond), mbps(r.bytes, r.took.wall), r.took.cpu.Round(time.Millisecond),
			r.baseline, r.base.wall.Round(time.Millisecond), mbps(r.bytes, r.base.wall), r.base.cpu.Round(time.Millisecond),
			r.base.wall.Seconds()/r.took.wall.Seconds())
	}
	w.Flush()
}
