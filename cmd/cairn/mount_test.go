package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

// mountToken is the read token the remote mount presents.
const mountToken = "open-sesame-1"

// mountFixture is what the mount tests pull through cairn: a closure of
// small paths (a source tree, two text files, and a tree with every NAR
// feature: executables, empty files and directories, odd names, relative
// and absolute symlinks) and a Go toolchain with a real binary to run.
type mountFixture struct {
	key     nixtest.Key
	store   string   // the throwaway store holding paths
	cache   string   // paths as a signed file:// cache
	paths   []string // store paths in cache
	tc      nixtest.Toolchain
	tcKey   string // public key of tcCache
	tcCache string // the toolchain as a signed file:// cache
}

var (
	mountFixtureOnce sync.Once
	mountFx          *mountFixture
)

func mountFixtures(t *testing.T) *mountFixture {
	t.Helper()
	nixtest.RequireNix(t)
	mountFixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-mount")
		require.NoError(t, err)
		c := nixtest.MakeClosure(t, dir, "mount")
		fx := &mountFixture{key: nixtest.NewKey(t, dir, "mount-up-1"), store: c.Store, cache: filepath.Join(dir, "up")}
		sample := nixtest.AddToStore(t, c.Store, nixtest.SampleTree(t, t.TempDir()))
		fx.paths = append(c.Paths, sample)
		nixtest.SignedCache(t, c.Store, fx.cache, fx.key, "xz", fx.paths...)
		fx.tc = nixtest.Toolchains(t, "1.25.0")[0]
		fx.tcCache, fx.tcKey = signedToolchainCache(t, fx.tc)
		mountFx = fx
	})
	require.NotNil(t, mountFx, "fixture setup failed in an earlier test")
	return mountFx
}

// signedToolchainCache publishes the toolchain into a zstd file:// cache
// signed with a key of its own, once: both are kept under the fixture
// directory, keyed by store path.
func signedToolchainCache(t *testing.T, tc nixtest.Toolchain) (cache, pubKey string) {
	t.Helper()
	dir := filepath.Join(nixtest.FixtureDir(t), "mount-signed-"+filepath.Base(tc.StorePath))
	cache, pub := filepath.Join(dir, "cache"), filepath.Join(dir, "key.pub")
	if b, err := os.ReadFile(pub); err == nil {
		if _, err := os.Stat(filepath.Join(cache, nixtest.HashPart(t, tc.StorePath)+".narinfo")); err == nil {
			return cache, strings.TrimSpace(string(b))
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".mount-signed-*")
	require.NoError(t, err)
	defer os.RemoveAll(tmp)
	key := nixtest.NewKey(t, tmp, "cairn-toolchain-1")
	nixtest.SignedCache(t, tc.Store, filepath.Join(tmp, "cache"), key, "zstd", tc.StorePath)
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "key.pub"), []byte(key.Public+"\n"), 0o644))
	os.RemoveAll(dir)
	require.NoError(t, os.Rename(tmp, dir))
	return cache, key.Public
}

// goBin is the go command inside the toolchain's store path.
func (fx *mountFixture) goBin() string {
	return filepath.Join("golang.org", "toolchain@v0.0.1-go"+fx.tc.Version+".linux-amd64", "bin", "go")
}

