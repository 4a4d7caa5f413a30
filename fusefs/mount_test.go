package fusefs_test

import (
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
	"cairn/fusefs"
	"cairn/internal/nixtest"
)

// sampleStore is a store holding the sample NARs: every NAR feature, a
// source tree, a binary as the root and a symlink as the root.
func sampleStore(t *testing.T) (*fusefs.Local, []stored) {
	t.Helper()
	s := openStore(t)
	var paths []stored
	for _, n := range nixtest.SampleNARs(t) {
		paths = append(paths, ingest(t, s, n))
	}
	return fusefs.NewLocal(s), paths
}

func narFile(s stored) string { return nixbase32.EncodeToString(s.nar.Hash[:]) + ".nar" }

// requireShows checks everything a mount shows of the stored paths.
func requireShows(t *testing.T, dir string, paths []stored) {
	t.Helper()
	for _, s := range paths {
		t.Run(s.nar.Name, func(t *testing.T) {
			nixtest.RequireSameTree(t, restore(t, s.nar.Bytes), filepath.Join(dir, "store", s.base))

			out, err := exec.Command("sha256sum", filepath.Join(dir, "nar", narFile(s))).Output()
			require.NoError(t, err)
			sum := sha256.Sum256(s.nar.Bytes)
			require.Equal(t, nixbase32.EncodeToString(sum[:]), nixbase32.EncodeToString(s.nar.Hash[:]))
			require.True(t, strings.HasPrefix(string(out), hexOf(s.nar.Hash)), "sha256sum of nar/%s: %s", narFile(s), out)

			b, err := os.ReadFile(filepath.Join(dir, "narinfo", s.hash()+".narinfo"))
			require.NoError(t, err)
			info, err := narinfo.Parse(b)
			require.NoError(t, err, "%s", b)
			require.Equal(t, "/nix/store/"+s.base, info.StorePath)
			require.Equal(t, s.nar.Hash, info.NarHash)
			require.Equal(t, uint64(len(s.nar.Bytes)), info.NarSize)
			require.Equal(t, "nar/"+narFile(s), info.URL)
			require.Equal(t, "none", info.Compression)
			require.Equal(t, []string{"test-1:c2ln"}, info.Sigs)
		})
	}
	for _, d := range []struct {
		dir  string
		name func(stored) string
	}{
		{"store", func(s stored) string { return s.base }},
		{"nar", narFile},
		{"narinfo", func(s stored) string { return s.hash() + ".narinfo" }},
	} {
		entries, err := os.ReadDir(filepath.Join(dir, d.dir))
		require.NoError(t, err)
		var got, want []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		for _, s := range paths {
			want = append(want, d.name(s))
		}
		slices.Sort(want)
		require.Equal(t, want, got, "ls %s", d.dir)
	}
}

func hexOf(h [32]byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 64)
	for i, c := range h {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}

func TestLocalMountShowsWhatRestoreMakes(t *testing.T) {
	src, paths := sampleStore(t)
	for _, tc := range []struct {
		name string
		cfg  fusefs.Config
	}{
		{"kernel opens files", fusefs.Config{}},
		{"every open asked, nothing pushed", fusefs.Config{AskOnOpen: true, KernelReadAhead: -1, PushAhead: -1}},
		{"tiny caches", fusefs.Config{CacheBytes: 1, TreeBytes: 1, ReadAhead: 1, PushAhead: 1, Parallel: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mount(t, src, tc.cfg)
			requireShows(t, m.Dir(), paths)
			requireGofmtRuns(t, m.Dir(), paths)
			st := m.Stats()
			require.NotZero(t, st.Blocks.Misses, "blocks were loaded")
			if tc.cfg.PushAhead >= 0 {
				require.NotZero(t, st.PushedFiles, "diff -r reads trees in order: files were pushed ahead")
			} else {
				require.Zero(t, st.PushedFiles)
			}
		})
	}
}

