package seed_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/appliance/seed"
	"cairn/internal/nixtest"
)

// driveFiles lists a drive's files, relative and slash-separated.
func driveFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return err
	}))
	slices.Sort(out)
	return out
}

// pathFiles are the drive files of store paths: NAR, listing, narinfo.
func pathFiles(t testing.TB, dir string, paths ...string) []string {
	t.Helper()
	var out []string
	for _, p := range paths {
		info := readInfo(t, dir, p)
		out = append(out, info.URL, hashOf(p)+".ls", hashOf(p)+".narinfo")
	}
	slices.Sort(out)
	return out
}

func TestExportWritesABinaryCache(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	s.add(t, "unrelated", testNAR(t, 9, 1000))
	dir := drive(t)

	rep := exportLocal(t, s, dir, c.root)
	require.Equal(t, 3, rep.Paths)
	require.Equal(t, pub(k.cairn).String(), rep.PublicKey)
	files := driveFiles(t, dir)
	want := append(pathFiles(t, dir, c.paths()...), "cairn-seed.json", "nix-cache-info")
	slices.Sort(want)
	require.Equal(t, want, files)
	written := slices.Clone(rep.Written)
	slices.Sort(written)
	require.Equal(t, slices.DeleteFunc(slices.Clone(want), func(f string) bool { return f == "cairn-seed.json" }), written)

	for _, p := range c.paths() {
		info := readInfo(t, dir, p)
		require.Equal(t, "zstd", info.Compression)
		require.Equal(t, "nar/"+nixbase32.EncodeToString(info.NarHash[:])+".nar.zst", info.URL)
		for _, key := range []signature.SecretKey{k.cairn, k.upstream} {
			_, ok := info.Verify([]signature.PublicKey{pub(key)})
			require.True(t, ok, "%s keeps the signature of %s", p, pub(key).Name)
		}
		nar := decodeZstd(t, narFile(t, dir, p))
		require.Equal(t, s.nars[p], nar, "the NAR file decodes to the NAR")
		b, err := os.ReadFile(narFile(t, dir, p))
		require.NoError(t, err)
		sum := sha256.Sum256(b)
		require.Equal(t, "sha256:"+nixbase32.EncodeToString(sum[:]), info.FileHash)
		require.EqualValues(t, len(b), info.FileSize)
		ls, err := os.ReadFile(filepath.Join(dir, hashOf(p)+".ls"))
		require.NoError(t, err)
		want, err := seed.NewLocal(s.Store, s.key).Listing(context.Background(), hashOf(p))
		require.NoError(t, err)
		require.Equal(t, want, ls)
	}

	m := rep.Drive
	require.Equal(t, pub(k.cairn).String(), m.PublicKey)
	require.False(t, m.Created.IsZero())
	require.Len(t, m.Files, len(files)-1, "every file but the manifest itself")
	for _, f := range m.Files {
		b, err := os.ReadFile(filepath.Join(dir, f.Path))
		require.NoError(t, err)
		sum := sha256.Sum256(b)
		require.Equal(t, hex.EncodeToString(sum[:]), f.SHA256, f.Path)
		require.EqualValues(t, len(b), f.Size, f.Path)
	}
	b, err := os.ReadFile(filepath.Join(dir, seed.ManifestName))
	require.NoError(t, err)
	again, err := seed.ParseManifest(b)
	require.NoError(t, err)
	require.Equal(t, m.Files, again.Files)
}

func TestExportIsIncremental(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	dir := drive(t)
	first := exportLocal(t, s, dir, c.root)

	// The same export again writes nothing.
	again := exportLocal(t, s, dir, c.root)
	require.Empty(t, again.Written)
	require.Equal(t, len(first.Written), again.Kept)
	require.Equal(t, first.Drive.Files, again.Drive.Files)
	require.Equal(t, first.Drive.Created, again.Drive.Created)

	// One more path that shares a reference: only its three files.
	extra := s.add(t, "extra", testNAR(t, 4, 20<<10), c.leaf)
	rep := exportLocal(t, s, dir, extra)
	written := slices.Clone(rep.Written)
	slices.Sort(written)
	require.Equal(t, pathFiles(t, dir, extra), written)
	require.Len(t, rep.Drive.Files, len(first.Drive.Files)+3, "the manifest keeps the earlier export's files")
	r, err := seed.Verify(context.Background(), seed.VerifyConfig{Dir: dir})
	require.NoError(t, err)
	require.True(t, r.OK(), "%v", r.Problems)
}

