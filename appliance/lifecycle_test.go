package appliance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/appliance"
	"cairn/internal/nixtest"
	"cairn/kv"
)

// randomNAR makes a NAR of one file of size random bytes, plus shared
// (when not nil) as a second file, so NARs can share chunks.
func randomNAR(t testing.TB, name string, size int, shared []byte) nixtest.NAR {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(len(name)), uint64(size)+uint64(name[len(name)-1])))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "own"), b, 0o644))
	if shared != nil {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "shared"), shared, 0o644))
	}
	return nixtest.MakeNAR(t, name, dir)
}

// storePath is a valid store path for a test name.
func storePath(name string) string {
	h := sha256.Sum256([]byte(name))
	return "/nix/store/" + nixbase32.EncodeToString(h[:20]) + "-" + name
}

// add ingests n as the store path of its name, with references.
func add(t testing.TB, svc *appliance.Service, n nixtest.NAR, refs ...string) string {
	t.Helper()
	p := storePath(n.Name)
	ni := &appliance.NarInfo{StorePath: p, NarHash: n.Hash, NarSize: uint64(len(n.Bytes)), Source: "test"}
	for _, r := range refs {
		ni.References = append(ni.References, strings.TrimPrefix(r, "/nix/store/"))
	}
	_, err := svc.Store().Ingest(context.Background(), appliance.Want{Info: ni}, bytes.NewReader(n.Bytes), "none")
	require.NoError(t, err)
	return p
}

func cached(t testing.TB, svc *appliance.Service, p string) bool {
	t.Helper()
	_, err := svc.Store().Index().NarInfo(strings.TrimPrefix(p, "/nix/store/")[:32])
	return err == nil
}

func physical(t testing.TB, svc *appliance.Service) uint64 {
	t.Helper()
	st, err := svc.Store().Stats()
	require.NoError(t, err)
	return st.PhysicalBytes
}

func TestEvictsLeastRecentlyUsedDownToWatermark(t *testing.T) {
	const each = 512 << 10
	svc := newService(t, func(c *appliance.ServiceConfig) { c.MaxSize = 3 * each; c.LowWatermark = 0.7 })
	var paths []string
	for i := range 6 {
		paths = append(paths, add(t, svc, randomNAR(t, fmt.Sprintf("lru-%d", i), each, nil)))
		time.Sleep(2 * time.Millisecond)
	}
	// Use them in the order 3 4 5 0 1 2: 3 is now the least recently used.
	for _, i := range []int{3, 4, 5, 0, 1, 2} {
		_, err := svc.NarInfo(context.Background(), strings.TrimPrefix(paths[i], "/nix/store/")[:32], false)
		require.NoError(t, err)
		time.Sleep(2 * time.Millisecond)
	}
	rep, err := svc.Evict(context.Background(), false)
	require.NoError(t, err)
	require.NotNil(t, rep, "over the limit, eviction runs")
	require.LessOrEqual(t, physical(t, svc), uint64(21*each/10), "down to the low watermark")
	require.Equal(t, 4, rep.PathsEvicted)
	for i, p := range paths {
		want := i == 1 || i == 2
		require.Equal(t, want, cached(t, svc, p), "path %d: the most recently used stay", i)
	}

	rep, err = svc.Evict(context.Background(), false)
	require.NoError(t, err)
	require.Nil(t, rep, "under the limit nothing happens")
}

func TestEvictionKeepsPinnedClosuresAndSharedChunks(t *testing.T) {
	const each = 256 << 10
	shared := make([]byte, 1<<20)
	for i := range shared {
		shared[i] = byte(i * 7 % 251)
	}
	svc := newService(t, func(c *appliance.ServiceConfig) { c.MaxSize = 1; c.LowWatermark = 1 })
	dep := add(t, svc, randomNAR(t, "dep", each, nil))
	root := add(t, svc, randomNAR(t, "root", each, nil), dep)
	shares := add(t, svc, randomNAR(t, "shares", each, shared))
	victim := add(t, svc, randomNAR(t, "victim", each, shared))
	require.NoError(t, svc.Pin(context.Background(), []string{root, shares}, nil))
	_, err := svc.Evict(context.Background(), true)
	require.NoError(t, err)
	require.False(t, cached(t, svc, victim))
	for _, p := range []string{dep, root, shares} {
		require.True(t, cached(t, svc, p), "%s is pinned", p)
	}
	r, err := svc.Store().Index().NarInfo(strings.TrimPrefix(shares, "/nix/store/")[:32])
	require.NoError(t, err)
	require.NoError(t, svc.Store().Verify(context.Background(), r.NarHash), "a chunk shared with the evicted NAR survives")

	pins, err := svc.Pins()
	require.NoError(t, err)
	members := map[string]int{}
	for _, p := range pins {
		members["/nix/store/"+p.Path] = p.Members
	}
	require.Equal(t, map[string]int{root: 2, shares: 1}, members, "root's closure is root and dep")

	require.NoError(t, svc.Unpin(root))
	_, err = svc.Evict(context.Background(), true)
	require.NoError(t, err)
	require.False(t, cached(t, svc, root), "unpinned, it can go")
	require.False(t, cached(t, svc, dep))
	require.True(t, cached(t, svc, shares))
	require.ErrorIs(t, svc.Unpin(root), appliance.ErrNotFound)
}

