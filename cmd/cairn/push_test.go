package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

const (
	writeToken = "write-token-for-tests"
	adminToken = "admin-token-for-tests"
	readToken  = "read-token-for-tests"
)

// pushCairn starts a push-only cairn with read, write and admin tokens.
func pushCairn(t *testing.T, extra ...string) *cairnProc {
	t.Helper()
	toks := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(toks, []byte(fmt.Sprintf("# test tokens\nwrite %s\nadmin %s\nread %s\n", writeToken, adminToken, readToken)), 0o600))
	return startCairn(t, append([]string{"--upstream", "none", "--tokens-file", toks}, extra...)...)
}

// nixPush runs nix with the closure's store as its store and a netrc
// holding token (none when token is ""), and returns its output and error.
func nixPush(t *testing.T, store, token string, args ...string) (string, error) {
	t.Helper()
	netrc := filepath.Join(t.TempDir(), "netrc")
	content := ""
	if token != "" {
		content = "machine 127.0.0.1 login cairn password " + token + "\n"
	}
	require.NoError(t, os.WriteFile(netrc, []byte(content), 0o600))
	cmd := exec.Command("nix", append(append([]string{}, args...),
		"--store", store, "--option", "netrc-file", netrc,
		"--option", "narinfo-cache-negative-ttl", "0", "--option", "narinfo-cache-positive-ttl", "0")...)
	cmd.Env = nixtest.Env(t)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPushWithTokens(t *testing.T) {
	f := fixtures(t)
	c := pushCairn(t)
	root := f.closure.Root()

	// Without a token nothing is stored.
	out, err := nixPush(t, f.closure.Store, "", "copy", "--to", c.URL, root)
	require.Error(t, err, "a push without a token must fail:\n%s", out)
	out, err = nixPush(t, f.closure.Store, readToken, "copy", "--to", c.URL, root)
	require.Error(t, err, "a read token may not push:\n%s", out)
	status, hdr, _ := c.get(t, "PUT", "/"+hashPart(root)+".narinfo")
	require.Equal(t, 401, status)
	require.Contains(t, hdr.Get("WWW-Authenticate"), "Basic")

	// With a write token the closure arrives, and again is fine.
	for range 2 {
		out, err = nixPush(t, f.closure.Store, writeToken, "copy", "--to", c.URL, root)
		require.NoError(t, err, "nix copy --to cairn:\n%s", out)
	}

	// A fresh client pulls it back, trusting only cairn's key.
	store, out, err := nixPull(t, c.URL, c.PubKey, root)
	require.NoError(t, err, "pull the pushed closure:\n%s", out)
	got := nixtest.Run(t, "nix-store", "--store", store, "-qR", root)
	for _, p := range f.closure.Paths {
		require.Contains(t, string(got), p)
	}

	// Deleting needs an admin token.
	del := "/" + hashPart(root) + ".narinfo"
	require.Equal(t, 403, c.do(t, "DELETE", del, writeToken))
	require.Equal(t, 401, c.do(t, "DELETE", del, ""))
	require.Equal(t, 204, c.do(t, "DELETE", del, adminToken))
	status, _, _ = c.get(t, "GET", del)
	require.Equal(t, 404, status)
	c.stop(t)
	st := openStats(t, c.Data)
	require.EqualValues(t, len(f.closure.Paths)-1, st.NarInfos)
	require.EqualValues(t, len(f.closure.Paths)-1, st.NARs)
}

// do sends a bodiless request with a token and returns the status.
func (c *cairnProc) do(t *testing.T, method, path, token string) int {
	t.Helper()
	req, err := http.NewRequest(method, c.URL+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestPushBuildLog(t *testing.T) {
	f := fixtures(t)
	c := pushCairn(t)
	drv, out := f.closure.BuildWithLog(t, "cairn-log-test")
	o, err := nixPush(t, f.closure.Store, writeToken, "copy", "--to", c.URL, out)
	require.NoError(t, err, "nix copy --to:\n%s", o)
	o, err = nixPush(t, f.closure.Store, writeToken, "store", "copy-log", "--to", c.URL, drv)
	require.NoError(t, err, "nix store copy-log:\n%s", o)
	// nix log finds the derivation through the output's narinfo (Deriver).
	cmd := exec.Command("nix", "log", "--store", c.URL, out)
	cmd.Env = nixtest.Env(t)
	logOut, err := cmd.CombinedOutput()
	require.NoError(t, err, "nix log --store %s:\n%s", c.URL, logOut)
	require.Contains(t, string(logOut), "building cairn-log-test")
	status, _, body := c.get(t, "GET", "/log/"+filepath.Base(drv))
	require.Equal(t, 200, status)
	require.Contains(t, string(body), "building cairn-log-test")
}

// fileHash makes an upload name as Nix does: the nix32 sha256 of a file.
func fileHash(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return nixbase32.EncodeToString(sum[:])
}

// put sends a PUT with the write token.
func (c *cairnProc) put(t *testing.T, path string, body []byte, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("PUT", c.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.SetBasicAuth("cairn", token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func TestPushBadUploadsLeaveNoTrace(t *testing.T) {
	f := fixtures(t)
	c := pushCairn(t)
	src := f.closure.Paths[2] // the source tree, no references
	nar := f.dumpNAR(t, src)
	ni, err := os.ReadFile(filepath.Join(f.plain, hashPart(src)+".narinfo"))
	require.NoError(t, err)
	narName := "/nar/" + fileHash("bad uploads") + ".nar"
	other := hashPart(f.closure.Paths[1])

	for _, tc := range []struct {
		name   string
		path   string
		body   []byte
		reason string
	}{
		{"truncated NAR", narName, nar[:len(nar)-1], "NAR"},
		{"its narinfo", "/" + hashPart(src) + ".narinfo", ni, "no uploaded NAR"},
		{"garbage body", narName, []byte("this is not a NAR at all"), "NAR"},
		{"garbage xz body", "/nar/" + fileHash("xz") + ".nar.xz", []byte("not xz"), ""},
		{"URL hash differs from StorePath", "/" + other + ".narinfo", ni, "StorePath"},
		{"malformed narinfo", "/" + hashPart(src) + ".narinfo", []byte("StorePath: nonsense\n"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := c.put(t, tc.path, tc.body, writeToken)
			require.Equal(t, 400, status, body)
			require.Contains(t, body, tc.reason)
			require.Equal(t, 1, strings.Count(body, "\n"), "one-line reason: %q", body)
		})
	}

	// A good NAR, then narinfos that lie about it.
	status, body := c.put(t, narName, nar, writeToken)
	require.Equal(t, 200, status, body)
	wrongHash := bytes.Replace(ni, []byte("NarHash: sha256:"), []byte("NarHash: sha256:1"), 1)
	wrongHash = append(wrongHash[:bytes.Index(wrongHash, []byte("NarHash: "))+len("NarHash: sha256:")+52], wrongHash[bytes.Index(wrongHash, []byte("NarHash: "))+len("NarHash: sha256:")+53:]...)
	bigger := bytes.Replace(ni, []byte(fmt.Sprintf("NarSize: %d", len(nar))), []byte(fmt.Sprintf("NarSize: %d", len(nar)+1)), 1)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"NarHash does not match", wrongHash},
		{"NarSize larger than the body", bigger},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := c.put(t, "/"+hashPart(src)+".narinfo", tc.body, writeToken)
			require.Equal(t, 400, status, body)
		})
	}
	status, _, _ = c.get(t, "HEAD", narName)
	require.Equal(t, 200, status, "HEAD of an uploaded NAR's URL")
	status, _, _ = c.get(t, "GET", "/"+hashPart(src)+".narinfo")
	require.Equal(t, 404, status, "no narinfo was stored")
	c.stop(t)

	st := openStats(t, c.Data)
	require.Zero(t, st.NarInfos)
	require.EqualValues(t, 1, st.NARs, "only the good NAR, waiting for its narinfo")
}

func TestPushUnnamedNARIsDropped(t *testing.T) {
	f := fixtures(t)
	c := pushCairn(t, "--upload-grace", "1s")
	nar := f.dumpNAR(t, f.closure.Paths[2])
	status, body := c.put(t, "/nar/"+fileHash("unnamed")+".nar", nar, writeToken)
	require.Equal(t, 200, status, body)
	require.Eventually(t, func() bool { return strings.Contains(c.out.String(), "dropped an uploaded NAR") },
		20*time.Second, 100*time.Millisecond)
	c.stop(t)
	st := openStats(t, c.Data)
	require.Zero(t, st.NARs)
	require.Zero(t, st.PhysicalBytes)
}

// TestPushBadNARWithStalledBodyEndsAtOnce: an upload found bad part-way is
// answered at once, even though its client stalls before sending the rest,
// instead of after the server's one-minute read timeout (or, for xz, after
// the xz process's two-second wait for its stdin feeder).
func TestPushBadNARWithStalledBodyEndsAtOnce(t *testing.T) {
	c := pushCairn(t)
	auth := base64.StdEncoding.EncodeToString([]byte("cairn:" + writeToken))
	for _, tc := range []struct {
		name, ext string
		body      []byte
	}{
		{"plain NAR", ".nar", bytes.Repeat([]byte("not a NAR "), 40000)},
		// An xz stream header, then garbage that xz rejects at once: the
		// goroutine feeding xz is then blocked reading the stalled body.
		// (fasthttp calls the handler only once some 10-20 KB arrived.)
		{"xz by the xz binary", ".nar.xz", append([]byte("\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46"), bytes.Repeat([]byte("garbage "), 2500)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(c.URL, "http://"))
			require.NoError(t, err)
			defer conn.Close()
			_, err = fmt.Fprintf(conn, "PUT /nar/%s%s HTTP/1.1\r\nHost: cairn\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\n\r\n",
				fileHash("stalled "+tc.name), tc.ext, auth, 64<<20)
			require.NoError(t, err)
			_, err = conn.Write(tc.body) // then nothing more
			require.NoError(t, err)

			start := time.Now()
			require.NoError(t, conn.SetReadDeadline(start.Add(50*time.Second)))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			elapsed := time.Since(start)
			if err == nil {
				resp.Body.Close()
				require.Equal(t, 400, resp.StatusCode)
				require.True(t, resp.Close, "Connection: close")
			} else {
				// The server may close with the client's unread bytes still
				// in its buffer, which resets the connection before the 400
				// is read.
				var ne net.Error
				require.False(t, errors.As(err, &ne) && ne.Timeout(), "no answer within %s: %v", elapsed, err)
			}
			require.Less(t, elapsed, 1500*time.Millisecond, "the bad upload was answered only after %s", elapsed)
		})
	}
	status, _, _ := c.get(t, "GET", "/healthz")
	require.Equal(t, 200, status)
}