func TestExportResumes(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	dir := drive(t)
	exportLocal(t, s, dir, c.root)

	// An export cut off before its sync: the manifest is not written yet,
	// a renamed NAR file lost its tail, a temporary file is left.
	require.NoError(t, os.Remove(filepath.Join(dir, seed.ManifestName)))
	leafNAR := narFile(t, dir, c.leaf)
	b, err := os.ReadFile(leafNAR)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(leafNAR, b[:len(b)/2], 0o644))
	tmp := filepath.Join(dir, "nar", ".x.nar.zst.cairn-tmp-0123")
	require.NoError(t, os.WriteFile(tmp, []byte("partial"), 0o644))

	rep := exportLocal(t, s, dir, c.root)
	require.Equal(t, []string{"nar/" + filepath.Base(leafNAR)}, rep.Written)
	require.Equal(t, 1, rep.Removed)
	require.NoFileExists(t, tmp)
	r, err := seed.Verify(context.Background(), seed.VerifyConfig{Dir: dir})
	require.NoError(t, err)
	require.True(t, r.OK(), "%v", r.Problems)
}

func TestExportRefuses(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	ctx := context.Background()
	src := seed.NewLocal(s.Store, s.key)
	orphan := s.add(t, "orphan", testNAR(t, 5, 100), storePath("never-stored"))

	t.Run("too little space", func(t *testing.T) {
		dir := drive(t)
		_, err := seed.Export(ctx, seed.ExportConfig{Dir: dir, Source: src, Roots: []string{c.root},
			FreeSpace: func(string) (uint64, error) { return 100 << 10, nil }})
		require.ErrorIs(t, err, seed.ErrNoSpace)
		require.ErrorContains(t, err, "102.4 kB free")
		require.Equal(t, []string{}, append([]string{}, driveFiles(t, dir)...), "nothing written")
	})
	t.Run("incomplete closure", func(t *testing.T) {
		_, err := seed.Export(ctx, seed.ExportConfig{Dir: drive(t), Source: src, Roots: []string{orphan}})
		require.ErrorIs(t, err, seed.ErrIncomplete)
		require.ErrorContains(t, err, base(storePath("never-stored")))
	})
	t.Run("path not stored", func(t *testing.T) {
		_, err := seed.Export(ctx, seed.ExportConfig{Dir: drive(t), Source: src, Roots: []string{storePath("nope")}})
		require.ErrorIs(t, err, seed.ErrIncomplete)
		require.ErrorContains(t, err, "is not stored")
	})
	t.Run("all leaves out incomplete closures", func(t *testing.T) {
		dir := drive(t)
		rep, err := seed.Export(ctx, seed.ExportConfig{Dir: dir, Source: src, All: true})
		require.NoError(t, err)
		require.Equal(t, 3, rep.Paths)
		require.Len(t, rep.Left, 1)
		require.Contains(t, rep.Left[0], base(orphan))
	})
	t.Run("drive of another key", func(t *testing.T) {
		dir := drive(t)
		exportLocal(t, s, dir, c.leaf)
		_, err := seed.Export(ctx, seed.ExportConfig{Dir: dir, Source: seed.NewLocal(s.Store, k.other), Roots: []string{c.root}})
		require.ErrorIs(t, err, seed.ErrOtherKey)
	})
	t.Run("nothing named", func(t *testing.T) {
		_, err := seed.Export(ctx, seed.ExportConfig{Dir: drive(t), Source: src})
		require.ErrorContains(t, err, "nothing to export")
	})
	t.Run("bad root", func(t *testing.T) {
		_, err := seed.Export(ctx, seed.ExportConfig{Dir: drive(t), Source: src, Roots: []string{"/etc/passwd"}})
		require.ErrorContains(t, err, "not a store path")
	})
}

func TestExportRoots(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	for _, root := range []string{c.root, base(c.root), hashOf(c.root), c.root + "/"} {
		t.Run(root, func(t *testing.T) {
			rep := exportLocal(t, s, drive(t), root)
			require.Equal(t, 3, rep.Paths)
		})
	}
}

// A chunk stored as a delta goes to the drive packed anew, not as the
// stored-block frame a .nar.zst response carries: the drive stays small,
// and every NAR file still decodes to its NAR.
func TestExportPacksDeltas(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	old, next := nixtest.ReleasePair(t)
	ctx := context.Background()
	a := s.add(t, "tool-1.0", old.Bytes)
	_, err := s.RecompressDue(ctx, time.Now().Add(time.Hour))
	require.NoError(t, err)
	b := s.add(t, "tool-1.1", next.Bytes)
	res, err := s.RecompressDue(ctx, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Positive(t, res.Deltas)

	dir := drive(t)
	exportLocal(t, s, dir, a, b)
	for _, p := range []string{a, b} {
		require.Equal(t, s.nars[p], decodeZstd(t, narFile(t, dir, p)), "the NAR file decodes to the NAR")
	}
	nar, err := s.OpenNAR(ctx, next.Hash)
	require.NoError(t, err)
	fi, err := os.Stat(narFile(t, dir, b))
	require.NoError(t, err)
	require.Less(t, fi.Size(), nar.CompressedSize()*2/3, "deltas packed, not sent as stored blocks")
	r, err := seed.Verify(ctx, seed.VerifyConfig{Dir: dir})
	require.NoError(t, err)
	require.True(t, r.OK(), "%v", r.Problems)
}