// narHashOf returns a path's NarHash from the signed cache, as hex.
func narHashHex(t *testing.T, cache, storePath string) string {
	t.Helper()
	v := nixtest.NarInfoField(t, cache, storePath, "NarHash")
	b, err := nixbase32.DecodeString(strings.TrimPrefix(v, "sha256:"))
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

func narHashNix32(t *testing.T, cache, storePath string) string {
	t.Helper()
	return strings.TrimPrefix(nixtest.NarInfoField(t, cache, storePath, "NarHash"), "sha256:")
}

// isMounted reports whether dir is a mount point.
func isMounted(t testing.TB, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// waitMounted waits until dir is a mount showing store/.
func waitMounted(t testing.TB, dir string, out fmt.Stringer) {
	t.Helper()
	require.Eventually(t, func() bool {
		if !isMounted(t, dir) {
			return false
		}
		_, err := os.Stat(filepath.Join(dir, "store"))
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "%s never mounted:\n%s", dir, out)
}

// mountProc is a running `cairn mount`.
type mountProc struct {
	dir    string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan error
}

// startMount runs `cairn mount DIR args...`; it is killed and unmounted
// when the test ends.
func startMount(t *testing.T, args ...string) *mountProc {
	t.Helper()
	nixtest.RequireFUSE(t)
	m := &mountProc{dir: filepath.Join(t.TempDir(), "mnt"), out: &syncBuffer{}, exited: make(chan error, 1)}
	m.cmd = exec.Command(cairnBin, append([]string{"mount", m.dir}, args...)...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	require.NoError(t, m.cmd.Start())
	go func() { m.exited <- m.cmd.Wait() }()
	t.Cleanup(func() {
		m.cmd.Process.Kill()
		exec.Command("fusermount3", "-u", "-z", m.dir).Run()
		if t.Failed() {
			t.Logf("cairn mount output:\n%s", m.out.String())
		}
	})
	return m
}

// wait requires the process to exit within a minute and returns its error.
func (m *mountProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-m.exited:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("cairn mount did not exit:\n%s", m.out.String())
		return nil
	}
}

// restoreNAR unpacks a NAR with the real nix-store --restore.
func restoreNAR(t *testing.T, nar []byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	cmd := exec.Command("nix-store", "--restore", dir)
	cmd.Env = nixtest.Env(t)
	cmd.Stdin = bytes.NewReader(nar)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "nix-store --restore: %s", out)
	return dir
}

// requireMountShows checks a mount against the fixture: every small
// path's tree against nix-store --restore of its NAR, every NAR's sha256
// against its NarHash, the narinfos, a binary from the toolchain that
// runs, and writes that fail with EROFS.
func requireMountShows(t *testing.T, fx *mountFixture, dir string) {
	t.Helper()
	for _, p := range fx.paths {
		base := filepath.Base(p)
		t.Run(base[33:], func(t *testing.T) {
			nar := nixtest.DumpNAR(t, filepath.Join(fx.store, p))
			nixtest.RequireSameTree(t, restoreNAR(t, nar), filepath.Join(dir, "store", base))
			sum, err := exec.Command("sha256sum", filepath.Join(dir, "nar", narHashNix32(t, fx.cache, p)+".nar")).Output()
			require.NoError(t, err)
			require.Equal(t, narHashHex(t, fx.cache, p), strings.Fields(string(sum))[0], "sha256sum nar/<h>.nar is NarHash")
			ni, err := os.ReadFile(filepath.Join(dir, "narinfo", nixtest.HashPart(t, p)+".narinfo"))
			require.NoError(t, err)
			require.Contains(t, string(ni), "StorePath: "+p+"\n")
			require.Contains(t, string(ni), "NarHash: sha256:"+narHashNix32(t, fx.cache, p)+"\n")
		})
	}
	t.Run("toolchain binary runs", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(dir, "store", filepath.Base(fx.tc.StorePath), fx.goBin()), "version")
		// Telemetry off, or go leaves a process writing counters behind.
		home := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(home, "go", "telemetry"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(home, "go", "telemetry", "mode"), []byte("off\n"), 0o644))
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "HOME="+home, "XDG_CONFIG_HOME="+home)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, "go version go"+fx.tc.Version+" linux/amd64\n", string(out))
	})
	t.Run("writes get EROFS", func(t *testing.T) {
		tree := filepath.Join(dir, "store", filepath.Base(fx.paths[len(fx.paths)-1]))
		for _, op := range []func() error{
			func() error { return os.WriteFile(filepath.Join(tree, "new"), []byte("x"), 0o644) },
			func() error { return os.WriteFile(filepath.Join(tree, "a"), []byte("x"), 0o644) },
			func() error { return os.Mkdir(filepath.Join(dir, "store", "new"), 0o755) },
			func() error { return os.Remove(filepath.Join(tree, "a")) },
			func() error { return os.Chmod(filepath.Join(tree, "a"), 0o777) },
		} {
			require.ErrorIs(t, op(), syscall.EROFS)
		}
		out, err := exec.Command("touch", filepath.Join(tree, "a")).CombinedOutput()
		require.Error(t, err)
		require.Contains(t, string(out), "Read-only file system")
	})
}

