package seed_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/stretchr/testify/require"

	"cairn/appliance/seed"
)

// problemsOf renders a report's problems for matching.
func problemsOf(ps []seed.Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}

func TestVerify(t *testing.T) {
	k := getKeys(t)
	s := newStore(t, k.cairn)
	c := s.addClosure(t, "a")
	good := drive(t)
	exportLocal(t, s, good, c.root)
	rel := func(dir, file string) string {
		r, err := filepath.Rel(dir, file)
		require.NoError(t, err)
		return filepath.ToSlash(r)
	}

	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir string) string // returns the file the problem names
		keys    []signature.PublicKey
		problem string // "" for a clean drive
	}{
		{name: "intact", damage: func(*testing.T, string) string { return "" }},
		{name: "intact, trusted key given", keys: []signature.PublicKey{pub(k.cairn)},
			damage: func(*testing.T, string) string { return "" }},
		{name: "trusted upstream key", keys: []signature.PublicKey{pub(k.upstream)},
			damage: func(*testing.T, string) string { return "" }},
		{name: "one byte flipped in a NAR", problem: "NAR of " + c.root,
			damage: func(t *testing.T, dir string) string {
				f := narFile(t, dir, c.root)
				flipByte(t, f)
				return rel(dir, f)
			}},
		{name: "NarHash changed in a narinfo", problem: "no valid signature",
			damage: func(t *testing.T, dir string) string {
				info := readInfo(t, dir, c.root)
				info.NarHash = readInfo(t, dir, c.lib).NarHash
				f := filepath.Join(dir, hashOf(c.root)+".narinfo")
				require.NoError(t, os.WriteFile(f, info.Marshal(), 0o644))
				return rel(dir, f)
			}},
		{name: "listing changed", problem: "cairn-seed.json lists",
			damage: func(t *testing.T, dir string) string {
				f := filepath.Join(dir, hashOf(c.lib)+".ls")
				require.NoError(t, os.WriteFile(f, []byte(`{"version":1,"root":{"type":"regular","size":1}}`), 0o644))
				return rel(dir, f)
			}},
		{name: "NAR file missing", problem: "missing",
			damage: func(t *testing.T, dir string) string {
				f := narFile(t, dir, c.leaf)
				require.NoError(t, os.Remove(f))
				return rel(dir, f)
			}},
		{name: "reference missing", problem: "not on the drive",
			damage: func(t *testing.T, dir string) string {
				require.NoError(t, os.Remove(filepath.Join(dir, hashOf(c.leaf)+".narinfo")))
				return hashOf(c.lib) + ".narinfo"
			}},
		{name: "unlisted narinfo", problem: "not listed",
			damage: func(t *testing.T, dir string) string {
				info := readInfo(t, dir, c.root)
				info.StorePath = storePath("smuggled")
				info.Sign(k.cairn)
				f := filepath.Join(dir, info.Hash()+".narinfo")
				require.NoError(t, os.WriteFile(f, info.Marshal(), 0o644))
				return rel(dir, f)
			}},
		{name: "left-over temporary file", problem: "interrupted export",
			damage: func(t *testing.T, dir string) string {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "nar", ".a.nar.zst.cairn-tmp-1"), nil, 0o644))
				return "nar/.a.nar.zst.cairn-tmp-1"
			}},
		{name: "manifest missing", problem: "missing",
			keys: []signature.PublicKey{pub(k.cairn)},
			damage: func(t *testing.T, dir string) string {
				require.NoError(t, os.Remove(filepath.Join(dir, seed.ManifestName)))
				return seed.ManifestName
			}},
		{name: "untrusted key", problem: "no valid signature by other-1",
			keys:   []signature.PublicKey{{Name: "other-1", Data: bytes.Repeat([]byte{1}, 32)}},
			damage: func(*testing.T, string) string { return hashOf(c.root) + ".narinfo" }},
		{name: "same key name, other key", problem: "no valid signature by cairn-test-1",
			keys:   []signature.PublicKey{pub(k.other)},
			damage: func(*testing.T, string) string { return hashOf(c.root) + ".narinfo" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDrive(t, good)
			file := tc.damage(t, dir)
			rep, err := seed.Verify(context.Background(), seed.VerifyConfig{Dir: dir, TrustedKeys: tc.keys})
			require.NoError(t, err)
			require.Equal(t, len(tc.keys) == 0, rep.KeyFromDrive)
			if tc.problem == "" {
				require.True(t, rep.OK(), problemsOf(rep.Problems))
				require.Equal(t, 3, rep.NARs)
				require.Equal(t, 3, rep.NarInfos)
				require.Equal(t, 10, rep.Files)
				return
			}
			require.False(t, rep.OK())
			found := false
			for _, p := range rep.Problems {
				found = found || p.File == file && strings.Contains(p.What, tc.problem)
			}
			require.True(t, found, "want %s: ...%s... in\n%s", file, tc.problem, problemsOf(rep.Problems))
		})
	}
}

