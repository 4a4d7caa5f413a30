package appliance_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"cairn/appliance"
	"cairn/cdc"
	"cairn/internal/nixtest"
	"cairn/kv"
)

func openStore(t testing.TB, dir string, mod ...func(*appliance.Config)) *appliance.Store {
	t.Helper()
	cfg := appliance.Config{Dir: dir}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := appliance.Open(context.Background(), cfg)
	require.NoError(t, err)
	return s
}

func info(n nixtest.NAR) *appliance.NarInfo {
	h := sha256.Sum256([]byte(n.Name))
	return &appliance.NarInfo{
		StorePath: fmt.Sprintf("/nix/store/%x-%s", h[:16], n.Name),
		NarHash:   n.Hash,
		NarSize:   uint64(len(n.Bytes)),
		Source:    "test",
	}
}

// snapshot is everything an ingest could leave behind.
type snapshot struct {
	Stats    kv.Stats
	Chunks   []cdc.ID
	Manifest []string
}

func snap(t testing.TB, s *appliance.Store) snapshot {
	t.Helper()
	var sn snapshot
	st, err := s.Stats()
	require.NoError(t, err)
	sn.Stats = st.Stats
	require.NoError(t, s.Chunks().ForEach(context.Background(), func(id cdc.ID) error {
		sn.Chunks = append(sn.Chunks, id)
		return nil
	}))
	require.NoError(t, s.Index().ForEachManifest(func(m *kv.Manifest) error {
		sn.Manifest = append(sn.Manifest, appliance.FormatHash(m.NarHash))
		return nil
	}))
	return sn
}

// checkConsistent proves the invariants over a whole store: every
// manifest's chunks exist with the frame size their ref records, verify,
// and copy out as a .nar.zst; the reference counts and counters equal what
// the manifests imply; every narinfo names a committed NAR.
func checkConsistent(t testing.TB, s *appliance.Store) {
	t.Helper()
	ctx := context.Background()
	var manifests []*kv.Manifest
	require.NoError(t, s.Index().ForEachManifest(func(m *kv.Manifest) error {
		manifests = append(manifests, m)
		return nil
	}))
	refs := map[cdc.ID]uint64{}
	var logical uint64
	for _, m := range manifests {
		logical += m.NarSize
		seen := map[cdc.ID]bool{}
		for _, c := range m.Chunks {
			if !seen[c.ID] {
				seen[c.ID] = true
				refs[c.ID]++
			}
			frame, err := s.Frame(ctx, c.ID, nil)
			require.NoError(t, err, "dangling reference: manifest %s names missing chunk %s", appliance.FormatHash(m.NarHash), c.ID)
			require.Equal(t, int(c.Comp), len(frame), "chunk %s: stored frame and its recorded size differ", c.ID)
		}
		require.NoError(t, s.Verify(ctx, m.NarHash))
		nar, err := s.OpenNAR(ctx, m.NarHash)
		require.NoError(t, err)
		n, err := nar.WriteFrames(ctx, io.Discard, 0, len(nar.Chunks())-1)
		require.NoError(t, err)
		require.Equal(t, nar.CompressedSize(), n)
	}
	// A delta's reserved base counts as a reference of the base; a base
	// is never a delta itself.
	stored := map[cdc.ID]uint64{}
	var bases []cdc.ID
	levels := map[cdc.ID]uint8{}
	require.NoError(t, s.Index().ForEachRef(func(r kv.RefInfo) error {
		if r.Count > 0 { // a dormant entry waits for its frame's deletion
			stored[r.ID] = r.Count
		}
		levels[r.ID] = r.Level
		if r.HasBase {
			bases = append(bases, r.Base)
		}
		return nil
	}))
	for _, b := range bases {
		refs[b]++
		require.NotEqualValues(t, cdc.DeltaLevel, levels[b], "base %s is a delta", b)
		_, err := s.Chunks().Frame(ctx, b, nil)
		require.NoError(t, err, "base %s is missing", b)
	}
	require.Equal(t, refs, stored, "reference counts")
	st, err := s.Stats()
	require.NoError(t, err)
	require.EqualValues(t, len(manifests), st.NARs)
	require.Equal(t, logical, st.LogicalBytes)
	require.EqualValues(t, len(refs), st.Chunks)
}

// checkReadable proves what must hold the moment a store reopens after a
// crash, before any recovery runs: every manifest's chunks exist and verify,
// and every NAR copies out as a .nar.zst. (A frame recompressed but not yet
// recorded is served in its promised stored form until the recompressor,
// whose queue entry survives, records it.)
func checkReadable(t testing.TB, s *appliance.Store) {
	t.Helper()
	ctx := context.Background()
	var hashes [][32]byte
	require.NoError(t, s.Index().ForEachManifest(func(m *kv.Manifest) error {
		hashes = append(hashes, m.NarHash)
		return nil
	}))
	for _, h := range hashes {
		require.NoError(t, s.Verify(ctx, h))
		nar, err := s.OpenNAR(ctx, h)
		require.NoError(t, err)
		n, err := nar.WriteFrames(ctx, io.Discard, 0, len(nar.Chunks())-1)
		require.NoError(t, err)
		require.Equal(t, nar.CompressedSize(), n)
	}
}

func readAll(t testing.TB, s *appliance.Store, h [32]byte) []byte {
	t.Helper()
	n, err := s.OpenNAR(context.Background(), h)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, n.WriteRange(context.Background(), &buf, 0, n.Size()))
	return buf.Bytes()
}

func TestIngestRoundTrip(t *testing.T) {
	nars := nixtest.SampleNARs(t)
	for _, tc := range []struct {
		comp appliance.Compression
		xz   string
	}{
		{appliance.CompressionNone, ""},
		{appliance.CompressionXZ, ""},   // the default: liblzma in-process
		{appliance.CompressionXZ, "xz"}, // the xz binary
		{appliance.CompressionXZ, "-"},  // pure Go
		{appliance.CompressionZstd, ""},
		{appliance.CompressionBzip2, ""},
	} {
		t.Run(fmt.Sprintf("%s%s", tc.comp, tc.xz), func(t *testing.T) {
			s := openStore(t, t.TempDir(), func(c *appliance.Config) { c.XZ = tc.xz })
			defer s.Close()
			for i, n := range nars {
				if tc.comp != appliance.CompressionNone && i == 2 {
					continue // the 3 MB binary only uncompressed: pure-Go xz under -race is slow
				}
				body := nixtest.Compress(t, string(tc.comp), n.Bytes)
				res, err := s.Ingest(context.Background(), appliance.Want{Info: info(n)}, bytes.NewReader(body), tc.comp)
				require.NoError(t, err, n.Name)
				require.Equal(t, n.Hash, res.NarHash)
				require.EqualValues(t, len(n.Bytes), res.NarSize)

				nar, err := s.OpenNAR(context.Background(), n.Hash)
				require.NoError(t, err)
				require.EqualValues(t, len(n.Bytes), nar.Size())
				rng := rand.New(rand.NewPCG(7, uint64(len(n.Bytes))))
				for range 50 {
					off := rng.Int64N(int64(len(n.Bytes)))
					p := make([]byte, rng.Int64N(int64(len(n.Bytes))-off)+1)
					_, err := nar.ReadAt(p, off)
					require.NoError(t, err)
					require.Equal(t, n.Bytes[off:off+int64(len(p))], p)
				}
				require.Equal(t, n.Bytes, readAll(t, s, n.Hash))

				zst := zstOf(t, nar)
				require.EqualValues(t, res.FileSize, len(zst))
				require.EqualValues(t, nar.CompressedSize(), len(zst))
				require.Equal(t, n.Bytes, nixtestDecodeZstd(t, zst))
			}
			checkConsistent(t, s)
		})
	}
}

func nixtestDecodeZstd(t testing.TB, b []byte) []byte {
	t.Helper()
	codec := must(cdc.NewCodec(appliance.DefaultLevel, 0))
	defer codec.Close()
	out, err := codec.Decompress(nil, b, -1)
	require.NoError(t, err)
	return out
}

// zstOf returns a stored NAR's whole .nar.zst stream.
func zstOf(t testing.TB, n *appliance.NAR) []byte {
	t.Helper()
	var b bytes.Buffer
	_, err := n.WriteFrames(context.Background(), &b, 0, len(n.Chunks())-1)
	require.NoError(t, err)
	return b.Bytes()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestRecompressKeepsPromisesAndSavesSpace(t *testing.T) {
	nars := nixtest.SampleNARs(t)
	s := openStore(t, t.TempDir(), func(c *appliance.Config) { c.RecompressDelay = time.Hour })
	defer s.Close()
	ctx := context.Background()
	for _, n := range nars {
		_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), "none")
		require.NoError(t, err)
	}
	n := nars[1]
	before, err := s.OpenNAR(ctx, n.Hash)
	require.NoError(t, err)
	for _, c := range before.Chunks() {
		require.EqualValues(t, cdc.StoredLevel, c.Level, "ingest writes stored-block frames")
	}
	promised := zstOf(t, before)
	st0, err := s.Stats()
	require.NoError(t, err)

	// Not due yet: nothing changes.
	res, err := s.RecompressDue(ctx, time.Now())
	require.NoError(t, err)
	require.Zero(t, res.Chunks)

	res, err = s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Positive(t, res.Chunks)
	st1, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, st0.PhysicalBytes-res.BytesSaved, st1.PhysicalBytes)
	require.Less(t, st1.PhysicalBytes, st0.PhysicalBytes*2/3)

	// A response that promised stored-block frames still gets those bytes.
	again := zstOf(t, before)
	require.Equal(t, promised, again)
	// A new open serves the smaller frames, still one valid zstd stream.
	after, err := s.OpenNAR(ctx, n.Hash)
	require.NoError(t, err)
	require.Less(t, after.CompressedSize(), before.CompressedSize())
	packed := zstOf(t, after)
	require.Equal(t, n.Bytes, nixtestDecodeZstd(t, packed))
	for _, n := range nars {
		require.Equal(t, n.Bytes, readAll(t, s, n.Hash))
	}
	checkConsistent(t, s)

	// A second run finds nothing left to do.
	res, err = s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Zero(t, res.NARs)
}

func TestRecompressAfterCrashBeforeRecording(t *testing.T) {
	n := nixtest.SampleNARs(t)[1]
	s := openStore(t, t.TempDir(), func(c *appliance.Config) { c.RecompressDelay = time.Hour })
	defer s.Close()
	ctx := context.Background()
	_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), "none")
	require.NoError(t, err)
	// A run wrote its new frames and died before recording them.
	nar, err := s.OpenNAR(ctx, n.Hash)
	require.NoError(t, err)
	b := s.Chunks().NewBatch()
	for _, c := range nar.Chunks()[:3] {
		raw := make([]byte, c.Raw)
		_, err := nar.ReadAt(raw, 0)
		require.NoError(t, err)
		frame, err := s.Chunks().Frame(ctx, c.ID, nil)
		require.NoError(t, err)
		plain, err := s.Codec().Decompress(nil, frame, int(c.Raw))
		require.NoError(t, err)
		require.NoError(t, b.Put(c.ID, s.Codec().Compress(nil, plain)))
	}
	require.NoError(t, b.Flush())
	res, err := s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, res.NARs)
	checkConsistent(t, s)
}

func TestRecompressWaitsForIngestsThatMayWriteItsChunks(t *testing.T) {
	n := nixtest.SampleNARs(t)[2]
	s := openStore(t, t.TempDir(), func(c *appliance.Config) { c.RecompressDelay = time.Hour })
	defer s.Close()
	ctx := context.Background()

	// An upload (not coalesced: its hash is unknown) finds its chunks new,
	// then stalls half way with their stored frames not yet flushed.
	gate, reached := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	half := len(n.Bytes) / 2
	go func() {
		stall := readerFunc(func([]byte) (int, error) { close(reached); <-gate; return 0, io.EOF })
		body := io.MultiReader(bytes.NewReader(n.Bytes[:half]), stall, bytes.NewReader(n.Bytes[half:]))
		_, err := s.Ingest(ctx, appliance.Want{}, body, "none")
		done <- err
	}()
	<-reached
	time.Sleep(200 * time.Millisecond) // the workers look up what the first half cut
	// Meanwhile the same NAR commits through another ingest and is queued.
	_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), "none")
	require.NoError(t, err)

	res, err := s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Zero(t, res.NARs, "the NAR waits while an ingest may still write its chunks")
	close(gate)
	require.NoError(t, <-done)
	res, err = s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, res.NARs, "recompressed once the ingest let go")
	checkConsistent(t, s)
}

func TestCoalescedIngestChecksItsOwnNarSize(t *testing.T) {
	n := nixtest.SampleNARs(t)[1]
	s := openStore(t, t.TempDir())
	defer s.Close()
	gate := make(chan struct{})
	leader := make(chan error)
	go func() {
		_, err := s.Ingest(context.Background(), appliance.Want{Info: info(n)},
			io.MultiReader(gateReader(gate), bytes.NewReader(n.Bytes)), "none")
		leader <- err
	}()
	wrong := info(n)
	wrong.StorePath = "/nix/store/22222222222222222222222222222222-wrong"
	wrong.NarSize++
	follower := make(chan error)
	go func() {
		_, err := s.Ingest(context.Background(), appliance.Want{Info: wrong}, bytes.NewReader(n.Bytes), "none")
		follower <- err
	}()
	time.Sleep(50 * time.Millisecond)
	close(gate)
	require.NoError(t, <-leader)
	require.ErrorIs(t, <-follower, appliance.ErrSizeMismatch)
	_, err := s.Index().NarInfo("22222222222222222222222222222222")
	require.ErrorIs(t, err, kv.ErrNotFound)
}

func TestIngestRejectsAndLeavesNothing(t *testing.T) {
	nars := nixtest.SampleNARs(t)
	good, other := nars[1], nars[2]
	flipped := slices.Clone(good.Bytes)
	flipped[len(flipped)/2] ^= 1
	longer := append(slices.Clone(good.Bytes), make([]byte, 8)...)
	for _, tc := range []struct {
		name string
		want appliance.Want
		body []byte
		comp string
		wire bool // body is already in comp
		err  error
	}{
		{"flipped byte", appliance.Want{Info: info(good)}, flipped, "none", false, appliance.ErrHashMismatch},
		{"truncated by one byte", appliance.Want{Info: info(good)}, good.Bytes[:len(good.Bytes)-1], "none", false, appliance.ErrSizeMismatch},
		{"longer than NarSize", appliance.Want{Info: info(good)}, longer, "none", false, appliance.ErrSizeMismatch},
		{"wrong NarHash", appliance.Want{NarHash: other.Hash, NarSize: uint64(len(good.Bytes))}, good.Bytes, "xz", false, appliance.ErrHashMismatch},
		{"garbage body", appliance.Want{}, bytes.Repeat([]byte("garbage!"), 40000), "none", false, appliance.ErrBadNAR},
		{"garbage xz", appliance.Want{Info: info(good)}, bytes.Repeat([]byte{0xfd, '7', 'z'}, 1000), "xz", true, appliance.ErrBadBody},
		{"truncated zstd", appliance.Want{Info: info(good)}, nixtest.Compress(t, "zstd", good.Bytes)[:5000], "zstd", true, appliance.ErrBadBody},
		{"upload of a NAR cut short", appliance.Want{}, good.Bytes[:len(good.Bytes)/2], "none", false, appliance.ErrBadNAR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			// Something already stored, which must survive untouched.
			_, err := s.Ingest(context.Background(), appliance.Want{Info: info(nars[0])}, bytes.NewReader(nars[0].Bytes), "none")
			require.NoError(t, err)
			before := snap(t, s)

			body := tc.body
			if !tc.wire {
				body = nixtest.Compress(t, tc.comp, tc.body)
			}
			_, err = s.Ingest(context.Background(), tc.want, bytes.NewReader(body), appliance.Compression(tc.comp))
			require.ErrorIs(t, err, tc.err)
			require.Equal(t, before, snap(t, s))
			_, err = s.Index().NarInfo(nixtest.HashPart(t, info(good).StorePath))
			require.ErrorIs(t, err, kv.ErrNotFound)
			checkConsistent(t, s)
		})
	}
}

func TestIdenticalContentStoredOnce(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	src := filepath.Join(nixtest.GoRoot(t), "src", "net", "http")
	require.NoError(t, os.CopyFS(tree, os.DirFS(src)))
	a := nixtest.MakeNAR(t, "a", tree)
	require.NoError(t, os.WriteFile(filepath.Join(tree, "zz-extra.txt"), []byte("one more file\n"), 0o644))
	b := nixtest.MakeNAR(t, "b", tree)

	s := openStore(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	ra, err := s.Ingest(ctx, appliance.Want{Info: info(a)}, bytes.NewReader(a.Bytes), "none")
	require.NoError(t, err)
	st1, err := s.Stats()
	require.NoError(t, err)

	// The same NAR under a second store path: nothing new is stored.
	alias := info(a)
	alias.StorePath = "/nix/store/" + nixtest.HashPart(t, "/nix/store/11111111111111111111111111111111-x") + "-alias"
	res, err := s.Ingest(ctx, appliance.Want{Info: alias}, bytes.NewReader(a.Bytes), "none")
	require.NoError(t, err)
	require.True(t, res.Existed)
	st2, err := s.Stats()
	require.NoError(t, err)
	require.Equal(t, st1.PhysicalBytes, st2.PhysicalBytes)
	require.Equal(t, st1.Chunks, st2.Chunks)
	require.EqualValues(t, 2, st2.NarInfos)

	// A NAR that shares all but its tail writes only a few chunks.
	rb, err := s.Ingest(ctx, appliance.Want{Info: info(b)}, bytes.NewReader(b.Bytes), "none")
	require.NoError(t, err)
	require.Less(t, rb.NewChunks, rb.Chunks/4, "a one-file change should rewrite few chunks")
	st3, err := s.Stats()
	require.NoError(t, err)
	require.Less(t, st3.PhysicalBytes-st2.PhysicalBytes, rb.FileSize/4)
	require.Greater(t, st3.DedupRatio, st1.DedupRatio*1.5)
	require.Equal(t, ra.Chunks, len(must(s.OpenNAR(ctx, a.Hash)).Chunks()))
	checkConsistent(t, s)
}

// countingReader counts how many bodies were actually read.
type countingReader struct {
	r     io.Reader
	reads *atomic.Int64
	once  sync.Once
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.once.Do(func() { c.reads.Add(1) })
	return c.r.Read(p)
}

func TestConcurrentIngests(t *testing.T) {
	nars := nixtest.SampleNARs(t)
	s := openStore(t, t.TempDir())
	defer s.Close()
	reads := make([]atomic.Int64, len(nars))
	var wg sync.WaitGroup
	const perNAR = 6
	errs := make(chan error, perNAR*len(nars))
	for i, n := range nars {
		for range perNAR {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// xz makes each body slow enough that the ingests overlap.
				body := &countingReader{r: bytes.NewReader(nixtest.Compress(t, "xz", n.Bytes)), reads: &reads[i]}
				_, err := s.Ingest(context.Background(), appliance.Want{Info: info(n)}, body, "xz")
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for i, n := range nars {
		require.Equal(t, n.Bytes, readAll(t, s, n.Hash), n.Name)
		require.LessOrEqual(t, reads[i].Load(), int64(perNAR), n.Name)
	}
	checkConsistent(t, s)
	st, err := s.Stats()
	require.NoError(t, err)
	require.EqualValues(t, len(nars), st.NARs)
}

func TestCoalescedIngestReadsOneBody(t *testing.T) {
	n := nixtest.SampleNARs(t)[2]
	s := openStore(t, t.TempDir())
	defer s.Close()
	gate := make(chan struct{})
	var reads atomic.Int64
	var wg sync.WaitGroup
	results := make([]*appliance.Result, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := &countingReader{r: io.MultiReader(gateReader(gate), bytes.NewReader(n.Bytes)), reads: &reads}
			res, err := s.Ingest(context.Background(), appliance.Want{Info: info(n)}, body, "none")
			require.NoError(t, err)
			results[i] = res
		}()
	}
	close(gate)
	wg.Wait()
	require.EqualValues(t, 1, reads.Load(), "one body read for one NarHash")
	leaders := 0
	for _, r := range results {
		if !r.Coalesced && !r.Existed {
			leaders++
		}
	}
	require.Equal(t, 1, leaders)
}

func TestRunningCountsIngests(t *testing.T) {
	nars := nixtest.SampleNARs(t)[:3]
	var mu sync.Mutex
	var seen []int
	s := openStore(t, t.TempDir(), func(c *appliance.Config) {
		c.Running = func(n int) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, n)
		}
	})
	defer s.Close()
	gate := make(chan struct{})
	var wg sync.WaitGroup
	ingest := func(want appliance.Want, n nixtest.NAR) {
		wg.Go(func() {
			body := io.MultiReader(gateReader(gate), bytes.NewReader(n.Bytes))
			_, err := s.Ingest(context.Background(), want, body, "none")
			require.NoError(t, err)
		})
	}
	// Two ingests of each of two NARs (the second of each coalesces and is
	// no new ingest), and an upload, which has no NarHash to coalesce on.
	for _, n := range append(nars[:2], nars[:2]...) {
		ingest(appliance.Want{Info: info(n)}, n)
	}
	ingest(appliance.Want{}, nars[2])
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(seen, 3)
	}, 10*time.Second, time.Millisecond, "three ingests running")
	close(gate)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []int{1, 2, 3, 2, 1, 0}, seen)
}

// gateReader blocks its first read until gate closes, then reads as empty.
func gateReader(gate chan struct{}) io.Reader {
	return readerFunc(func([]byte) (int, error) { <-gate; return 0, io.EOF })
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestListingMatchesNix(t *testing.T) {
	dir := t.TempDir()
	trees := map[string]string{
		"sample": nixtest.SampleTree(t, dir),
		"http":   filepath.Join(nixtest.GoRoot(t), "src", "net", "http"),
		"gofmt":  filepath.Join(nixtest.GoRoot(t), "bin", "gofmt"),
	}
	s := openStore(t, t.TempDir())
	defer s.Close()
	for name, tree := range trees {
		t.Run(name, func(t *testing.T) {
			pub := nixtest.Publish(t, filepath.Join(dir, name), tree, "xz")
			res, err := s.Ingest(context.Background(), appliance.Want{}, bytes.NewReader(pub.Body), "xz")
			require.NoError(t, err)
			require.Equal(t, pub.NarHash, appliance.FormatHash(res.NarHash))
			nar, err := s.OpenNAR(context.Background(), res.NarHash)
			require.NoError(t, err)
			got, err := nar.Listing()
			require.NoError(t, err)
			require.Equal(t, string(pub.Listing), string(got))
		})
	}
}

func TestDeleteKeepsSharedChunks(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	require.NoError(t, os.CopyFS(tree, os.DirFS(filepath.Join(nixtest.GoRoot(t), "src", "net", "http"))))
	a := nixtest.MakeNAR(t, "a", tree)
	require.NoError(t, os.WriteFile(filepath.Join(tree, "zz-extra.txt"), bytes.Repeat([]byte("x"), 300<<10), 0o644))
	b := nixtest.MakeNAR(t, "b", tree)

	s := openStore(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	for _, n := range []nixtest.NAR{a, b} {
		_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), "none")
		require.NoError(t, err)
	}
	before := snap(t, s)
	deleted, err := s.DeleteNAR(ctx, b.Hash)
	require.NoError(t, err)
	require.Positive(t, deleted)
	after := snap(t, s)
	require.Len(t, after.Chunks, len(before.Chunks)-deleted)
	require.NoError(t, s.Verify(ctx, a.Hash), "the live NAR keeps its shared chunks")
	_, err = s.OpenNAR(ctx, b.Hash)
	require.ErrorIs(t, err, appliance.ErrNotFound)
	checkConsistent(t, s)
}

func TestOpenRefusesOtherFormatAndLock(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)

	_, err := appliance.Open(context.Background(), appliance.Config{Dir: dir})
	require.ErrorIs(t, err, kv.ErrLocked, "a second opener of a live data directory")
	require.NoError(t, s.Close())

	other := cdc.Params{Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10, Normalization: 2}
	_, err = appliance.Open(context.Background(), appliance.Config{Dir: dir, Chunker: other})
	require.ErrorIs(t, err, kv.ErrFormat)
	require.Contains(t, err.Error(), "chunker parameters are permanent")

	s = openStore(t, dir)
	require.NoError(t, s.Close())
}

func TestVerifyFindsCorruptChunk(t *testing.T) {
	n := nixtest.SampleNARs(t)[1]
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), "none")
	require.NoError(t, err)
	nar, err := s.OpenNAR(ctx, n.Hash)
	require.NoError(t, err)
	victim := nar.Chunks()[len(nar.Chunks())/2]
	frame, err := s.Chunks().Frame(ctx, victim.ID, nil)
	require.NoError(t, err)
	frame[len(frame)/2] ^= 0x40
	b := s.Chunks().NewBatch()
	require.NoError(t, b.Put(victim.ID, frame))
	require.NoError(t, b.Flush())

	err = s.Verify(ctx, n.Hash)
	require.ErrorIs(t, err, cdc.ErrCorrupt)
	require.Contains(t, err.Error(), victim.ID.String())
	_, err = io.Copy(io.Discard, io.NewSectionReader(nar, 0, nar.Size()))
	require.ErrorIs(t, err, cdc.ErrCorrupt, "a read of a corrupt chunk fails, never returns wrong bytes")
	require.NoError(t, s.Close())
}

func TestAccessTimesAreBatched(t *testing.T) {
	s := openStore(t, t.TempDir(), func(c *appliance.Config) { c.FlushEvery = time.Hour })
	defer s.Close()
	n := nixtest.SampleNARs(t)[0]
	_, err := s.Ingest(context.Background(), appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), "none")
	require.NoError(t, err)
	h := nixtest.HashPart(t, info(n).StorePath)
	s.Touch(h)
	at, err := s.Index().Atime(h)
	require.NoError(t, err)
	require.Zero(t, at, "a hit is not written at once")
	require.NoError(t, s.FlushAtimes())
	at, err = s.Index().Atime(h)
	require.NoError(t, err)
	require.InDelta(t, time.Now().UnixMilli(), at, 5000)
}

// stallingBody yields its bytes, then blocks until its context ends, like
// an upstream that stops sending part-way.
type stallingBody struct {
	ctx     context.Context
	unstall <-chan struct{} // closed when the test ends, so a failing test does not hang
	rest    []byte
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if len(b.rest) > 0 {
		n := copy(p, b.rest)
		b.rest = b.rest[n:]
		return n, nil
	}
	select {
	case <-b.ctx.Done():
		return 0, context.Cause(b.ctx)
	case <-b.unstall:
		return 0, io.ErrUnexpectedEOF
	}
}

func (b *stallingBody) Close() error { return nil }

// A body that turns out not to be a NAR fails the ingest at once, even
// when the rest of it is slow to come: the body's context is cancelled.
func TestBadNARFailsWithoutWaitingForTheBody(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	unstall := make(chan struct{})
	defer close(unstall)
	want := appliance.Want{NarHash: sha256.Sum256([]byte("never")), NarSize: 1 << 30}
	garbage := bytes.Repeat([]byte("not a NAR "), 40<<10)
	live, started, err := s.Start(context.Background(), want, func(ctx context.Context) (io.ReadCloser, appliance.Compression, error) {
		return &stallingBody{ctx: ctx, unstall: unstall, rest: garbage}, appliance.CompressionNone, nil
	})
	require.NoError(t, err)
	require.True(t, started)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = live.Wait(ctx)
	require.ErrorIs(t, err, appliance.ErrBadNAR, "the ingest ends on the bad NAR, not on the 5 s timeout")
}

// A follower writing a running ingest's stream with WriteTo gets the same
// bytes as one reading it, in both forms, and the same failure when the
// ingest is refused at the end.
func TestLiveWriteToMatchesRead(t *testing.T) {
	n := nixtest.SampleNARs(t)[2] // the 3 MB binary: many chunks
	for _, tc := range []struct {
		name string
		hash [32]byte
		fail bool
	}{
		{"committed", n.Hash, false},
		{"wrong NarHash", sha256.Sum256([]byte("other")), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			pr, pw := io.Pipe()
			want := appliance.Want{NarHash: tc.hash, NarSize: uint64(len(n.Bytes))}
			live, started, err := s.Start(context.Background(), want, func(context.Context) (io.ReadCloser, appliance.Compression, error) {
				return pr, appliance.CompressionNone, nil
			})
			require.NoError(t, err)
			require.True(t, started)
			ctx := context.Background()
			readers := []struct {
				name string
				r    io.Reader
				copy func(io.Writer, io.Reader) (int64, error)
			}{
				{"frames, Read", live.Frames(ctx), readOnly},
				{"frames, WriteTo", live.Frames(ctx), writeTo},
				{"plain, Read", live.Plain(ctx), readOnly},
				{"plain, WriteTo", live.Plain(ctx), writeTo},
			}
			got := make([]bytes.Buffer, len(readers))
			errs := make([]error, len(readers))
			var wg sync.WaitGroup
			for i, rd := range readers {
				wg.Add(1)
				go func() { defer wg.Done(); _, errs[i] = rd.copy(&got[i], rd.r) }()
			}
			for b := n.Bytes; len(b) > 0; b = b[min(len(b), 100<<10):] {
				_, err := pw.Write(b[:min(len(b), 100<<10)]) // arrives in pieces while the followers wait
				require.NoError(t, err)
			}
			require.NoError(t, pw.Close())
			wg.Wait()
			if tc.fail {
				for i, rd := range readers {
					require.ErrorIs(t, errs[i], appliance.ErrIngestFailed, rd.name)
				}
				return
			}
			nar, err := s.OpenNAR(ctx, n.Hash)
			require.NoError(t, err)
			zst := zstOf(t, nar)
			for i, rd := range readers {
				require.NoError(t, errs[i], rd.name)
				if i < 2 {
					require.Equal(t, zst, got[i].Bytes(), rd.name)
				} else {
					require.Equal(t, n.Bytes, got[i].Bytes(), rd.name)
				}
			}
		})
	}
}

// Frame buffers go back to a pool once nobody holds them. A follower that
// stops part-way through a frame, while its ingest ends and another one
// takes buffers from the pool, must still get that frame's bytes right.
func TestLiveFollowerKeepsItsFrameWhileBuffersAreReused(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	first, second := randomNAR(t, "reuse-first", 1<<20, nil), randomNAR(t, "reuse-second", 6<<20, nil)
	pr, pw := io.Pipe()
	live, started, err := s.Start(ctx, appliance.Want{NarHash: first.Hash, NarSize: uint64(len(first.Bytes))},
		func(context.Context) (io.ReadCloser, appliance.Compression, error) {
			return pr, appliance.CompressionNone, nil
		})
	require.NoError(t, err)
	require.True(t, started)
	follower := live.Frames(ctx)
	go func() {
		_, err := pw.Write(first.Bytes)
		pw.CloseWithError(err)
	}()
	head := make([]byte, 100) // the first frame's start; the follower keeps the rest
	_, err = io.ReadFull(follower, head)
	require.NoError(t, err)
	require.NoError(t, live.Wait(ctx))
	// The first ingest let go of every frame; the second takes buffers.
	_, err = s.Ingest(ctx, appliance.Want{NarHash: second.Hash, NarSize: uint64(len(second.Bytes))},
		bytes.NewReader(second.Bytes), appliance.CompressionNone)
	require.NoError(t, err)
	rest, err := io.ReadAll(follower)
	require.NoError(t, err)

	nar, err := s.OpenNAR(ctx, first.Hash)
	require.NoError(t, err)
	zst := zstOf(t, nar)
	require.True(t, bytes.Equal(zst, append(head, rest...)), "the follower's .nar.zst differs from the stored one")
}

// readOnly copies r to w through Read alone, hiding any WriteTo.
func readOnly(w io.Writer, r io.Reader) (int64, error) {
	return io.CopyBuffer(w, struct{ io.Reader }{r}, make([]byte, 1000))
}

func writeTo(w io.Writer, r io.Reader) (int64, error) {
	wt, ok := r.(io.WriterTo)
	if !ok {
		return 0, fmt.Errorf("%T has no WriteTo", r)
	}
	return wt.WriteTo(w)
}

// hookCtx runs hook once, on the first of its Err calls at which cond
// holds: a way to act at a chosen point of a loop that polls its context.
type hookCtx struct {
	context.Context
	once sync.Once
	cond func() bool
	hook func()
}

func (c *hookCtx) Err() error {
	if c.cond() {
		c.once.Do(c.hook)
	}
	return c.Context.Err()
}

// recompressFixture is a store holding n, not recompressed yet, whose
// recompressions run at level and record their frames every segment bytes.
func recompressFixture(t *testing.T, n nixtest.NAR, level zstd.EncoderLevel, segment int) (*appliance.Store, *appliance.NAR) {
	t.Helper()
	s := openStore(t, t.TempDir(), func(c *appliance.Config) {
		c.RecompressDelay = time.Hour
		c.Level = level
	})
	t.Cleanup(func() { s.Close() })
	s.SetRecompressSegment(segment)
	ctx := context.Background()
	_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), appliance.CompressionNone)
	require.NoError(t, err)
	nar, err := s.OpenNAR(ctx, n.Hash)
	require.NoError(t, err)
	return s, nar
}

// A NAR deleted while the recompressor works on it stops the run at the
// next recorded part: the rest of its chunks are not compressed for
// nothing, and the queue entry goes.
func TestRecompressStopsWhenItsNARIsDeleted(t *testing.T) {
	n := nixtest.SampleNARs(t)[2] // a binary of a few MB
	s, nar := recompressFixture(t, n, zstd.SpeedFastest, 64<<10)
	bg := context.Background()
	chunks := len(nar.Chunks())
	before, err := s.Stats()
	require.NoError(t, err)

	ctx := &hookCtx{Context: bg,
		cond: func() bool { // a part is recorded
			st, err := s.Stats()
			return err == nil && st.PhysicalBytes < before.PhysicalBytes
		},
		hook: func() {
			_, err := s.DeleteNAR(bg, n.Hash)
			require.NoError(t, err)
		},
	}
	st, err := s.RecompressDue(ctx, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Less(t, st.Chunks, chunks/2, "the run stopped soon after the delete")
	ok, err := s.Index().HasManifest(n.Hash)
	require.NoError(t, err)
	require.False(t, ok)
	due, err := s.Index().DueRecompress(time.Now().Add(time.Hour), nil, 16)
	require.NoError(t, err)
	require.Empty(t, due)
	checkConsistent(t, s)
}

// A NAR deleted while the recompressor works on it, and ingested again
// before the recompressor records its frames, gets stored-block frames
// written over frames the recompressor already wrote. The recompressor
// must then not record its sizes over the new manifest's: the index would
// promise frames the chunk store no longer holds, and every .nar.zst of
// the NAR would be cut short.
func TestRecompressYieldsToAnIngestThatOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tree")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	b := make([]byte, 11<<20) // the recompressor writes through every 8 MiB of frames
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rng.Uint32() & 127) // compresses to about 7/8
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), b, 0o644))
	n := nixtest.MakeNAR(t, "half", dir)

	// Better is quicker than the best, and compresses this data as well.
	// One part for the whole NAR, so that the write-through lands before
	// anything is recorded.
	s, nar := recompressFixture(t, n, zstd.SpeedBetterCompression, 1<<30)
	bg := context.Background()
	first := nar.Chunks()[0]
	require.EqualValues(t, cdc.StoredLevel, first.Level)

	fired := false
	ctx := &hookCtx{Context: bg,
		cond: func() bool { // the recompressor's first write-through has landed
			f, err := s.Chunks().Frame(bg, first.ID, nil)
			return err == nil && len(f) != int(first.Comp)
		},
		hook: func() {
			fired = true
			_, err := s.DeleteNAR(bg, n.Hash)
			require.NoError(t, err)
			_, err = s.Ingest(bg, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), appliance.CompressionNone)
			require.NoError(t, err)
		}}
	_, err := s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.True(t, fired, "the interleaving was reached")
	checkConsistent(t, s)

	// The next pass recompresses the new NAR's frames as usual.
	_, err = s.RecompressDue(bg, time.Now().Add(4*time.Hour))
	require.NoError(t, err)
	checkConsistent(t, s)
	again, err := s.OpenNAR(bg, n.Hash)
	require.NoError(t, err)
	require.NotEqualValues(t, cdc.StoredLevel, again.Chunks()[0].Level)
}

// SweepOrphans deletes every chunk no manifest references, across more
// than one of its batches, and nothing a manifest does.
func TestSweepOrphansKeepsReferencedChunks(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	n := nixtest.SampleNARs(t)[1]
	_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), appliance.CompressionNone)
	require.NoError(t, err)
	const orphans = 8192 + 100
	b := s.Chunks().NewBatch()
	for i := range orphans {
		require.NoError(t, b.Put(cdc.ID{0xff, byte(i), byte(i >> 8)}, cdc.Store(nil, []byte{byte(i)})))
	}
	require.NoError(t, b.Flush())
	deleted, err := s.SweepOrphans(ctx)
	require.NoError(t, err)
	require.Equal(t, orphans, deleted)
	checkConsistent(t, s)
	require.Equal(t, n.Bytes, readAll(t, s, n.Hash))
}

// The recompressor stores a later release's chunks as deltas against the
// earlier one's: far fewer bytes, the same bytes read and served, and each
// base kept exactly as long as a delta needs it.
func TestRecompressStoresDeltas(t *testing.T) {
	old, next := nixtest.ReleasePair(t)
	ctx := context.Background()
	physical := map[bool]uint64{}
	for _, noDeltas := range []bool{true, false} {
		s := openStore(t, t.TempDir(), func(c *appliance.Config) { c.RecompressDelay = time.Hour; c.NoDeltas = noDeltas })
		_, err := s.Ingest(ctx, appliance.Want{Info: info(old)}, bytes.NewReader(old.Bytes), "none")
		require.NoError(t, err)
		res, err := s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
		require.NoError(t, err)
		require.Zero(t, res.Deltas, "nothing to compress against yet")
		_, err = s.Ingest(ctx, appliance.Want{Info: info(next)}, bytes.NewReader(next.Bytes), "none")
		require.NoError(t, err)
		before, err := s.OpenNAR(ctx, next.Hash)
		require.NoError(t, err)
		promised := zstOf(t, before)

		res, err = s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
		require.NoError(t, err)
		if noDeltas {
			require.Zero(t, res.Deltas)
		} else {
			require.Greater(t, res.Deltas, res.Chunks/2, "most chunks of the new release are deltas")
		}
		st, err := s.Stats()
		require.NoError(t, err)
		physical[noDeltas] = st.PhysicalBytes

		// A response that promised stored-block frames still gets them, and
		// a new one is one valid zstd stream of the NAR.
		again := zstOf(t, before)
		require.Equal(t, promised, again)
		after, err := s.OpenNAR(ctx, next.Hash)
		require.NoError(t, err)
		packed := zstOf(t, after)
		require.Equal(t, next.Bytes, nixtestDecodeZstd(t, packed))
		// A copy that need not match the served bytes packs the deltas.
		var repacked bytes.Buffer
		k, err := after.WritePacked(ctx, &repacked)
		require.NoError(t, err)
		require.EqualValues(t, repacked.Len(), k)
		require.Equal(t, next.Bytes, nixtestDecodeZstd(t, repacked.Bytes()))
		if noDeltas {
			require.Equal(t, packed, repacked.Bytes())
		} else {
			require.Less(t, repacked.Len(), len(packed)*2/3)
		}
		for _, n := range []nixtest.NAR{old, next} {
			require.Equal(t, n.Bytes, readAll(t, s, n.Hash))
		}
		checkConsistent(t, s)
		if noDeltas {
			require.NoError(t, s.Close())
			continue
		}

		// The old release goes; the bases its chunks are stay for the deltas.
		_, err = s.DeleteNAR(ctx, old.Hash)
		require.NoError(t, err)
		require.Equal(t, next.Bytes, readAll(t, s, next.Hash))
		checkConsistent(t, s)
		// The new one goes, and with it every base.
		_, err = s.DeleteNAR(ctx, next.Hash)
		require.NoError(t, err)
		st, err = s.Stats()
		require.NoError(t, err)
		require.Zero(t, st.Chunks)
		require.Zero(t, st.PhysicalBytes)
		left := 0
		require.NoError(t, s.Chunks().ForEach(ctx, func(cdc.ID) error { left++; return nil }))
		require.Zero(t, left, "chunks left in the chunk store")
		require.NoError(t, s.Close())
	}
	t.Logf("stored bytes of two releases: %d as deltas, %d as independent frames", physical[false], physical[true])
	require.Less(t, physical[false], physical[true]*2/3)
}