// rangeProxy forwards to cairn and records the NAR requests and how many
// NAR bytes went through.
type rangeProxy struct {
	*httputil.ReverseProxy
	mu       sync.Mutex
	narReqs  []string
	narBytes int64
}

func (p *rangeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/nar/") {
		p.mu.Lock()
		p.narReqs = append(p.narReqs, r.Method+" "+r.URL.Path+" Range="+r.Header.Get("Range")+" Auth="+r.Header.Get("Authorization"))
		p.mu.Unlock()
		w = &countingResponse{ResponseWriter: w, p: p}
	}
	p.ReverseProxy.ServeHTTP(w, r)
}

func (p *rangeProxy) stats() ([]string, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.narReqs...), p.narBytes
}

type countingResponse struct {
	http.ResponseWriter
	p *rangeProxy
}

func (c *countingResponse) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.p.mu.Lock()
	c.p.narBytes += int64(n)
	c.p.mu.Unlock()
	return n, err
}

// nixPullAuth is nixPull with a netrc file holding a read token.
func nixPullAuth(t *testing.T, url, key, token string, paths ...string) {
	t.Helper()
	netrc := filepath.Join(t.TempDir(), "netrc")
	u := strings.TrimPrefix(url, "http://")
	host, _, _ := strings.Cut(u, ":")
	require.NoError(t, os.WriteFile(netrc, []byte("machine "+host+"\nlogin cairn\npassword "+token+"\n"), 0o600))
	store := filepath.Join(t.TempDir(), "client")
	args := append([]string{"copy", "--from", url, "--to", store,
		"--option", "trusted-public-keys", key, "--option", "netrc-file", netrc,
		"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0"}, paths...)
	cmd := exec.Command("nix", args...)
	cmd.Env = nixtest.Env(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "nix copy through cairn:\n%s", out)
}