func TestVerifyNeedsAKey(t *testing.T) {
	dir := t.TempDir()
	_, err := seed.Verify(context.Background(), seed.VerifyConfig{Dir: dir})
	require.ErrorIs(t, err, seed.ErrNoTrust)
	require.NoError(t, os.WriteFile(filepath.Join(dir, seed.ManifestName), []byte("{"), 0o644))
	_, err = seed.Verify(context.Background(), seed.VerifyConfig{Dir: dir})
	require.ErrorIs(t, err, seed.ErrNoTrust)
}

func TestParseManifest(t *testing.T) {
	k := getKeys(t)
	key := pub(k.cairn).String()
	sum := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, json, err string
	}{
		{"good", `{"format":1,"public_key":"` + key + `","files":[{"path":"nar/a.nar.zst","size":1,"sha256":"` + sum + `"}]}`, ""},
		{"no files", `{"format":1,"public_key":"` + key + `","files":[]}`, ""},
		{"not JSON", `{`, "bad cairn-seed.json"},
		{"other format", `{"format":2,"public_key":"` + key + `"}`, "format 2"},
		{"bad key", `{"format":1,"public_key":"nope"}`, "public_key"},
		{"escaping path", `{"format":1,"public_key":"` + key + `","files":[{"path":"../etc/passwd","size":1,"sha256":"` + sum + `"}]}`, "not a file below"},
		{"absolute path", `{"format":1,"public_key":"` + key + `","files":[{"path":"/etc/passwd","size":1,"sha256":"` + sum + `"}]}`, "not a file below"},
		{"dot segment", `{"format":1,"public_key":"` + key + `","files":[{"path":"nar/./a","size":1,"sha256":"` + sum + `"}]}`, "not a file below"},
		{"short hash", `{"format":1,"public_key":"` + key + `","files":[{"path":"a","size":1,"sha256":"abc"}]}`, "64 lowercase hex"},
		{"upper-case hash", `{"format":1,"public_key":"` + key + `","files":[{"path":"a","size":1,"sha256":"` + strings.ToUpper(sum) + `"}]}`, "64 lowercase hex"},
		{"negative size", `{"format":1,"public_key":"` + key + `","files":[{"path":"a","size":-1,"sha256":"` + sum + `"}]}`, "negative"},
		{"twice", `{"format":1,"public_key":"` + key + `","files":[{"path":"a","size":1,"sha256":"` + sum + `"},{"path":"a","size":1,"sha256":"` + sum + `"}]}`, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := seed.ParseManifest([]byte(tc.json))
			if tc.err != "" {
				require.ErrorIs(t, err, seed.ErrBadManifest)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			b, err := m.Marshal()
			require.NoError(t, err)
			again, err := seed.ParseManifest(b)
			require.NoError(t, err)
			require.Equal(t, m, again)
		})
	}
}

