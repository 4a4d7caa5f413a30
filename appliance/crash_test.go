package appliance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/stretchr/testify/require"

	"cairn/appliance"
	"cairn/internal/nixtest"
)

// The crash child is this test binary, started with crashChildEnv set.
const crashChildEnv = "CAIRN_CRASH_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashChildEnv); spec != "" {
		os.Exit(crashChild(spec))
	}
	os.Exit(m.Run())
}

// crashChild ingests and deletes the NARs named in spec ("DIR|nar1|nar2…")
// forever, slowly, until it is killed.
func crashChild(spec string) int {
	if rest, ok := strings.CutPrefix(spec, "gc|"); ok {
		return gcChild(rest)
	}
	parts := strings.Split(spec, "|")
	// Recompression runs in the background as soon as an ingest commits, so
	// kills land in it too.
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: parts[0], RecompressDelay: time.Nanosecond, Level: zstd.SpeedFastest})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 2
	}
	fmt.Println("open")
	ctx := context.Background()
	for {
		for i, path := range parts[1:] {
			b, err := os.ReadFile(path)
			if err != nil {
				fmt.Fprintln(os.Stderr, "crash child:", err)
				return 2
			}
			n := nixtest.NAR{Name: fmt.Sprintf("crash-%d", i), Bytes: b}
			n.Hash = sha256sum(b)
			if ok, _ := s.Index().HasManifest(n.Hash); ok {
				if _, err := s.DeleteNAR(ctx, n.Hash); err != nil {
					fmt.Fprintln(os.Stderr, "crash child:", err)
					return 2
				}
				continue
			}
			if _, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, &slowReader{r: bytes.NewReader(b)}, "none"); err != nil {
				fmt.Fprintln(os.Stderr, "crash child:", err)
				return 2
			}
		}
	}
}

// gcChild ingests the NARs in spec ("DIR|nar1|nar2…") into a cache whose
// size limit holds about two of them, and evicts and collects garbage after
// each, forever, until it is killed.
func gcChild(spec string) int {
	parts := strings.Split(spec, "|")
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "crash child:", err); return 2 }
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: parts[0]})
	if err != nil {
		return fail(err)
	}
	sk, _, err := signature.GenerateKeypair("crash-1", nil)
	if err != nil {
		return fail(err)
	}
	first, err := os.Stat(parts[1])
	if err != nil {
		return fail(err)
	}
	svc, err := appliance.NewService(s, appliance.ServiceConfig{Key: sk, MaxSize: uint64(first.Size() + 600<<10), LowWatermark: 0.9})
	if err != nil {
		return fail(err)
	}
	fmt.Println("open")
	ctx := context.Background()
	for {
		for i, path := range parts[1:] {
			b, err := os.ReadFile(path)
			if err != nil {
				return fail(err)
			}
			n := nixtest.NAR{Name: fmt.Sprintf("gc-%d", i), Bytes: b, Hash: sha256sum(b)}
			if _, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(b), "none"); err != nil {
				return fail(err)
			}
			if _, err := svc.Evict(ctx, true); err != nil {
				return fail(err)
			}
			if _, err := svc.GC(ctx); err != nil {
				return fail(err)
			}
		}
	}
}

// slowReader hands out at most 128 KiB a millisecond, so that a kill lands
// inside ingests as often as between them.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.r.Read(p[:min(len(p), 128<<10)])
}

func TestCrashMidIngestKeepsInvariants(t *testing.T) {
	dir := t.TempDir()
	spec, nars := crashNARs(t, dir)
	killRounds(t, 10, strings.Join(spec, "|"), func(round int) {
		s := openStore(t, spec[0])
		checkReadable(t, s)
		// Reopening finishes an interrupted recompression; then the index
		// matches the chunk store exactly.
		_, err := s.RecompressDue(context.Background(), time.Now().Add(time.Hour))
		require.NoError(t, err)
		checkConsistent(t, s)
		present := 0
		for _, n := range nars {
			ok, err := s.Index().HasManifest(n.Hash)
			require.NoError(t, err)
			if ok {
				present++
				require.Equal(t, n.Bytes, readAll(t, s, n.Hash), "a committed NAR is whole")
				_, err := s.Index().NarInfo(nixtest.HashPart(t, info(n).StorePath))
				require.NoError(t, err, "manifest and narinfo commit together")
			}
		}
		swept, err := s.SweepOrphans(context.Background())
		require.NoError(t, err)
		t.Logf("round %d: %d of %d NARs committed, %d orphan chunks swept", round, present, len(nars), swept)
		checkConsistent(t, s)
		require.NoError(t, s.Close())
	})
}