// TestMount pulls a closure through `cairn serve --mount` and checks the
// same view three ways: inside the server, from a stand-alone mount over
// HTTP, and from a stand-alone mount of the data directory once the
// server has stopped.
func TestMount(t *testing.T) {
	nixtest.RequireFUSE(t)
	fx := mountFixtures(t)
	up, upTC := nixtest.ServeCache(t, fx.cache), nixtest.ServeCache(t, fx.tcCache)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("read "+mountToken+"\n"), 0o600))
	served := filepath.Join(t.TempDir(), "served")
	c := startCairn(t, "--upstream", up.URL, "--upstream", upTC.URL, "--trusted-key", fx.key.Public, "--trusted-key", fx.tcKey,
		"--tokens-file", tokens, "--read-auth", "--mount", served)
	waitMounted(t, served, c.out)
	entries, err := os.ReadDir(filepath.Join(served, "store"))
	require.NoError(t, err)
	require.Empty(t, entries, "nothing is stored yet")

	// Paths arrive while mounted: the closure through nix, the toolchain
	// through a prefetch that GET of its narinfo starts.
	nixPullAuth(t, c.URL, c.PubKey, mountToken, fx.paths...)
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("cairn:"+mountToken))
	status, _, _ := c.get(t, "GET", "/"+nixtest.HashPart(t, fx.tc.StorePath)+".narinfo", "Authorization", auth)
	require.Equal(t, 200, status)
	goBin := filepath.Join(served, "store", filepath.Base(fx.tc.StorePath), fx.goBin())
	require.Eventually(t, func() bool { _, err := os.Stat(goBin); return err == nil }, 2*time.Minute, 100*time.Millisecond,
		"the toolchain never appeared in the mount")

	t.Run("serve --mount", func(t *testing.T) { requireMountShows(t, fx, served) })

	t.Run("remote", func(t *testing.T) {
		target, err := url.Parse(c.URL)
		require.NoError(t, err)
		proxy := &rangeProxy{ReverseProxy: httputil.NewSingleHostReverseProxy(target)}
		srv := &http.Server{Handler: proxy}
		ln := listenLocal(t)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		remoteURL := "http://" + ln.Addr().String()

		bad := startMount(t, "--remote", remoteURL, "--token", "wrong-token")
		require.Error(t, bad.wait(t), "a wrong token is refused at mount time")
		require.Contains(t, bad.out.String(), "check --token")

		m := startMount(t, "--remote", remoteURL, "--token", mountToken, "--cache-mb", "64")
		waitMounted(t, m.dir, m.out)

		// One small file of the toolchain costs a block or two, not its NAR.
		readme, err := os.ReadFile(filepath.Join(m.dir, "store", filepath.Base(fx.tc.StorePath), filepath.Dir(filepath.Dir(fx.goBin())), "VERSION"))
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(string(readme), "go"+fx.tc.Version), "%s", readme)
		_, sent := proxy.stats()
		require.Less(t, sent, int64(1<<20), "NAR bytes fetched to read VERSION from a %d-byte NAR", fx.tc.NarSize)

		requireMountShows(t, fx, m.dir)
		reqs, _ := proxy.stats()
		require.NotEmpty(t, reqs)
		for _, r := range reqs {
			if strings.HasPrefix(r, "GET ") {
				require.Contains(t, r, "Range=bytes=", "NARs are only fetched in ranges")
			}
			require.Contains(t, r, "Auth=Basic ", "the token goes with every request")
		}
		// The same file has the same inode number in both mounts.
		p := filepath.Join("store", filepath.Base(fx.tc.StorePath), fx.goBin())
		require.Equal(t, inoOf(t, filepath.Join(served, p)), inoOf(t, filepath.Join(m.dir, p)))

		out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput()
		require.NoError(t, err, "fusermount3 -u: %s", out)
		require.NoError(t, m.wait(t), "cairn mount exits cleanly after fusermount3 -u:\n%s", m.out.String())
		require.False(t, isMounted(t, m.dir))
	})

	t.Run("data directory in use", func(t *testing.T) {
		m := startMount(t, "--data", c.Data)
		require.Error(t, m.wait(t))
		require.Contains(t, m.out.String(), "locked by a running cairn")
		require.False(t, isMounted(t, m.dir))
	})

	c.stop(t)
	require.False(t, isMounted(t, served), "SIGTERM unmounts the server's mount")

	t.Run("data directory", func(t *testing.T) {
		m := startMount(t, "--data", c.Data)
		waitMounted(t, m.dir, m.out)
		requireMountShows(t, fx, m.dir)
		require.NoError(t, m.cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, m.wait(t), "cairn mount exits cleanly on SIGTERM:\n%s", m.out.String())
		require.False(t, isMounted(t, m.dir))
	})
}

func TestMountRefusesBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no mount point", []string{"mount", "--data", "x"}, "no mount point"},
		{"no source", []string{"mount", "dir"}, "either --data DATADIR or --remote URL"},
		{"both sources", []string{"mount", "dir", "--data", "x", "--remote", "http://h:1"}, "either --data DATADIR or --remote URL"},
		{"two mount points", []string{"mount", "a", "b", "--data", "x"}, "unexpected arguments"},
		{"not a data directory", []string{"mount", "dir", "--data", "/nonexistent-cairn-data"}, "not a cairn data directory"},
		{"bad remote", []string{"mount", "dir", "--remote", "box:8501"}, "want http://host:port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tc.args, &stderr, &stderr)
			require.Equal(t, 1, code, "%s", stderr.String())
			require.Contains(t, stderr.String(), tc.want)
		})
	}
}

func inoOf(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

// listenLocal listens on a free loopback port.
func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}