// requireGofmtRuns runs the gofmt binary that is the root of a store path.
func requireGofmtRuns(t *testing.T, dir string, paths []stored) {
	t.Helper()

	// The binary at the root of a store path runs from the mount.
	var gofmt stored
	for _, s := range paths {
		if s.nar.Name == "gofmt-binary" {
			gofmt = s
		}
	}
	// Through sh: this process serves the mount, and the thread that
	// forks stays in vfork until the exec has read the binary. Were that
	// binary on the mount, a garbage collection starting then would wait
	// for that thread while the threads that serve the read wait for the
	// collection: a deadlock (it hung this test once). sh execs it in a
	// process of its own.
	cmd := exec.Command("/bin/sh", "-c", `exec "$0"`, filepath.Join(dir, "store", gofmt.base))
	cmd.Stdin = strings.NewReader("package   main\nfunc  main( ) {}\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "package main\n\nfunc main() {}\n", string(out))
}

func TestMountRefusesWrites(t *testing.T) {
	src, paths := sampleStore(t)
	m := mount(t, src, fusefs.Config{})
	var sample stored
	for _, s := range paths {
		if s.nar.Name == "sample" {
			sample = s
		}
	}
	root := filepath.Join(m.Dir(), "store", sample.base)
	file := filepath.Join(root, "a")
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(root, "new"), nil, 0o644) }},
		{"create in store/", func() error { return os.WriteFile(filepath.Join(m.Dir(), "store", "new"), nil, 0o644) }},
		{"create at root", func() error { return os.WriteFile(filepath.Join(m.Dir(), "new"), nil, 0o644) }},
		{"open for writing", func() error { return openClose(file, os.O_WRONLY) }},
		{"open read-write", func() error { return openClose(file, os.O_RDWR) }},
		{"append", func() error { return openClose(file, os.O_WRONLY|os.O_APPEND) }},
		{"open nar for writing", func() error { return openClose(filepath.Join(m.Dir(), "nar", narFile(sample)), os.O_RDWR) }},
		{"truncate", func() error { return os.Truncate(file, 0) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(root, "d"), 0o755) }},
		{"rmdir", func() error { return syscall.Rmdir(filepath.Join(root, "emptydir")) }},
		{"unlink", func() error { return syscall.Unlink(file) }},
		{"unlink store path", func() error { return os.RemoveAll(filepath.Join(m.Dir(), "store", sample.base)) }},
		{"rename", func() error { return os.Rename(file, filepath.Join(root, "b")) }},
		{"symlink", func() error { return os.Symlink("a", filepath.Join(root, "l")) }},
		{"link", func() error { return os.Link(file, filepath.Join(root, "h")) }},
		{"chmod", func() error { return os.Chmod(file, 0o777) }},
		{"chown", func() error { return os.Lchown(file, 1, 1) }},
		{"utimes", func() error { return os.Chtimes(file, testTime, testTime) }},
		{"setxattr", func() error { return syscall.Setxattr(file, "user.x", []byte("1"), 0) }},
		{"mknod", func() error { return syscall.Mknod(filepath.Join(root, "fifo"), syscall.S_IFIFO|0o644, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			require.Error(t, err)
			require.True(t, errors.Is(err, syscall.EROFS), "%s: got %v, want EROFS", tc.name, err)
		})
	}
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "hello\n", string(b), "the file is unchanged")
}

