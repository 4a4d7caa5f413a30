package main

import (
	"bytes"
	"context"
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

	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

// cairnBin is the cairn binary the end-to-end tests run, built once.
var cairnBin string

func TestMain(m *testing.M) {
	if dir := os.Getenv(floorEnv); dir != "" {
		os.Exit(floorServe(dir))
	}
	dir, err := os.MkdirTemp("", "cairn-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cairnBin = filepath.Join(dir, "cairn")
	args := []string{"build", "-o", cairnBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build cairn:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cairnProc is a running `cairn serve`.
type cairnProc struct {
	URL    string
	Data   string
	PubKey string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan error
}

// startCairn runs `cairn serve` on a free loopback port with a fresh data
// directory (unless args set --data) and waits until it answers.
func startCairn(t testing.TB, args ...string) *cairnProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	c := &cairnProc{URL: "http://" + addr, Data: filepath.Join(t.TempDir(), "data"), out: &syncBuffer{}, exited: make(chan error, 1)}
	for i, a := range args {
		if a == "--data" {
			c.Data = args[i+1]
		}
	}
	full := append([]string{"serve", "--listen", addr, "--data", c.Data, "--key-name", "cairn-test-1"}, args...)
	c.cmd = exec.Command(cairnBin, full...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	require.NoError(t, c.cmd.Start())
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("cairn output:\n%s", c.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.URL + "/pubkey")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			c.PubKey = strings.TrimSpace(string(b))
			break
		}
		select {
		case err := <-c.exited:
			t.Fatalf("cairn serve exited before answering: %v\n%s", err, c.out.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "cairn did not answer within 30s:\n%s", c.out.String())
		time.Sleep(50 * time.Millisecond)
	}
	require.True(t, strings.HasPrefix(c.PubKey, "cairn-test-1:"), "GET /pubkey = %q", c.PubKey)
	return c
}

// stop sends SIGTERM and requires a clean exit.
func (c *cairnProc) stop(t testing.TB) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-c.exited:
		require.NoError(t, err, "cairn exit after SIGTERM:\n%s", c.out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("cairn did not stop within 30s of SIGTERM:\n%s", c.out.String())
	}
}

// get fetches path from cairn and returns status and body.
func (c *cairnProc) get(t testing.TB, method, path string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.URL+path, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "%s %s body", method, path)
	return resp.StatusCode, resp.Header, b
}

// narinfoField returns a field of a narinfo text.
func narinfoField(t *testing.T, narinfo []byte, key string) string {
	t.Helper()
	for _, line := range strings.Split(string(narinfo), "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return v
		}
	}
	t.Fatalf("narinfo has no %s:\n%s", key, narinfo)
	return ""
}

// nixPull copies paths from a binary cache URL into a fresh client store
// with signature checks on, trusting only key. It returns the client store
// and nix's output and error.
func nixPull(t *testing.T, url, key string, paths ...string) (string, string, error) {
	t.Helper()
	nixtest.RequireNix(t)
	store := filepath.Join(t.TempDir(), "client")
	args := append([]string{"copy", "--from", url, "--to", store,
		"--option", "trusted-public-keys", key,
		"--option", "narinfo-cache-negative-ttl", "0",
		"--option", "narinfo-cache-positive-ttl", "0"}, paths...)
	cmd := exec.Command("nix", args...)
	cmd.Env = nixtest.Env(t)
	out, err := cmd.CombinedOutput()
	return store, string(out), err
}