func TestCrashDuringGCKeepsInvariants(t *testing.T) {
	dir := t.TempDir()
	spec, _ := crashNARs(t, dir)
	killRounds(t, 6, "gc|"+strings.Join(spec, "|"), func(round int) {
		s := openStore(t, spec[0])
		checkReadable(t, s)
		checkConsistent(t, s)
		sk, _, err := signature.GenerateKeypair("check-1", nil)
		require.NoError(t, err)
		svc, err := appliance.NewService(s, appliance.ServiceConfig{Key: sk})
		require.NoError(t, err)
		rep, err := svc.Verify(context.Background(), false, nil)
		require.NoError(t, err)
		require.Zero(t, rep.Damaged, "round %d: verify passes after a kill during GC", round)
		// Everything still listed is served whole.
		paths, err := svc.Paths()
		require.NoError(t, err)
		for _, p := range paths {
			r, err := s.Index().NarInfo(p[:32])
			require.NoError(t, err)
			nar, err := svc.WaitNAR(context.Background(), r.NarHash)
			require.NoError(t, err, "listed path %s", p)
			got := readAll(t, s, r.NarHash)
			require.Equal(t, r.NarHash, sha256sum(got))
			_ = nar
		}
		require.Equal(t, len(paths), rep.NARs, "round %d: every NAR is named by a path: eviction drops both at once", round)
		t.Logf("round %d: %d paths listed, %d NARs verified", round, len(paths), rep.NARs)
		svc.Close()
		require.NoError(t, s.Close())
	})
}

// crashNARs writes five variants of one source tree as NAR files under dir;
// they share most chunks, so deletes and ingests race over shared reference
// counts. It returns the crash child's spec (data dir, then NAR files).
func crashNARs(t *testing.T, dir string) ([]string, []nixtest.NAR) {
	tree := filepath.Join(dir, "tree")
	require.NoError(t, os.CopyFS(tree, os.DirFS(filepath.Join(nixtest.GoRoot(t), "src", "net", "http"))))
	var nars []nixtest.NAR
	spec := []string{filepath.Join(dir, "data")}
	for i := range 5 {
		require.NoError(t, os.WriteFile(filepath.Join(tree, "variant"), bytes.Repeat([]byte{byte(i)}, 100<<10*(i+1)), 0o644))
		n := nixtest.MakeNAR(t, fmt.Sprintf("crash-%d", i), tree)
		path := filepath.Join(dir, n.Name+".nar")
		require.NoError(t, os.WriteFile(path, n.Bytes, 0o644))
		nars = append(nars, n)
		spec = append(spec, path)
	}
	return spec, nars
}

// killRounds starts the crash child with spec, kills it with SIGKILL at a
// random moment, and runs check, rounds times.
func killRounds(t *testing.T, rounds int, spec string, check func(round int)) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	kills := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), crashChildEnv+"="+spec)
		stderrPath := filepath.Join(dir, fmt.Sprintf("child-%d.stderr", round))
		stderrFile, err := os.Create(stderrPath)
		require.NoError(t, err)
		cmd.Stderr = stderrFile
		childErr := func() string { b, _ := os.ReadFile(stderrPath); return string(b) }
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line := make([]byte, 5)
		_, err = io.ReadFull(out, line)
		if err != nil {
			_ = cmd.Wait()
			t.Fatalf("child did not open the store: %s", childErr())
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		err = cmd.Wait()
		stderrFile.Close()
		require.Error(t, err, "child must have been killed, not exited: %s", childErr())
		require.NotContains(t, childErr(), "crash child:", "round %d", round)
		kills++
		check(round)
	}
	require.Equal(t, rounds, kills)
}

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }
