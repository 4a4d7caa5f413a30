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

// slowReader hands out at most 128 KiB a millisecond, so that a kill lands
// inside ingests as often as between them.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.r.Read(p[:min(len(p), 128<<10)])
}

func TestCrashMidIngestKeepsInvariants(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	require.NoError(t, os.CopyFS(tree, os.DirFS(filepath.Join(nixtest.GoRoot(t), "src", "net", "http"))))
	var nars []nixtest.NAR
	spec := []string{filepath.Join(dir, "data")}
	for i := range 5 {
		// Variants of one tree: they share most chunks, so deletes and
		// ingests race over shared reference counts.
		require.NoError(t, os.WriteFile(filepath.Join(tree, "variant"), bytes.Repeat([]byte{byte(i)}, 100<<10*(i+1)), 0o644))
		n := nixtest.MakeNAR(t, fmt.Sprintf("crash-%d", i), tree)
		path := filepath.Join(dir, n.Name+".nar")
		require.NoError(t, os.WriteFile(path, n.Bytes, 0o644))
		nars = append(nars, n)
		spec = append(spec, path)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	kills := 0
	for round := range 10 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), crashChildEnv+"="+strings.Join(spec, "|"))
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

		s := openStore(t, spec[0])
		checkReadable(t, s)
		// Reopening finishes an interrupted recompression; then the index
		// matches the chunk store exactly.
		_, err = s.RecompressDue(context.Background(), time.Now().Add(time.Hour))
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
	}
	require.Equal(t, 10, kills)
}

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }
