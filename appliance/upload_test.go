package appliance_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/cdc"
	"cairn/internal/nixtest"
)

// newService returns a cache with no upstreams over a fresh store.
func newService(t testing.TB, mod ...func(*appliance.ServiceConfig)) *appliance.Service {
	t.Helper()
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { st.Close() })
	sk, _, err := signature.GenerateKeypair("cairn-test-1", nil)
	require.NoError(t, err)
	cfg := appliance.ServiceConfig{Key: sk}
	for _, m := range mod {
		m(&cfg)
	}
	svc, err := appliance.NewService(st, cfg)
	require.NoError(t, err)
	t.Cleanup(svc.Close)
	return svc
}

// uploadSample uploads a sample NAR and returns a narinfo text for it.
func uploadSample(t testing.TB, svc *appliance.Service) (hash string, text []byte) {
	t.Helper()
	n := nixtest.SampleNARs(t)[0]
	_, err := svc.UploadNAR(context.Background(), "nar/sample.nar", bytes.NewReader(n.Bytes), "")
	require.NoError(t, err)
	ni := &narinfo.Info{StorePath: "/nix/store/" + nixbase32.EncodeToString(n.Hash[:20]) + "-sample",
		URL: "nar/sample.nar", Compression: "none", NarHash: n.Hash, NarSize: uint64(len(n.Bytes))}
	return ni.Hash(), ni.Marshal()
}

func TestPutNarInfoStoresSigned(t *testing.T) {
	svc := newService(t)
	hash, text := uploadSample(t, svc)
	require.NoError(t, svc.PutNarInfo(context.Background(), hash, bytes.NewReader(text), ""))
	require.NoError(t, svc.PutNarInfo(context.Background(), hash, bytes.NewReader(text), ""), "re-PUT of the same narinfo")
	out, err := svc.NarInfo(context.Background(), hash, false)
	require.NoError(t, err)
	got, err := narinfo.Parse(out)
	require.NoError(t, err)
	pub, err := narinfo.ParsePublicKeys([]string{svc.PublicKey()})
	require.NoError(t, err)
	_, ok := got.Verify(pub)
	require.True(t, ok, "cairn signed the uploaded narinfo:\n%s", out)

	require.NoError(t, svc.DeleteNarInfo(context.Background(), hash))
	_, err = svc.NarInfo(context.Background(), hash, false)
	require.ErrorIs(t, err, appliance.ErrNotFound)
	st, err := svc.Store().Stats()
	require.NoError(t, err)
	require.Zero(t, st.NARs, "the NAR no narinfo names went with it")
}