// releaseStore opens a store in dir holding both NARs of
// nixtest.ReleasePair: the old one recompressed, so that its chunks are
// candidate delta bases, and the next one as ingested.
func releaseStore(t *testing.T, dir string) (s *appliance.Store, old, next nixtest.NAR) {
	t.Helper()
	old, next = nixtest.ReleasePair(t)
	ctx := context.Background()
	s = openStore(t, dir, func(c *appliance.Config) { c.RecompressDelay = time.Hour })
	for _, n := range []nixtest.NAR{old, next} {
		_, err := s.Ingest(ctx, appliance.Want{Info: info(n)}, bytes.NewReader(n.Bytes), "none")
		require.NoError(t, err)
		if n.Name == old.Name {
			_, err = s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
			require.NoError(t, err)
		}
	}
	return s, old, next
}

// A run that died after reserving bases, with some deltas written and none
// recorded, is finished by the next: no reservation is counted twice, and
// every chunk reads back.
func TestRecompressAfterCrashWithReservedBases(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, old, next := releaseStore(t, dir)
	nar, err := s.OpenNAR(ctx, next.Hash)
	require.NoError(t, err)
	enc, err := s.Codec().NewEncoder(appliance.DefaultLevel)
	require.NoError(t, err)
	defer enc.Close()
	var pairs []kv.BaseRef
	b := s.Chunks().NewBatch()
	off := int64(0)
	for i, c := range nar.Chunks() {
		raw := make([]byte, c.Raw)
		_, err := nar.ReadAt(raw, off)
		require.NoError(t, err)
		off += int64(c.Raw)
		base, ok, err := s.Index().SimilarChunk(cdc.SketchOf(raw), nil)
		require.NoError(t, err)
		if !ok || c.Level != cdc.StoredLevel { // not shared with the old release
			continue
		}
		pairs = append(pairs, kv.BaseRef{ID: c.ID, Base: base})
		if i%2 == 0 {
			frame, err := s.Frame(ctx, base, nil)
			require.NoError(t, err)
			plain, err := s.Codec().Decompress(nil, frame, -1)
			require.NoError(t, err)
			delta, err := enc.CompressDelta(nil, raw, plain)
			require.NoError(t, err)
			require.NoError(t, b.Put(c.ID, cdc.AppendDelta(nil, base, delta)))
		}
		if len(pairs) == 4 {
			break
		}
	}
	require.Len(t, pairs, 4)
	ok, err := s.Index().ReserveBases(pairs)
	require.NoError(t, err)
	require.Equal(t, []bool{true, true, true, true}, ok)
	require.NoError(t, b.Flush())
	require.NoError(t, s.Close())

	s = openStore(t, dir, func(c *appliance.Config) { c.RecompressDelay = time.Hour })
	defer s.Close()
	require.Equal(t, next.Bytes, readAll(t, s, next.Hash), "written deltas read back before they are recorded")
	checkConsistent(t, s)
	res, err := s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, res.NARs)
	require.Positive(t, res.Deltas)
	for _, n := range []nixtest.NAR{old, next} {
		require.Equal(t, n.Bytes, readAll(t, s, n.Hash))
	}
	checkConsistent(t, s)
}

// A crash between deleting chunks' frames and forgetting their entries
// leaves the entries dormant, holding their delta bases; the orphan sweep
// finishes the job, bases included.
func TestSweepForgetsDormantChunks(t *testing.T) {
	ctx := context.Background()
	s, old, next := releaseStore(t, t.TempDir())
	defer s.Close()
	res, err := s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Positive(t, res.Deltas)
	var freed []cdc.ID
	for _, n := range []nixtest.NAR{next, old} {
		ids, err := s.Index().DeleteNAR(n.Hash)
		require.NoError(t, err)
		freed = append(freed, ids...)
	}
	require.NoError(t, s.Chunks().Delete(freed)) // and the process dies here
	dormant, err := s.Index().Dormant()
	require.NoError(t, err)
	require.NotEmpty(t, dormant)

	n, err := s.SweepOrphans(ctx)
	require.NoError(t, err)
	require.Positive(t, n)
	dormant, err = s.Index().Dormant()
	require.NoError(t, err)
	require.Empty(t, dormant)
	left := 0
	require.NoError(t, s.Chunks().ForEach(ctx, func(cdc.ID) error { left++; return nil }))
	require.Zero(t, left, "chunks left in the chunk store")
	st, err := s.Stats()
	require.NoError(t, err)
	require.Zero(t, st.Chunks)
	require.Zero(t, st.PhysicalBytes)
}

// A delta whose base is deleted before the run reserves it is stored whole
// instead, its plain frame made then if it was not made before.
func TestRecompressStoresWholeWhenTheBaseGoes(t *testing.T) {
	bg := context.Background()
	s, old, next := releaseStore(t, t.TempDir())
	defer s.Close()
	calls := 0
	ctx := &hookCtx{Context: bg,
		cond: func() bool { calls++; return calls == 4 }, // three chunks in, none reserved yet
		hook: func() {
			_, err := s.DeleteNAR(bg, old.Hash)
			require.NoError(t, err)
		}}
	res, err := s.RecompressDue(ctx, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, 4, min(calls, 4), "the hook ran")
	require.Zero(t, res.Deltas)
	require.Positive(t, res.Chunks)
	require.Equal(t, next.Bytes, readAll(t, s, next.Hash))
	checkConsistent(t, s)
}
