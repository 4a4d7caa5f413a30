package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

// upstreamFixture is the signed binary caches the end-to-end tests pull
// from, made once with the real Nix client.
type upstreamFixture struct {
	closure   nixtest.Closure
	key       nixtest.Key // the upstreams' trusted key
	xz, zst   string      // the closure as xz and as zstd
	plain     string      // the closure uncompressed
	extra     string      // a path only the "second" cache has
	big       string      // about 1.5 MB, also only in the "second" cache
	second    string
	rogue     string // a path only the "untrusted" cache has, signed with another key
	untrusted string
}

var (
	fixtureOnce sync.Once
	fixture     *upstreamFixture
	fixtureDir  string // removed by TestMain when the tests end
)

func fixtures(t *testing.T) *upstreamFixture {
	t.Helper()
	nixtest.RequireNix(t)
	fixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-e2e")
		require.NoError(t, err)
		fixtureDir = dir
		f := &upstreamFixture{closure: nixtest.MakeClosure(t, dir, "e2e"), key: nixtest.NewKey(t, dir, "upstream-1")}
		other := nixtest.NewKey(t, dir, "rogue-1")
		f.xz, f.zst, f.plain = filepath.Join(dir, "up-xz"), filepath.Join(dir, "up-zst"), filepath.Join(dir, "up-plain")
		f.second, f.untrusted = filepath.Join(dir, "up-second"), filepath.Join(dir, "up-untrusted")
		nixtest.SignedCache(t, f.closure.Store, f.xz, f.key, "xz", f.closure.Root())
		nixtest.SignedCache(t, f.closure.Store, f.zst, f.key, "zstd", f.closure.Root())
		nixtest.SignedCache(t, f.closure.Store, f.plain, f.key, "none", f.closure.Root())
		f.extra = f.closure.AddText(t, "extra", "only in the second upstream", f.closure.Paths[1])
		f.big = f.closure.AddFile(t, "big", bytes.Repeat([]byte("cairn keeps what it is told to keep. "), 40000))
		nixtest.SignedCache(t, f.closure.Store, f.second, f.key, "bzip2", f.extra, f.big)
		f.rogue = f.closure.AddText(t, "rogue", "signed by nobody we trust")
		nixtest.SignedCache(t, f.closure.Store, f.untrusted, other, "xz", f.rogue)
		fixture = f
	})
	require.NotNil(t, fixture, "fixture setup failed in an earlier test")
	return fixture
}

func hashPart(p string) string { return filepath.Base(p)[:32] }

// dumpNAR is the NAR of a store path of the fixture's store.
func (f *upstreamFixture) dumpNAR(t *testing.T, p string) []byte {
	t.Helper()
	return nixtest.DumpNAR(t, filepath.Join(f.closure.Store, p))
}

func TestServePullsThroughColdThenWarm(t *testing.T) {
	f := fixtures(t)
	for _, tc := range []struct{ name, cache, ext string }{
		{"xz", f.xz, ".nar.xz"},
		{"zstd", f.zst, ".nar.zst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := nixtest.ServeCache(t, tc.cache)
			c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public)

			store, out, err := nixPull(t, c.URL, c.PubKey, f.closure.Root())
			require.NoError(t, err, "cold pull through cairn:\n%s", out)
			paths := nixtest.Run(t, "nix-store", "--store", store, "-qR", f.closure.Root())
			for _, p := range f.closure.Paths {
				require.Contains(t, string(paths), p)
			}
			require.Equal(t, len(f.closure.Paths), up.CountPrefix("GET", "/nar/"), "each NAR is fetched from upstream once")

			up.Stop()
			_, out, err = nixPull(t, c.URL, c.PubKey, f.closure.Root())
			require.NoError(t, err, "warm pull with the upstream stopped:\n%s", out)

			// The narinfo keeps the upstream's signature and adds cairn's.
			status, _, ni := c.get(t, "GET", "/"+hashPart(f.closure.Root())+".narinfo")
			require.Equal(t, 200, status)
			require.Contains(t, string(ni), "Sig: upstream-1:")
			require.Contains(t, string(ni), "Sig: cairn-test-1:")
			require.Contains(t, string(ni), "Compression: zstd\n")
			c.stop(t)
		})
	}
}

