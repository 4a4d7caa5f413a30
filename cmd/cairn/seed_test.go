package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/appliance/narinfo"
	"cairn/internal/nixtest"
)

// runCairn runs the cairn binary and returns its output (stdout then
// stderr) and error.
func runCairn(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(cairnBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String() + stderr.String(), err
}

// seedFile is a drive file's identity, to tell which files an export
// rewrote.
type seedFile struct {
	ino   uint64
	mtime int64
}

func seedFiles(t *testing.T, dir string) map[string]seedFile {
	t.Helper()
	out := map[string]seedFile{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = seedFile{st.Ino, st.Mtim.Nano()}
		return nil
	}))
	return out
}

// seedPathFiles are the drive files of store paths: NAR, listing, narinfo.
func seedPathFiles(t *testing.T, dir string, paths ...string) []string {
	t.Helper()
	var out []string
	for _, p := range paths {
		out = append(out, nixtest.NarInfoField(t, dir, p, "URL"), hashPart(p)+".ls", hashPart(p)+".narinfo")
	}
	slices.Sort(out)
	return out
}

// requirePulled checks that a client store holds every path.
func requirePulled(t *testing.T, store string, paths ...string) {
	t.Helper()
	got := nixtest.Run(t, "nix-store", append([]string{"--store", store, "-qR"}, paths...)...)
	for _, p := range paths {
		require.Contains(t, string(got), p)
	}
}