func TestImport(t *testing.T) {
	k := getKeys(t)
	src := newStore(t, k.cairn)
	c := src.addClosure(t, "a")
	good := drive(t)
	exportLocal(t, src, good, c.root)
	ctx := context.Background()

	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, dir string)
		keys     []signature.PublicKey
		imported []string
		refused  []string
	}{
		{name: "intact", damage: func(*testing.T, string) {}, imported: c.paths()},
		{name: "trusted upstream key", damage: func(*testing.T, string) {}, keys: []signature.PublicKey{pub(k.upstream)}, imported: c.paths()},
		{name: "root NAR damaged", damage: func(t *testing.T, dir string) { flipByte(t, narFile(t, dir, c.root)) },
			imported: []string{c.lib, c.leaf}, refused: []string{c.root}},
		{name: "leaf NAR damaged", damage: func(t *testing.T, dir string) { flipByte(t, narFile(t, dir, c.leaf)) },
			refused: c.paths()},
		{name: "narinfo NarHash changed", damage: func(t *testing.T, dir string) {
			info := readInfo(t, dir, c.lib)
			info.NarHash = readInfo(t, dir, c.leaf).NarHash
			require.NoError(t, os.WriteFile(filepath.Join(dir, hashOf(c.lib)+".narinfo"), info.Marshal(), 0o644))
		}, imported: []string{c.leaf}, refused: []string{c.root, c.lib}},
		{name: "narinfo re-signed by a stranger", keys: []signature.PublicKey{pub(k.cairn)}, damage: func(t *testing.T, dir string) {
			info := readInfo(t, dir, c.root)
			info.Sigs = nil
			info.Sign(k.other) // same key name, another key
			require.NoError(t, os.WriteFile(filepath.Join(dir, hashOf(c.root)+".narinfo"), info.Marshal(), 0o644))
		}, imported: []string{c.lib, c.leaf}, refused: []string{c.root}},
		{name: "no manifest, trusted key", keys: []signature.PublicKey{pub(k.cairn)}, damage: func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, seed.ManifestName)))
		}, imported: c.paths()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDrive(t, good)
			tc.damage(t, dir)
			dst := newStore(t, k.other)
			rep, err := seed.Import(ctx, seed.ImportConfig{Dir: dir, Sink: seed.NewLocal(dst.Store, dst.key), TrustedKeys: tc.keys})
			require.NoError(t, err)
			require.ElementsMatch(t, bases(tc.imported), rep.Imported)
			var refused []string
			for _, p := range rep.Refused {
				refused = append(refused, p.File)
			}
			require.ElementsMatch(t, bases(tc.refused), refused, problemsOf(rep.Refused))
			require.ElementsMatch(t, bases(tc.imported), stored(t, dst))
			for _, p := range tc.imported {
				// The importing cairn signs with its own key, replacing the
				// exporter's signature of the same key name.
				info, err := seed.NewLocal(dst.Store, dst.key).NarInfo(ctx, hashOf(p))
				require.NoError(t, err)
				for _, key := range []signature.SecretKey{k.other, k.upstream} {
					_, ok := info.Verify([]signature.PublicKey{pub(key)})
					require.True(t, ok)
				}
				require.NoError(t, dst.Verify(ctx, info.NarHash))
			}
			st, err := dst.Stats()
			require.NoError(t, err)
			require.EqualValues(t, len(tc.imported), st.NARs, "a refused NAR leaves nothing behind")
		})
	}
}

// bases maps store paths to basenames; other names stay.
func bases(paths []string) []string {
	out := []string{}
	for _, p := range paths {
		out = append(out, base(p))
	}
	return out
}

func TestImportSkipsPresentAndDedups(t *testing.T) {
	k := getKeys(t)
	src := newStore(t, k.cairn)
	c := src.addClosure(t, "a")
	dir := drive(t)
	exportLocal(t, src, dir, c.root)
	dst := newStore(t, k.other)
	dst.add(t, "leaf-a", src.nars[c.leaf])
	sink := seed.NewLocal(dst.Store, dst.key)

	rep, err := seed.Import(context.Background(), seed.ImportConfig{Dir: dir, Sink: sink})
	require.NoError(t, err)
	require.Equal(t, []string{base(c.leaf)}, rep.Present)
	require.ElementsMatch(t, bases([]string{c.root, c.lib}), rep.Imported)
	require.True(t, rep.KeyFromDrive)

	rep, err = seed.Import(context.Background(), seed.ImportConfig{Dir: dir, Sink: sink})
	require.NoError(t, err)
	require.Empty(t, rep.Imported)
	require.Len(t, rep.Present, 3)

	// A NAR shared with a stored one adds no chunks.
	before, err := dst.Stats()
	require.NoError(t, err)
	twin := src.add(t, "twin", src.nars[c.lib])
	exportLocal(t, src, dir, twin)
	rep, err = seed.Import(context.Background(), seed.ImportConfig{Dir: dir, Sink: sink})
	require.NoError(t, err)
	require.Equal(t, []string{base(twin)}, rep.Imported)
	after, err := dst.Stats()
	require.NoError(t, err)
	require.Equal(t, before.Chunks, after.Chunks)
	require.Equal(t, before.NARs, after.NARs)
	require.Equal(t, before.NarInfos+1, after.NarInfos)
}

func TestImportRefusesWithoutTrust(t *testing.T) {
	k := getKeys(t)
	dst := newStore(t, k.other)
	_, err := seed.Import(context.Background(), seed.ImportConfig{Dir: t.TempDir(), Sink: seed.NewLocal(dst.Store, dst.key)})
	require.ErrorIs(t, err, seed.ErrNoTrust)
}