func TestServeSecondUpstreamAndTrust(t *testing.T) {
	f := fixtures(t)
	first := nixtest.ServeCache(t, f.xz)
	second := nixtest.ServeCache(t, f.second)
	rogue := nixtest.ServeCache(t, f.untrusted)
	c := startCairn(t, "--upstream", first.URL+"?priority=10", "--upstream", rogue.URL+"?priority=20",
		"--upstream", second.URL+"?priority=30", "--trusted-key", f.key.Public)

	// The second upstream serves what the first lacks.
	_, out, err := nixPull(t, c.URL, c.PubKey, f.extra)
	require.NoError(t, err, "pull a path only the second upstream has:\n%s", out)
	require.Equal(t, 1, first.Count("GET", "/"+hashPart(f.extra)+".narinfo"), "the first upstream was asked first")
	require.Equal(t, 1, second.CountPrefix("GET", "/nar/"))

	// A narinfo signed with an untrusted key is refused: 404, and no NAR.
	status, _, _ := c.get(t, "GET", "/"+hashPart(f.rogue)+".narinfo")
	require.Equal(t, 404, status)
	require.Equal(t, 1, rogue.Count("GET", "/"+hashPart(f.rogue)+".narinfo"))
	require.Zero(t, rogue.CountPrefix("GET", "/nar/"))
	_, _, err = nixPull(t, c.URL, c.PubKey, f.rogue)
	require.Error(t, err, "a path signed only by an untrusted key must not arrive")
	require.Eventually(t, func() bool { return strings.Contains(c.out.String(), "no valid signature from a trusted key") },
		5*time.Second, 50*time.Millisecond, "the refusal is logged")
}

func TestServeUpstreamDownIs5xx(t *testing.T) {
	f := fixtures(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String()
	ln.Close()
	c := startCairn(t, "--upstream", dead, "--trusted-key", f.key.Public)
	status, _, body := c.get(t, "GET", "/"+hashPart(f.closure.Root())+".narinfo")
	require.GreaterOrEqual(t, status, 500, "an unreachable upstream is never a 404: %s", body)
	require.Less(t, status, 600)
	status, _, _ = c.get(t, "GET", "/nix-cache-info")
	require.Equal(t, 200, status, "nix-cache-info answers whatever the upstreams do")
}

func TestServeRefusesUntrustedUpstreamConfig(t *testing.T) {
	cmd := exec.Command(cairnBin, "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--upstream", "http://127.0.0.1:9")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "serve must refuse an upstream without a trusted key")
	require.Contains(t, string(out), "--trusted-key")
	require.Contains(t, string(out), "--insecure-no-signatures")
}

func TestServeCoalescesColdNAR(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public, "--prefetch=false")
	src := f.closure.Paths[2] // the largest
	status, _, ni := c.get(t, "GET", "/"+hashPart(src)+".narinfo")
	require.Equal(t, 200, status)
	url := narinfoField(t, ni, "URL")
	require.Zero(t, up.CountPrefix("GET", "/nar/"), "no prefetch with --prefetch=false")

	want := f.dumpNAR(t, src)
	const clients = 20
	bodies := make([][]byte, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(c.URL + "/" + url)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			bodies[i], errs[i] = io.ReadAll(resp.Body)
		}()
	}
	wg.Wait()
	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	defer dec.Close()
	for i := range clients {
		require.NoError(t, errs[i], "client %d", i)
		got, err := dec.DecodeAll(bodies[i], nil)
		require.NoError(t, err, "client %d: the .nar.zst decodes", i)
		require.True(t, bytes.Equal(want, got), "client %d got the NAR", i)
	}
	require.Equal(t, 1, up.CountPrefix("GET", "/nar/"), "20 cold requests make one upstream fetch")
}

func TestServeHeadNarInfoFetchesNothing(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public)
	h := hashPart(f.closure.Paths[2])
	status, hdr, body := c.get(t, "HEAD", "/"+h+".narinfo")
	require.Equal(t, 200, status)
	require.Empty(t, body)
	require.NotEmpty(t, hdr.Get("Content-Length"))
	time.Sleep(300 * time.Millisecond)
	require.Zero(t, up.CountPrefix("GET", "/nar/"), "HEAD narinfo must not fetch the NAR")

	// GET does start the prefetch.
	status, _, _ = c.get(t, "GET", "/"+h+".narinfo")
	require.Equal(t, 200, status)
	require.Eventually(t, func() bool { return up.CountPrefix("GET", "/nar/") == 1 }, 10*time.Second, 20*time.Millisecond)
}

func TestServeRanges(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.zst)
	c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public)
	src := f.closure.Paths[2]
	want := f.dumpNAR(t, src)
	_, _, ni := c.get(t, "GET", "/"+hashPart(src)+".narinfo")
	narHash := strings.TrimPrefix(narinfoField(t, ni, "NarHash"), "sha256:")
	path := "/nar/" + narHash + ".nar"

	// Wait until stored: a full GET returns the NAR.
	status, hdr, full := c.get(t, "GET", path)
	require.Equal(t, 200, status)
	require.Equal(t, want, full)
	sum := sha256.Sum256(full)
	require.Equal(t, narHash, nixbase32.EncodeToString(sum[:]))

	size := len(want)
	for _, tc := range []struct {
		spec       string
		status     int
		start, end int // inclusive
	}{
		{"bytes=100-1099", 206, 100, 1099},
		{"bytes=0-0", 206, 0, 0},
		{fmt.Sprintf("bytes=%d-", size-10), 206, size - 10, size - 1},
		{"bytes=-500", 206, size - 500, size - 1},
		{fmt.Sprintf("bytes=%d-%d", size/2, size*2), 206, size / 2, size - 1},
		{fmt.Sprintf("bytes=%d-", size), 416, 0, 0},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			status, hdr, body := c.get(t, "GET", path, "Range", tc.spec)
			require.Equal(t, tc.status, status)
			if status == 416 {
				require.Equal(t, fmt.Sprintf("bytes */%d", size), hdr.Get("Content-Range"))
				return
			}
			require.Equal(t, want[tc.start:tc.end+1], body)
			require.Equal(t, fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, size), hdr.Get("Content-Range"))
		})
	}
	require.Equal(t, "bytes", hdr.Get("Accept-Ranges"))
	require.NotEmpty(t, hdr.Get("ETag"))
	require.Contains(t, hdr.Get("Cache-Control"), "immutable")

	// A range of the .nar.zst is the same slice of the full .nar.zst.
	status, _, zfull := c.get(t, "GET", "/nar/"+narHash+".nar.zst")
	require.Equal(t, 200, status)
	status, _, zpart := c.get(t, "GET", "/nar/"+narHash+".nar.zst", "Range", "bytes=10-20009")
	require.Equal(t, 206, status)
	require.Equal(t, zfull[10:20010], zpart)

	// If-Range: a range only while the ETag is still the one named.
	_, zhdr, _ := c.get(t, "HEAD", "/nar/"+narHash+".nar.zst")
	for _, tc := range []struct {
		name, ifRange string
		status        int
	}{
		{"current tag", zhdr.Get("ETag"), 206},
		{"raw NAR's tag", hdr.Get("ETag"), 200},
		{"weak tag", "W/" + zhdr.Get("ETag"), 200},
		{"date", "Sat, 05 Dec 2026 00:00:00 GMT", 200},
	} {
		t.Run("If-Range "+tc.name, func(t *testing.T) {
			status, _, body := c.get(t, "GET", "/nar/"+narHash+".nar.zst", "Range", "bytes=10-20009", "If-Range", tc.ifRange)
			require.Equal(t, tc.status, status)
			if status == 200 {
				require.Equal(t, zfull, body)
			} else {
				require.Equal(t, zfull[10:20010], body)
			}
		})
	}

	// HEAD of the NAR has its length and no body.
	status, hdr, body := c.get(t, "HEAD", path)
	require.Equal(t, 200, status)
	require.Empty(t, body)
	require.Equal(t, fmt.Sprint(size), hdr.Get("Content-Length"))

	// The listing is Nix's own.
	status, _, ls := c.get(t, "GET", "/"+hashPart(src)+".ls")
	require.Equal(t, 200, status)
	nixLs, err := os.ReadFile(filepath.Join(f.zst, hashPart(src)+".ls"))
	require.NoError(t, err)
	require.JSONEq(t, string(nixLs), string(ls))
}