// TestSeedDrive walks a drive's life: a cairn pulls a closure from an
// upstream and exports it; stock Nix reads the drive; an export of one
// more path, which that cairn fetches from its upstream on the way, writes
// only that path's files; a second, empty cairn imports the drive and
// serves it with no upstream; a cairn serves straight from the drive; a
// stopped cairn's data directory exports and imports; damaged drives are
// refused.
func TestSeedDrive(t *testing.T) {
	f := fixtures(t)
	root, extra := f.closure.Root(), f.extra
	closure := f.closure.Paths
	up := nixtest.ServeCache(t, f.xz)
	up2 := nixtest.ServeCache(t, f.second)
	toks := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(toks, []byte(fmt.Sprintf("admin %s\nwrite %s\n", adminToken, writeToken)), 0o600))
	c1 := startCairn(t, "--upstream", up.URL+"?priority=10", "--upstream", up2.URL+"?priority=20",
		"--trusted-key", f.key.Public, "--tokens-file", toks)
	_, out, err := nixPull(t, c1.URL, c1.PubKey, root)
	require.NoError(t, err, "pull through the first cairn:\n%s", out)

	drive := filepath.Join(t.TempDir(), "seed")
	out, err = runCairn(t, "seed", "export", drive, "--server", c1.URL, "--token", adminToken, "--closure", root)
	require.NoError(t, err, out)
	require.Contains(t, out, "exported 3 paths")
	require.Contains(t, out, c1.PubKey)

	t.Run("stock Nix reads the drive with cairn's key", func(t *testing.T) {
		store, out, err := nixPull(t, "file://"+drive, c1.PubKey, root)
		require.NoError(t, err, "nix copy --from the drive:\n%s", out)
		requirePulled(t, store, closure...)
		_, out, err = nixPull(t, "file://"+drive, f.key.Public, root)
		require.NoError(t, err, "the upstream's signatures are kept:\n%s", out)
	})

	t.Run("verify", func(t *testing.T) {
		out, err := runCairn(t, "seed", "verify", drive)
		require.NoError(t, err, out)
		require.Contains(t, out, "OK")
		require.Contains(t, out, "not who made it", "a key from the drive only proves integrity")
		out, err = runCairn(t, "seed", "verify", drive, "--trusted-key", c1.PubKey)
		require.NoError(t, err, out)
		require.Contains(t, out, "checked against --trusted-key")
		other := nixtest.NewKey(t, t.TempDir(), "stranger-1")
		out, err = runCairn(t, "seed", "verify", drive, "--trusted-key", other.Public)
		require.Error(t, err, "a drive not signed by the trusted key fails:\n%s", out)
		require.Contains(t, out, "no valid signature by stranger-1")
	})

	t.Run("a second export writes only the new path's files", func(t *testing.T) {
		// The first cairn has not fetched extra yet: the export makes it.
		before := seedFiles(t, drive)
		out, err := runCairn(t, "seed", "export", drive, "--server", c1.URL, "--token", adminToken, "--closure", root, "--closure", extra)
		require.NoError(t, err, out)
		require.Contains(t, out, "exported 4 paths")
		require.Contains(t, out, "wrote 3 files")
		after := seedFiles(t, drive)
		var added, changed []string
		for name, id := range after {
			old, ok := before[name]
			switch {
			case !ok:
				added = append(added, name)
			case old != id:
				changed = append(changed, name)
			}
		}
		slices.Sort(added)
		require.Equal(t, seedPathFiles(t, drive, extra), added)
		require.Equal(t, []string{"cairn-seed.json"}, changed)
	})

	up.Stop()
	up2.Stop()
	t.Run("an empty cairn imports the drive and serves it with no upstream", func(t *testing.T) {
		c2 := pushCairn(t)
		out, err := runCairn(t, "seed", "import", drive, "--server", c2.URL, "--token", readToken, "--trusted-key", c1.PubKey)
		require.Error(t, err, out)
		require.Contains(t, out, "refused the token: this token may not write")
		out, err = runCairn(t, "seed", "import", drive, "--server", c2.URL, "--token", writeToken, "--trusted-key", c1.PubKey)
		require.NoError(t, err, out)
		require.Contains(t, out, "imported 4 paths")
		store, out, err := nixPull(t, c2.URL, c2.PubKey, root, extra)
		require.NoError(t, err, "pull the imported closure:\n%s", out)
		requirePulled(t, store, append([]string{extra}, closure...)...)
		out, err = runCairn(t, "seed", "import", drive, "--server", c2.URL, "--token", writeToken, "--trusted-key", c1.PubKey)
		require.NoError(t, err, out)
		require.Contains(t, out, "imported 0 paths")
		require.Contains(t, out, "4 already present")
	})

	t.Run("cairn serves straight from the drive", func(t *testing.T) {
		c3 := startCairn(t, "--upstream", "file://"+drive+"?priority=90", "--trusted-key", c1.PubKey)
		store, out, err := nixPull(t, c3.URL, c3.PubKey, root, extra)
		require.NoError(t, err, "pull through a cairn whose upstream is the drive:\n%s", out)
		requirePulled(t, store, append([]string{extra}, closure...)...)
	})

	t.Run("a stopped cairn's data directory exports and imports", func(t *testing.T) {
		c1.stop(t)
		drive2 := filepath.Join(t.TempDir(), "seed2")
		out, err := runCairn(t, "seed", "export", drive2, "--data", c1.Data, "--closure", root)
		require.NoError(t, err, out)
		require.Equal(t, seedPathFiles(t, drive, closure...), seedPathFiles(t, drive2, closure...))
		for _, p := range closure {
			// The same narinfo over HTTP and from the data directory, but
			// for the NAR file's hash and size, which change when the
			// store recompresses its frames in the background.
			var infos []*narinfo.Info
			for _, d := range []string{drive, drive2} {
				b, err := os.ReadFile(filepath.Join(d, hashPart(p)+".narinfo"))
				require.NoError(t, err)
				info, err := narinfo.Parse(b)
				require.NoError(t, err)
				info.FileHash, info.FileSize = "", 0
				infos = append(infos, info)
			}
			require.Equal(t, infos[0], infos[1])
		}

		data := filepath.Join(t.TempDir(), "data")
		out, err = runCairn(t, "seed", "import", drive2, "--data", data, "--key-name", "cairn-test-1", "--trusted-key", c1.PubKey)
		require.NoError(t, err, out)
		require.Contains(t, out, "imported 3 paths")
		c4 := startCairn(t, "--data", data, "--upstream", "none")
		store, out, err := nixPull(t, c4.URL, c4.PubKey, root)
		require.NoError(t, err, "pull what was imported into the data directory:\n%s", out)
		requirePulled(t, store, closure...)
	})

	t.Run("one flipped byte in a NAR", func(t *testing.T) {
		bad := copyCache(t, drive)
		narFile := nixtest.NarInfoField(t, bad, root, "URL")
		b, err := os.ReadFile(filepath.Join(bad, narFile))
		require.NoError(t, err)
		b[len(b)/2] ^= 0x01
		require.NoError(t, os.WriteFile(filepath.Join(bad, narFile), b, 0o644))

		out, err := runCairn(t, "seed", "verify", bad)
		require.Error(t, err, out)
		require.Contains(t, out, narFile+": NAR of "+root)
		data := filepath.Join(t.TempDir(), "data")
		out, err = runCairn(t, "seed", "import", bad, "--data", data, "--trusted-key", c1.PubKey)
		require.Error(t, err, out)
		require.Contains(t, out, "refused "+filepath.Base(root))
		require.Contains(t, out, "imported 3 paths", "the rest are imported")
		st := openStats(t, data)
		require.EqualValues(t, 3, st.NarInfos)
		require.EqualValues(t, 3, st.NARs, "the damaged NAR left nothing behind")
	})

	t.Run("a narinfo with a changed NarHash", func(t *testing.T) {
		bad := copyCache(t, drive)
		file := filepath.Join(bad, hashPart(root)+".narinfo")
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		info, err := narinfo.Parse(b)
		require.NoError(t, err)
		lib, err := narinfo.ParseNarHash(nixtest.NarInfoField(t, bad, closure[1], "NarHash"))
		require.NoError(t, err)
		info.NarHash = lib
		require.NoError(t, os.WriteFile(file, info.Marshal(), 0o644))

		out, err := runCairn(t, "seed", "verify", bad, "--trusted-key", c1.PubKey)
		require.Error(t, err, out)
		require.Contains(t, out, hashPart(root)+".narinfo: "+root+" carries no valid signature")
		c5 := pushCairn(t)
		out, err = runCairn(t, "seed", "import", bad, "--server", c5.URL, "--token", writeToken, "--trusted-key", c1.PubKey)
		require.Error(t, err, out)
		require.Contains(t, out, "refused "+filepath.Base(root))
		status, _, _ := c5.get(t, "GET", "/"+hashPart(root)+".narinfo")
		require.Equal(t, 404, status)
	})
}

func TestSeedCommandLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"seed"}, "want seed export, verify or import"},
		{"no drive", []string{"seed", "export", "--all"}, "which drive directory"},
		{"nothing to export", []string{"seed", "export", dir}, "--closure STOREPATH, --pinned or --all"},
		{"server and data", []string{"seed", "export", dir, "--all", "--server", "http://127.0.0.1:1", "--data", dir}, "not both"},
		{"data is no store", []string{"seed", "export", dir, "--all", "--data", dir}, "not a cairn data directory"},
		{"bad key", []string{"seed", "verify", dir, "--trusted-key", "nope"}, "--trusted-key"},
		{"no key and no manifest", []string{"seed", "verify", dir}, "no key to check signatures against"},
		{"server down", []string{"seed", "export", dir, "--all", "--server", "http://127.0.0.1:1"}, "connection refused"},
		{"extra argument", []string{"seed", "verify", dir, "more"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCairn(t, tc.args...)
			require.Error(t, err, out)
			require.Contains(t, out, tc.want)
		})
	}
	out, err := runCairn(t, "seed", "-h")
	require.NoError(t, err, out)
	require.Contains(t, out, "cairn seed export DIR")
}