func openClose(path string, flag int) error {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func TestMountShowsPathsThatArrive(t *testing.T) {
	s := openStore(t)
	nars := nixtest.SampleNARs(t)
	first := ingest(t, s, nars[0])
	m := mount(t, fusefs.NewLocal(s), fusefs.Config{})

	late := storePathOf(nars[1].Name)
	_, err := os.Stat(filepath.Join(m.Dir(), "store", late))
	require.ErrorIs(t, err, os.ErrNotExist, "not stored yet")
	names := func(dir string) []string {
		entries, err := os.ReadDir(filepath.Join(m.Dir(), dir))
		require.NoError(t, err)
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	require.Equal(t, []string{first.base}, names("store"))

	second := ingest(t, s, nars[1])
	require.Equal(t, late, second.base)
	require.ElementsMatch(t, []string{first.base, second.base}, names("store"))
	require.ElementsMatch(t, []string{narFile(first), narFile(second)}, names("nar"))
	nixtest.RequireSameTree(t, restore(t, second.nar.Bytes), filepath.Join(m.Dir(), "store", second.base))
}

func TestMountInodesAreStable(t *testing.T) {
	src, paths := sampleStore(t)
	var sample stored
	for _, s := range paths {
		if s.nar.Name == "sample" {
			sample = s
		}
	}
	files := []string{
		"store/" + sample.base,
		"store/" + sample.base + "/a",
		"store/" + sample.base + "/sub/deep/x.txt",
		"store/" + sample.base + "/rel-link",
		"nar/" + narFile(sample),
		"narinfo/" + sample.hash() + ".narinfo",
		"store", "nar", "narinfo", ".",
	}
	inos := func(dir string) map[string]uint64 {
		out := map[string]uint64{}
		for _, f := range files {
			out[f] = ino(t, filepath.Join(dir, f))
		}
		return out
	}
	first := mount(t, src, fusefs.Config{})
	want := inos(first.Dir())
	require.NoError(t, first.Close())
	second := mount(t, src, fusefs.Config{})
	require.Equal(t, want, inos(second.Dir()), "inode numbers across remounts")
	seen := map[uint64]string{}
	for f, i := range want {
		require.Empty(t, seen[i], "%s and %s share inode %d", f, seen[i], i)
		seen[i] = f
	}
	// A directory listing gives the same numbers as stat.
	entries, err := os.ReadDir(filepath.Join(second.Dir(), "store", sample.base, "sub"))
	require.NoError(t, err)
	for _, e := range entries {
		info, err := e.Info()
		require.NoError(t, err)
		require.Equal(t, ino(t, filepath.Join(second.Dir(), "store", sample.base, "sub", e.Name())), info.Sys().(*syscall.Stat_t).Ino)
	}
}

func TestRemoteMountReadsRanges(t *testing.T) {
	nars := nixtest.SampleNARs(t)
	var paths []stored
	for _, n := range nars {
		paths = append(paths, stored{nar: n, base: storePathOf(n.Name)})
	}
	remote := newFakeRemote(t, "sesame", paths[:len(paths)-1]...)
	src, err := fusefs.NewRemote(fusefs.RemoteConfig{URL: remote.URL, Token: "sesame", BlockSize: 16 << 10})
	require.NoError(t, err)
	m := mount(t, src, fusefs.Config{})

	// One small file of a large tree costs one block, not the NAR.
	var http stored
	for _, s := range paths {
		if s.nar.Name == "go-src-net-http" {
			http = s
		}
	}
	b, err := os.ReadFile(filepath.Join(m.Dir(), "store", http.base, "doc.go"))
	require.NoError(t, err)
	require.Contains(t, string(b), "package http")
	remote.mu.Lock()
	sent := remote.narSent
	remote.mu.Unlock()
	require.LessOrEqual(t, sent, int64(2*16<<10), "NAR bytes fetched to read doc.go (%d bytes) of a %d-byte NAR", len(b), len(http.nar.Bytes))

	// A path that arrives shows up; the remote's list of paths is asked
	// for again at most every half second when an unknown name is looked
	// up.
	late := paths[len(paths)-1]
	_, err = os.Lstat(filepath.Join(m.Dir(), "store", late.base))
	require.ErrorIs(t, err, os.ErrNotExist)
	remote.add(late)
	require.Eventually(t, func() bool {
		_, err := os.Lstat(filepath.Join(m.Dir(), "store", late.base))
		return err == nil
	}, 5*time.Second, 50*time.Millisecond)

	requireShows(t, m.Dir(), paths)
	for _, r := range remote.requests() {
		if strings.HasPrefix(r, "GET /nar/") {
			require.Contains(t, r, "bytes=", "a NAR is only ever fetched in ranges: %s", r)
		}
	}

	// The same files have the same inode numbers as in a local mount.
	local, _ := sampleStore(t)
	lm := mount(t, local, fusefs.Config{})
	for _, p := range []string{"store/" + http.base + "/doc.go", "store/" + http.base, "nar/" + narFile(http)} {
		require.Equal(t, ino(t, filepath.Join(lm.Dir(), p)), ino(t, filepath.Join(m.Dir(), p)), "%s", p)
	}
}

func TestRemoteMountWrongToken(t *testing.T) {
	n := nixtest.SampleNARs(t)[0]
	remote := newFakeRemote(t, "sesame", stored{nar: n, base: storePathOf(n.Name)})
	src, err := fusefs.NewRemote(fusefs.RemoteConfig{URL: remote.URL, Token: "wrong"})
	require.NoError(t, err)
	m := mount(t, src, fusefs.Config{})
	_, err = os.ReadDir(filepath.Join(m.Dir(), "store"))
	require.ErrorIs(t, err, syscall.EACCES)
}

var testTime = time.Unix(1000, 0)
