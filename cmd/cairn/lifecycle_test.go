package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/appliance"
	"cairn/internal/nixtest"
)

// lifecycleCairn starts a cairn in front of the xz fixture cache with
// admin, write and read tokens.
func lifecycleCairn(t *testing.T, up string, extra ...string) *cairnProc {
	t.Helper()
	toks := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(toks, []byte(fmt.Sprintf("write %s\nadmin %s\nread %s\n", writeToken, adminToken, readToken)), 0o600))
	return startCairn(t, append([]string{"--upstream", up, "--trusted-key", fixtures(t).key.Public, "--tokens-file", toks}, extra...)...)
}

// cli runs a cairn admin command against c and returns its output and
// error.
func (c *cairnProc) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(cairnBin, args...)
	cmd.Env = append(os.Environ(), "CAIRN_SERVER="+c.URL, "CAIRN_TOKEN="+adminToken)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *cairnProc) report(t *testing.T) appliance.Report {
	t.Helper()
	out, err := c.cli(t, "stats", "--json")
	require.NoError(t, err, out)
	var r appliance.Report
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	return r
}

func TestAdminNeedsAnAdminToken(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	c := lifecycleCairn(t, up.URL)
	for _, tc := range []struct {
		method, path, token string
		status              int
	}{
		{"GET", "/_cairn/stats", "", 401},
		{"GET", "/_cairn/stats", readToken, 403},
		{"GET", "/_cairn/stats", writeToken, 403},
		{"POST", "/_cairn/gc", writeToken, 403},
		{"POST", "/_cairn/pins", "", 401},
		{"POST", "/_cairn/verify", "", 401},
		{"GET", "/_cairn/pins", "wrong-token-entirely", 401},
		{"GET", "/_cairn/stats", adminToken, 200},
		{"GET", "/_cairn/pins", adminToken, 200},
		{"GET", "/_cairn/nonsense", adminToken, 404},
	} {
		require.Equal(t, tc.status, c.do(t, tc.method, tc.path, tc.token), "%s %s with %q", tc.method, tc.path, tc.token)
	}
	out, err := exec.Command(cairnBin, "stats", "--server", c.URL, "--token", writeToken).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "403")
}

func TestPinFetchesTheClosureAndStatsShowIt(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	c := lifecycleCairn(t, up.URL)
	root := f.closure.Root()

	// Flags after the arguments work too.
	out, err := c.cli(t, "pin", "add", root, "--server", c.URL)
	require.NoError(t, err, out)
	require.Contains(t, out, "fetched")
	require.Equal(t, len(f.closure.Paths), up.CountPrefix("GET", "/nar/"), "the references arrived with the pin")

	out, err = c.cli(t, "pin", "ls", "--json")
	require.NoError(t, err, out)
	var pins []appliance.PinReport
	require.NoError(t, json.Unmarshal([]byte(out), &pins))
	require.Len(t, pins, 1)
	require.Equal(t, len(f.closure.Paths), pins[0].Members)
	require.Zero(t, pins[0].Missing)

	r := c.report(t)
	require.EqualValues(t, len(f.closure.Paths), r.Paths)
	require.EqualValues(t, len(f.closure.Paths), r.PinnedPaths)
	require.Len(t, r.Upstreams, 1)
	require.EqualValues(t, len(f.closure.Paths), r.Upstreams[0].Hits)
	out, err = c.cli(t, "stats")
	require.NoError(t, err, out)
	require.Contains(t, out, "dedup ratio")
	require.Contains(t, out, "last gc")

	out, err = c.cli(t, "pin", "rm", root)
	require.NoError(t, err, out)
	require.Zero(t, c.report(t).PinnedRoots)
}

func TestSizeLimitEvictsAndGCGivesSpaceBack(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	second := nixtest.ServeCache(t, f.second)
	// Room for the source tree (about 2.2 MB of NAR) but not for it and
	// the big path (about 1.5 MB) together.
	c := lifecycleCairn(t, up.URL+"?priority=10", "--upstream", second.URL+"?priority=20", "--max-size", "3M", "--low-watermark", "0.9")
	_, out, err := nixPull(t, c.URL, c.PubKey, f.closure.Root())
	require.NoError(t, err, out)
	before := c.report(t)
	require.EqualValues(t, 3, before.Paths)
	duBefore := nixtest.DiskUsage(t, c.Data)

	_, out, err = nixPull(t, c.URL, c.PubKey, f.big)
	require.NoError(t, err, out)
	require.Eventually(t, func() bool {
		r := c.report(t)
		return r.LastEviction != nil && r.PhysicalBytes <= 3<<20
	}, 20e9, 100e6, "eviction brings the store under --max-size")
	r := c.report(t)
	require.LessOrEqual(t, r.PhysicalBytes, uint64(3<<20))
	status, _, _ := c.get(t, "GET", "/_cairn/paths")
	require.Equal(t, 200, status)
	_, _, paths := c.get(t, "GET", "/_cairn/paths")
	require.Contains(t, string(paths), filepath.Base(f.big), "the newest path stays")
	require.NotContains(t, string(paths), filepath.Base(f.closure.Paths[2]), "the least recently used path went")

	out, err = c.cli(t, "gc")
	require.NoError(t, err, out)
	require.Contains(t, out, "value-log")
	require.NotNil(t, c.report(t).LastGC)
	// At this size everything sits in Badger's active value-log file,
	// which value-log GC never rewrites; TestEvictionGivesDiskSpaceBack
	// shows du falling once there is more than one file.
	t.Logf("du of the data directory: %d before the big path, %d after eviction and gc", duBefore, nixtest.DiskUsage(t, c.Data))
}

func TestVerifyRepairRecoversFromUpstream(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	c := lifecycleCairn(t, up.URL)
	_, out, err := nixPull(t, c.URL, c.PubKey, f.closure.Root())
	require.NoError(t, err, out)
	out, err = c.cli(t, "verify")
	require.NoError(t, err, out)
	require.Contains(t, out, "0 damaged")
	c.stop(t)

	// Flip one byte of one chunk of the source tree's NAR.
	victim := f.closure.Paths[2]
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: c.Data})
	require.NoError(t, err)
	r, err := s.Index().NarInfo(hashPart(victim))
	require.NoError(t, err)
	nar, err := s.OpenNAR(context.Background(), r.NarHash)
	require.NoError(t, err)
	id := nar.Chunks()[0].ID
	frame, err := s.Chunks().Frame(context.Background(), id, nil)
	require.NoError(t, err)
	frame[len(frame)/2] ^= 0x01
	b := s.Chunks().NewBatch()
	require.NoError(t, b.Put(id, frame))
	require.NoError(t, b.Flush())
	require.NoError(t, s.Close())

	c = lifecycleCairn(t, up.URL, "--data", c.Data)
	out, err = c.cli(t, "verify")
	require.Error(t, err, "damage makes verify fail:\n%s", out)
	require.Contains(t, out, "DAMAGED")
	require.Contains(t, out, victim)
	out, err = c.cli(t, "verify", "--repair")
	require.NoError(t, err, out)
	require.Contains(t, out, "1 dropped")

	fetched := up.CountPrefix("GET", "/nar/")
	_, out, err = nixPull(t, c.URL, c.PubKey, f.closure.Root())
	require.NoError(t, err, "the repaired path comes back from upstream:\n%s", out)
	require.Equal(t, fetched+1, up.CountPrefix("GET", "/nar/"))
	out, err = c.cli(t, "verify")
	require.NoError(t, err, out)
	require.True(t, strings.Contains(out, "0 damaged"), out)
}
