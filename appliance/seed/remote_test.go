package seed_test

import (
	"context"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
	"cairn/appliance/seed"
)

func TestRemoteExportMatchesLocal(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	srv := serve(t, s)
	ctx := context.Background()

	viaHTTP := drive(t)
	rep, err := seed.Export(ctx, seed.ExportConfig{Dir: viaHTTP, Source: remote(t, srv.URL, readToken), Roots: []string{c.root}})
	require.NoError(t, err)
	require.Equal(t, 3, rep.Paths)
	local := exportLocal(t, s, drive(t), c.root)
	require.Equal(t, local.Drive.Files, rep.Drive.Files, "the same files, byte for byte, over HTTP and from the data directory")

	// All lists the paths the server stores.
	rep, err = seed.Export(ctx, seed.ExportConfig{Dir: drive(t), Source: remote(t, srv.URL, ""), All: true})
	require.NoError(t, err)
	require.Equal(t, 3, rep.Paths)
}

func TestRemoteImport(t *testing.T) {
	k := getKeys(t)
	src := newStore(t, k.cairn)
	c := src.addClosure(t, "a")
	good := drive(t)
	exportLocal(t, src, good, c.root)
	ctx := context.Background()

	t.Run("intact", func(t *testing.T) {
		dst := newStore(t, k.other)
		srv := serve(t, dst)
		rep, err := seed.Import(ctx, seed.ImportConfig{Dir: good, Sink: remote(t, srv.URL, writeToken)})
		require.NoError(t, err)
		require.ElementsMatch(t, bases(c.paths()), rep.Imported)
		require.Empty(t, rep.Refused)
		require.ElementsMatch(t, bases(c.paths()), stored(t, dst))
		for _, p := range c.paths() {
			b, err := srv.svc.NarInfo(ctx, hashOf(p), false)
			require.NoError(t, err)
			info, err := narinfo.Parse(b)
			require.NoError(t, err)
			_, ok := info.Verify([]signature.PublicKey{pub(k.other)})
			require.True(t, ok, "the importing cairn signs with its own key")
		}
		rep, err = seed.Import(ctx, seed.ImportConfig{Dir: good, Sink: remote(t, srv.URL, writeToken)})
		require.NoError(t, err)
		require.Len(t, rep.Present, 3)
	})

	t.Run("damaged NAR is never committed", func(t *testing.T) {
		dir := copyDrive(t, good)
		flipByte(t, narFile(t, dir, c.leaf))
		dst := newStore(t, k.other)
		srv := serve(t, dst)
		rep, err := seed.Import(ctx, seed.ImportConfig{Dir: dir, Sink: remote(t, srv.URL, writeToken)})
		require.NoError(t, err)
		require.Empty(t, rep.Imported)
		require.Len(t, rep.Refused, 3)
		st, err := dst.Stats()
		require.NoError(t, err)
		require.Zero(t, st.NARs, "the cut upload committed nothing")
		require.Zero(t, st.PhysicalBytes)
	})

	t.Run("token refused", func(t *testing.T) {
		dst := newStore(t, k.other)
		srv := serve(t, dst)
		for _, tok := range []string{"", readToken} {
			_, err := seed.Import(ctx, seed.ImportConfig{Dir: good, Sink: remote(t, srv.URL, tok)})
			require.ErrorIs(t, err, seed.ErrUnauthorized)
		}
	})
}

func TestRemoteErrors(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	srv := serve(t, s)
	ctx := context.Background()
	r := remote(t, srv.URL, "")
	_, err := r.NarInfo(ctx, hashOf(storePath("absent")))
	require.ErrorIs(t, err, seed.ErrNotFound)
	_, err = r.Pins(ctx)
	require.ErrorIs(t, err, seed.ErrUnauthorized)
	for _, bad := range []string{"ftp://x", "http://", "box:8501", "http://user:pw@box"} {
		_, err := seed.NewRemote(seed.RemoteConfig{URL: bad})
		require.Error(t, err, bad)
	}
}

func TestExportPinned(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	srv := serve(t, s)
	ctx := context.Background()
	export := func(src seed.Source) (*seed.ExportReport, error) {
		return seed.Export(ctx, seed.ExportConfig{Dir: drive(t), Source: src, Pinned: true})
	}
	_, err := export(seed.NewLocal(s.Store, s.key))
	require.ErrorContains(t, err, "no pinned roots")

	require.NoError(t, s.Index().PutPin(base(c.lib), time.Now()))
	for name, src := range map[string]seed.Source{
		"data directory": seed.NewLocal(s.Store, s.key),
		"server":         remote(t, srv.URL, adminToken),
	} {
		t.Run(name, func(t *testing.T) {
			rep, err := export(src)
			require.NoError(t, err)
			require.Equal(t, 2, rep.Paths, "the pinned lib and the leaf it references")
		})
	}
	_, err = export(remote(t, srv.URL, writeToken))
	require.ErrorIs(t, err, seed.ErrUnauthorized, "the pins need an admin token")
}