func TestServeBadInput(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public)
	addr := strings.TrimPrefix(c.URL, "http://")
	good := hashPart(f.closure.Root())
	for _, tc := range []struct {
		name, request string
		status        int
	}{
		{"short hash", "GET /abc.narinfo HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bad alphabet", "GET /" + strings.Repeat("e", 32) + ".narinfo HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"traversal", "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"nar traversal", "GET /nar/../" + good + ".narinfo HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"encoded traversal", "GET /nar/%2e%2e/x.nar HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bad nar hash", "GET /nar/" + strings.Repeat("0", 51) + ".nar HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"unknown extension", "GET /" + good + ".tar HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"unknown nar extension", "GET /nar/" + strings.Repeat("0", 52) + ".nar.gz HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"oversized header", "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", 431},
		{"post", "POST /" + good + ".narinfo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = io.WriteString(conn, tc.request)
			require.NoError(t, err)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			require.Equal(t, tc.status, resp.StatusCode, "body %q", body)
			require.LessOrEqual(t, bytes.Count(body, []byte("\n")), 1, "one-line reason")
		})
	}
	require.Zero(t, up.Total(), "bad input never reaches an upstream")
}

// copyCache copies a binary cache directory so a test can damage it.
func copyCache(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "cache")
	require.NoError(t, os.CopyFS(dst, os.DirFS(src)))
	return dst
}

func TestServeFailsOverMidBody(t *testing.T) {
	f := fixtures(t)
	src := f.closure.Paths[2]
	first := nixtest.ServeCache(t, f.xz)
	second := nixtest.ServeCache(t, f.zst)
	c := startCairn(t, "--upstream", first.URL+"?priority=10", "--upstream", second.URL+"?priority=20",
		"--trusted-key", f.key.Public, "--prefetch=false")
	_, _, ni := c.get(t, "GET", "/"+hashPart(src)+".narinfo")
	narURL := "/" + narinfoField(t, ni, "URL")

	// The first body breaks twice part-way (once per try there), the second
	// upstream delivers the rest.
	first.CutNextNAR(64 << 10)
	go func() {
		require.Eventually(t, func() bool { return first.CountPrefix("GET", "/nar/") == 1 }, 10*time.Second, time.Millisecond)
		first.CutNextNAR(64 << 10)
	}()
	status, _, body := c.get(t, "GET", narURL)
	require.Equal(t, 200, status)
	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	defer dec.Close()
	got, err := dec.DecodeAll(body, nil)
	require.NoError(t, err)
	require.Equal(t, f.dumpNAR(t, src), got)
	require.Equal(t, 2, first.CountPrefix("GET", "/nar/"), "two tries at the first upstream")
	require.Equal(t, 1, second.CountPrefix("GET", "/nar/"), "then the second upstream")
}

