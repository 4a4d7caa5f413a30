package fusefs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
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

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/cdc"
	"cairn/fusefs"
	"cairn/internal/nixtest"
)

// stored is one NAR ingested into a test store under a store path.
type stored struct {
	nar  nixtest.NAR
	base string // <hash>-<name>
}

func (s stored) hash() string { return s.base[:32] }

// storePathOf makes a valid store path basename for a name.
func storePathOf(name string) string {
	h := sha256.Sum256([]byte(name))
	return nixbase32.EncodeToString(h[:20]) + "-" + name
}

// openStore opens a fresh store in a temporary directory.
func openStore(t testing.TB) *appliance.Store {
	t.Helper()
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// ingest stores a NAR under a store path named after it.
func ingest(t testing.TB, s *appliance.Store, n nixtest.NAR) stored {
	t.Helper()
	st := stored{nar: n, base: storePathOf(n.Name)}
	info := &appliance.NarInfo{StorePath: "/nix/store/" + st.base, NarHash: n.Hash, NarSize: uint64(len(n.Bytes)),
		References: []string{st.base}, Sigs: []string{"test-1:c2ln"}, Source: "test"}
	_, err := s.Ingest(context.Background(), appliance.Want{NarHash: n.Hash, NarSize: info.NarSize, Info: info},
		bytes.NewReader(n.Bytes), appliance.CompressionNone)
	require.NoError(t, err, "ingest %s", n.Name)
	return st
}

// mount mounts src in a temporary directory until the test ends.
func mount(t testing.TB, src fusefs.Source, cfg fusefs.Config) *fusefs.Mount {
	t.Helper()
	nixtest.RequireFUSE(t)
	m, err := fusefs.New(filepath.Join(t.TempDir(), "mnt"), src, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

// restore unpacks a NAR with the real `nix-store --restore`.
func restore(t testing.TB, nar []byte) string {
	t.Helper()
	nixtest.RequireNix(t)
	dir := filepath.Join(t.TempDir(), "restored")
	cmd := exec.Command("nix-store", "--restore", dir)
	cmd.Env = nixtest.Env(t)
	cmd.Stdin = bytes.NewReader(nar)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "nix-store --restore: %s", out)
	return dir
}

// ino returns a file's inode number.
func ino(t testing.TB, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

// fakeRemote serves what a remote mount asks a cairn for, from a map of
// stored NARs, and records every request. Range requests get 206.
type fakeRemote struct {
	*httptest.Server
	token string

	mu      sync.Mutex
	paths   []stored
	reqs    []string // "METHOD PATH RANGE"
	narSent int64    // NAR body bytes sent
}

func newFakeRemote(t testing.TB, token string, paths ...stored) *fakeRemote {
	t.Helper()
	f := &fakeRemote{token: token, paths: paths}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeRemote) add(s stored) {
	f.mu.Lock()
	f.paths = append(f.paths, s)
	f.mu.Unlock()
}

func (f *fakeRemote) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

func (f *fakeRemote) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r.Method+" "+r.URL.Path+" "+r.Header.Get("Range"))
	paths := append([]stored(nil), f.paths...)
	f.mu.Unlock()
	if user, pass, ok := r.BasicAuth(); f.token != "" && (!ok || user != "cairn" || pass != f.token) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == "_cairn/paths" {
		for _, s := range paths {
			w.Write([]byte(s.base + "\n"))
		}
		return
	}
	for _, s := range paths {
		info := &narinfo.Info{StorePath: "/nix/store/" + s.base, URL: "nar/" + nixbase32.EncodeToString(s.nar.Hash[:]) + ".nar.zst",
			Compression: "zstd", NarHash: s.nar.Hash, NarSize: uint64(len(s.nar.Bytes)), References: []string{s.base}, Sigs: []string{"test-1:c2ln"}}
		switch p {
		case s.hash() + ".narinfo":
			w.Write(info.Marshal())
			return
		case s.hash() + ".ls":
			w.Write(lsOf(s.nar))
			return
		case "nar/" + nixbase32.EncodeToString(s.nar.Hash[:]) + ".nar":
			cw := &countingWriter{ResponseWriter: w}
			http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(s.nar.Bytes))
			f.mu.Lock()
			f.narSent += cw.n
			f.mu.Unlock()
			return
		}
	}
	http.NotFound(w, r)
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// lsOf is the .ls listing of a NAR, with file offsets, as cairn makes it.
func lsOf(n nixtest.NAR) []byte {
	p := cdc.NewListingParser()
	if _, err := p.Write(n.Bytes); err != nil {
		panic(err)
	}
	if err := p.Close(); err != nil {
		panic(err)
	}
	return cdc.ListingJSON(p.Entries())
}