// A narinfo PUT over a path with another NAR leaves the old NAR unnamed;
// like an upload whose narinfo never came, it goes after the grace.
func TestReplacedNarInfoLeavesOldNARToTheSweep(t *testing.T) {
	ctx := context.Background()
	svc := newService(t)
	nars := nixtest.SampleNARs(t)
	path := "/nix/store/" + nixbase32.EncodeToString(nars[0].Hash[:20]) + "-replaced"
	put := func(n nixtest.NAR) {
		_, err := svc.UploadNAR(ctx, "nar/"+nixbase32.EncodeToString(n.Hash[:])+".nar", bytes.NewReader(n.Bytes), "")
		require.NoError(t, err)
		ni := &narinfo.Info{StorePath: path, URL: "nar/x.nar", Compression: "none", NarHash: n.Hash, NarSize: uint64(len(n.Bytes))}
		require.NoError(t, svc.PutNarInfo(ctx, ni.Hash(), bytes.NewReader(ni.Marshal()), ""))
	}
	put(nars[0])
	n, err := svc.SweepUploads(ctx, -time.Second)
	require.NoError(t, err)
	require.Zero(t, n, "the first NAR is named; its upload is forgotten")
	put(nars[1])

	n, err = svc.SweepUploads(ctx, time.Hour)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is dropped within the grace")
	n, err = svc.SweepUploads(ctx, -time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the NAR the narinfo no longer names is dropped")
	st, err := svc.Store().Stats()
	require.NoError(t, err)
	require.EqualValues(t, 1, st.NARs)
	_, err = svc.Store().OpenNAR(ctx, nars[1].Hash)
	require.NoError(t, err, "the NAR the narinfo names stays")
	_, err = svc.Store().OpenNAR(ctx, nars[0].Hash)
	require.ErrorIs(t, err, appliance.ErrNotFound)
}

func TestRealisationGetsCairnsSignature(t *testing.T) {
	svc := newService(t)
	ctx := context.Background()
	id := "sha256:" + strings.Repeat("a", 64) + "!out"
	doc := `{"dependentRealisations":{},"id":"` + id + `","outPath":"` + strings.Repeat("b", 32) + `-hello","signatures":["other-1:c2ln"]}`
	path := "realisations/" + id + ".doi"
	require.NoError(t, svc.PutRealisation(ctx, path, strings.NewReader(doc), ""))
	b, err := svc.Realisation(path)
	require.NoError(t, err)
	var got struct {
		Signatures []string `json:"signatures"`
	}
	require.NoError(t, json.Unmarshal(b, &got))
	require.Len(t, got.Signatures, 2, "the uploader's signature stays")
	// Nix signs the document without "signatures", compact, keys sorted.
	fp := `{"dependentRealisations":{},"id":"` + id + `","outPath":"` + strings.Repeat("b", 32) + `-hello"}`
	pub, err := narinfo.ParsePublicKeys([]string{svc.PublicKey()})
	require.NoError(t, err)
	name, sig, _ := strings.Cut(got.Signatures[1], ":")
	require.Equal(t, "cairn-test-1", name)
	raw, err := base64.StdEncoding.DecodeString(sig)
	require.NoError(t, err)
	require.True(t, ed25519.Verify(pub[0].Data, []byte(fp), raw))

	for _, bad := range []struct{ path, doc string }{
		{"realisations/sha256:" + strings.Repeat("c", 64) + "!out.doi", doc},
		{path, `{"id":"` + id + `","outPath":"nope"}`},
		{path, `[1,2]`},
		{path, doc + "{}"},
		{"realisations/x.doi", doc},
	} {
		err := svc.PutRealisation(ctx, bad.path, strings.NewReader(bad.doc), "")
		require.ErrorIs(t, err, appliance.ErrBadUpload, bad.doc)
	}
}

// FuzzPutNarInfo checks that no uploaded narinfo panics the upload path,
// that a refused one is ErrBadUpload and stores nothing, and that an
// accepted one is served back with the same NAR.
func FuzzPutNarInfo(f *testing.F) {
	svc := newService(f)
	hash, text := uploadSample(f, svc)
	f.Add(hash, text)
	f.Add(hash, bytes.Replace(text, []byte("NarSize: "), []byte("NarSize: 1"), 1))
	f.Add(hash, append(text, []byte("References: "+hash+"-x\n")...))
	f.Add(strings.Repeat("0", 32), text)
	f.Add(hash, []byte("StorePath: /nix/store/x\n"))
	f.Fuzz(func(t *testing.T, h string, body []byte) {
		before, err := svc.Store().Stats()
		require.NoError(t, err)
		err = svc.PutNarInfo(context.Background(), h, bytes.NewReader(body), "")
		if err != nil {
			require.ErrorIs(t, err, appliance.ErrBadUpload)
			require.NotContains(t, err.Error(), "\n")
			after, serr := svc.Store().Stats()
			require.NoError(t, serr)
			require.Equal(t, before.NARs, after.NARs)
			if before.NarInfos != after.NarInfos {
				t.Fatalf("a refused narinfo changed the narinfo count")
			}
			return
		}
		out, err := svc.NarInfo(context.Background(), h, false)
		require.NoError(t, err)
		in, err := narinfo.Parse(body)
		require.NoError(t, err)
		got, err := narinfo.Parse(out)
		require.NoError(t, err)
		require.Equal(t, in.NarHash, got.NarHash)
		require.Equal(t, in.StorePath, got.StorePath)
	})
}

func TestServedNarInfoFollowsDeletes(t *testing.T) {
	svc := newService(t)
	hash, text := uploadSample(t, svc)
	require.NoError(t, svc.PutNarInfo(context.Background(), hash, bytes.NewReader(text), ""))
	for range 2 { // the second answer comes from the render cache
		_, err := svc.NarInfo(context.Background(), hash, false)
		require.NoError(t, err)
	}
	require.NoError(t, svc.DeleteNarInfo(context.Background(), hash))
	_, err := svc.NarInfo(context.Background(), hash, false)
	require.ErrorIs(t, err, appliance.ErrNotFound, "a deleted path is never served from the cache")
}

// GC runs on its own every GCEvery: a chunk no manifest references (one a
// crash left, or one a delete skipped while an ingest relied on it) goes
// with no operator running `cairn gc`, and stays with GC off.
func TestGCRunsOnItsOwn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		every time.Duration
		swept bool
	}{
		{"every 50ms", 50 * time.Millisecond, true},
		{"off", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := newService(t, func(c *appliance.ServiceConfig) { c.GCEvery = tc.every })
			chunks := svc.Store().Chunks()
			orphan := cdc.ID{0xde, 0xad}
			b := chunks.NewBatch()
			require.NoError(t, b.Put(orphan, cdc.Store(nil, []byte("nobody's"))))
			require.NoError(t, b.Flush())
			has := func() bool {
				ok, err := chunks.Has(orphan)
				require.NoError(t, err)
				return ok
			}
			if !tc.swept {
				time.Sleep(300 * time.Millisecond)
				require.True(t, has(), "nothing runs GC")
				return
			}
			require.Eventually(t, func() bool {
				rep, err := svc.Report()
				require.NoError(t, err)
				return !has() && rep.LastGC != nil
			}, 10*time.Second, 20*time.Millisecond, "the orphan is swept, and the report shows the GC")
		})
	}
}