func TestVerifyRepairDropsDamagedNARs(t *testing.T) {
	svc := newService(t)
	ctx := context.Background()
	good := add(t, svc, randomNAR(t, "good", 300<<10, nil))
	bad := add(t, svc, randomNAR(t, "bad", 300<<10, nil))
	r, err := svc.Store().Index().NarInfo(strings.TrimPrefix(bad, "/nix/store/")[:32])
	require.NoError(t, err)
	nar, err := svc.Store().OpenNAR(ctx, r.NarHash)
	require.NoError(t, err)
	victim := nar.Chunks()[0]
	frame, err := svc.Store().Chunks().Frame(ctx, victim.ID, nil)
	require.NoError(t, err)
	frame[len(frame)/2] ^= 0x01
	b := svc.Store().Chunks().NewBatch()
	require.NoError(t, b.Put(victim.ID, frame))
	require.NoError(t, b.Flush())

	var events []appliance.VerifyEvent
	rep, err := svc.Verify(ctx, false, func(ev appliance.VerifyEvent) { events = append(events, ev) })
	require.NoError(t, err)
	require.Equal(t, 2, rep.NARs)
	require.Equal(t, 1, rep.Damaged)
	require.Zero(t, rep.Dropped)
	require.True(t, cached(t, svc, bad), "without --repair nothing changes")
	var damaged []string
	for _, ev := range events {
		if !ev.OK {
			damaged = append(damaged, ev.Paths...)
		}
	}
	require.Equal(t, []string{bad}, damaged)

	rep, err = svc.Verify(ctx, true, nil)
	require.NoError(t, err)
	require.Equal(t, 1, rep.Dropped)
	require.False(t, cached(t, svc, bad))
	require.True(t, cached(t, svc, good))
	has, err := svc.Store().Chunks().Has(victim.ID)
	require.NoError(t, err)
	require.False(t, has, "the damaged chunk went with the last NAR naming it, so a re-fetch writes it anew")
	rep, err = svc.Verify(ctx, false, nil)
	require.NoError(t, err)
	require.Zero(t, rep.Damaged)
}

func TestEvictionGivesDiskSpaceBack(t *testing.T) {
	dir := t.TempDir()
	// Small value-log files, so this test's few MB span several of them:
	// value-log GC never rewrites the file being written.
	st := openStore(t, dir, func(c *appliance.Config) {
		c.ChunkOpts = kv.ChunkOptions{MemTableSize: 4 << 20, IndexCacheSize: 1 << 20, ValueLogFileSize: 1 << 20}
	})
	defer st.Close()
	sk, _, err := signature.GenerateKeypair("cairn-test-1", nil)
	require.NoError(t, err)
	svc, err := appliance.NewService(st, appliance.ServiceConfig{Key: sk, MaxSize: 1 << 20, LowWatermark: 0.5})
	require.NoError(t, err)
	defer svc.Close()
	for i := range 8 {
		add(t, svc, randomNAR(t, fmt.Sprintf("du-%d", i), 1<<20, nil))
	}
	require.NoError(t, st.Chunks().Sync())
	full := nixtest.DiskUsage(t, dir)
	rep, err := svc.Evict(context.Background(), false)
	require.NoError(t, err)
	require.Equal(t, 8, rep.PathsEvicted, "1 MiB NARs do not fit under half of 1 MiB")
	after := nixtest.DiskUsage(t, dir)
	t.Logf("du: %d -> %d after evicting 8 MiB", full, after)
	require.Less(t, after, full-4<<20, "du of the data directory falls after eviction")
}