func TestServeCutsClientWhenVerificationFails(t *testing.T) {
	f := fixtures(t)
	src := f.closure.Paths[2]
	cache := copyCache(t, f.plain)
	narFile := filepath.Join(cache, nixtest.NarInfoField(t, cache, src, "URL"))
	b, err := os.ReadFile(narFile)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x01 // same length, wrong NarHash
	require.NoError(t, os.WriteFile(narFile, b, 0o644))

	up := nixtest.ServeCache(t, cache)
	c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public, "--prefetch=false")
	_, _, ni := c.get(t, "GET", "/"+hashPart(src)+".narinfo")
	for _, path := range []string{"/" + narinfoField(t, ni, "URL"), strings.TrimSuffix("/"+narinfoField(t, ni, "URL"), ".zst")} {
		resp, err := http.Get(c.URL + path)
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Error(t, err, "%s: a NAR that fails verification must not arrive complete", path)
	}
	_, out, err := nixPull(t, c.URL, c.PubKey, src)
	require.Error(t, err, "nix must not accept it:\n%s", out)
	c.stop(t)

	st := openStats(t, c.Data)
	require.Zero(t, st.NARs, "nothing committed")
	require.Zero(t, st.NarInfos)
	require.Zero(t, st.PhysicalBytes)
}

// A Range on a NAR still arriving waits for its commit. A client that hangs
// up meanwhile ends the request (logged as 499) while the upstream still
// holds the NAR back, and the fetch goes on for later requests.
func TestServeRangeWaitEndsWhenClientLeaves(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.plain)
	c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public, "--prefetch=false")
	src := f.closure.Paths[2]
	_, _, ni := c.get(t, "GET", "/"+hashPart(src)+".narinfo")
	path := "/" + narinfoField(t, ni, "URL")
	release := up.HoldNextNAR(4096)

	conn, err := net.Dial("tcp", strings.TrimPrefix(c.URL, "http://"))
	require.NoError(t, err)
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: cairn\r\nRange: bytes=0-99\r\n\r\n", path)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return up.CountPrefix("GET", "/nar/") == 1 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the request waits for the commit
	conn.Close()
	gone := "path=" + path + " status=499"
	require.Eventually(t, func() bool { return strings.Contains(c.out.String(), gone) }, 5*time.Second, 50*time.Millisecond,
		"the request ended while the upstream held the NAR")

	release()
	status, _, body := c.get(t, "GET", path, "Range", "bytes=0-99")
	require.Equal(t, 206, status)
	require.Len(t, body, 100)
	require.Equal(t, 1, up.CountPrefix("GET", "/nar/"), "the fetch went on")
}

// Badger retries a memtable flush that fails forever, and its Close waits
// for that. With the data directory gone, SIGTERM still ends cairn within
// --close-wait, with an error that says so, and the log has Badger's reason.
func TestServeStopsWhenItsStoresCannotClose(t *testing.T) {
	f := fixtures(t)
	up := nixtest.ServeCache(t, f.xz)
	c := startCairn(t, "--upstream", up.URL, "--trusted-key", f.key.Public, "--prefetch=false", "--close-wait", "2s")
	status, _, narinfo := c.get(t, "GET", "/"+hashPart(f.closure.Paths[2])+".narinfo")
	require.Equal(t, 200, status)
	status, _, _ = c.get(t, "GET", "/"+narinfoField(t, narinfo, "URL"))
	require.Equal(t, 200, status) // the NAR's chunks wait in Badger's memtable
	require.NoError(t, os.RemoveAll(c.Data))

	start := time.Now()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-c.exited:
		require.Error(t, err, "cairn exits with an error when its stores did not close")
	case <-time.After(30 * time.Second):
		t.Fatalf("cairn did not stop within 30s of SIGTERM:\n%s", c.out.String())
	}
	require.Less(t, time.Since(start), 20*time.Second)
	require.Contains(t, c.out.String(), "stores did not close in time")
	require.Contains(t, c.out.String(), "badger: error flushing memtable")
}
