package seed_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"

	"cairn/appliance"
	"cairn/appliance/narinfo"
	"cairn/appliance/seed"
	"cairn/appliance/tokens"
	"cairn/httpd"
)

// testNAR is a NAR made in Go: one regular file of seeded random bytes
// (compressible when text is set), so tests need no Nix.
func testNAR(t testing.TB, seedN uint64, size int) []byte {
	t.Helper()
	content := make([]byte, size)
	r := rand.New(rand.NewPCG(seedN, uint64(size)))
	for i := range content {
		content[i] = byte(r.Uint32())
	}
	var buf bytes.Buffer
	w, err := nar.NewWriter(&buf)
	require.NoError(t, err)
	require.NoError(t, w.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeRegular, Size: int64(size)}))
	_, err = w.Write(content)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// storePath is a valid store path for a test name.
func storePath(name string) string {
	h := sha256.Sum256([]byte(name))
	return "/nix/store/" + nixbase32.EncodeToString(h[:20]) + "-" + name
}

func base(p string) string { return strings.TrimPrefix(p, "/nix/store/") }

func hashOf(p string) string { return base(p)[:32] }

// keys are the test's signing keys: cairn's, an upstream's, another cairn's.
type keys struct {
	cairn, upstream, other signature.SecretKey
}

var (
	keysOnce sync.Once
	testKeys keys
)

func getKeys(t testing.TB) keys {
	keysOnce.Do(func() {
		mk := func(name string) signature.SecretKey {
			sk, _, err := signature.GenerateKeypair(name, nil)
			require.NoError(t, err)
			return sk
		}
		// Both cairns carry the same key name, as the end-to-end tests do.
		testKeys = keys{cairn: mk("cairn-test-1"), upstream: mk("upstream-1"), other: mk("cairn-test-1")}
	})
	return testKeys
}

func pub(sk signature.SecretKey) signature.PublicKey { return sk.ToPublicKey() }

// store is an open store with paths in it.
type store struct {
	*appliance.Store
	dir   string
	key   signature.SecretKey
	nars  map[string][]byte // by store path
	infos map[string]*narinfo.Info
}

func newStore(t testing.TB, key signature.SecretKey) *store {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: dir, RecompressDelay: -1})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return &store{Store: s, dir: dir, key: key, nars: map[string][]byte{}, infos: map[string]*narinfo.Info{}}
}

// add ingests a path signed by the upstream key, as a pull would record it.
func (s *store) add(t testing.TB, name string, narBytes []byte, refs ...string) string {
	t.Helper()
	p := storePath(name)
	info := &narinfo.Info{StorePath: p, URL: "nar/x.nar", Compression: "none", NarHash: sha256.Sum256(narBytes), NarSize: uint64(len(narBytes))}
	for _, r := range refs {
		info.References = append(info.References, base(r))
	}
	info.Sign(getKeys(t).upstream)
	rec := appliance.NewRecord(info, s.key, "test")
	_, err := s.Ingest(context.Background(), appliance.Want{Info: rec}, bytes.NewReader(narBytes), appliance.CompressionNone)
	require.NoError(t, err)
	s.nars[p], s.infos[p] = narBytes, info
	return p
}

// closure is a test closure: root references lib and leaf, lib
// references leaf.
type closure struct {
	root, lib, leaf string
}

func (s *store) addClosure(t testing.TB, tag string) closure {
	t.Helper()
	leaf := s.add(t, "leaf-"+tag, testNAR(t, 1, 300<<10))
	lib := s.add(t, "lib-"+tag, testNAR(t, 2, 90<<10), leaf)
	root := s.add(t, "root-"+tag, testNAR(t, 3, 5<<10), lib, leaf)
	return closure{root: root, lib: lib, leaf: leaf}
}

func (c closure) paths() []string { return []string{c.root, c.lib, c.leaf} }

// drive returns a fresh drive directory.
func drive(t testing.TB) string { return filepath.Join(t.TempDir(), "seed") }

func exportLocal(t testing.TB, s *store, dir string, roots ...string) *seed.ExportReport {
	t.Helper()
	rep, err := seed.Export(context.Background(), seed.ExportConfig{Dir: dir, Source: seed.NewLocal(s.Store, s.key), Roots: roots, Tool: "cairn test"})
	require.NoError(t, err)
	return rep
}

// narFile is the drive file of a path's NAR.
func narFile(t testing.TB, dir, p string) string {
	t.Helper()
	info := readInfo(t, dir, p)
	return filepath.Join(dir, filepath.FromSlash(info.URL))
}

// readInfo parses a path's narinfo on a drive.
func readInfo(t testing.TB, dir, p string) *narinfo.Info {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, hashOf(p)+".narinfo"))
	require.NoError(t, err)
	info, err := narinfo.Parse(b)
	require.NoError(t, err)
	return info
}

// flipByte changes one byte in the middle of a file.
func flipByte(t testing.TB, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x40
	require.NoError(t, os.WriteFile(file, b, 0o644))
}

// copyDrive copies a drive so that a test can damage it.
func copyDrive(t testing.TB, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	require.NoError(t, os.CopyFS(dst, os.DirFS(dir)))
	return dst
}

// decodeZstd decodes a .nar.zst file.
func decodeZstd(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	defer dec.Close()
	out, err := dec.DecodeAll(b, nil)
	require.NoError(t, err)
	return out
}

// server is an in-process cairn serving a store over HTTP with tokens.
type server struct {
	URL string
	svc *appliance.Service
}

const (
	adminToken = "admin-token-for-seed-tests"
	writeToken = "write-token-for-seed-tests"
	readToken  = "read-token-for-seed-tests"
)

func serve(t testing.TB, s *store) *server {
	t.Helper()
	svc, err := appliance.NewService(s.Store, appliance.ServiceConfig{Key: s.key})
	require.NoError(t, err)
	toks, err := tokens.Parse([]byte("admin " + adminToken + "\nwrite " + writeToken + "\nread " + readToken + "\n"))
	require.NoError(t, err)
	srv := httpd.New(httpd.Config{Service: svc, Tokens: toks})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		svc.Close()
	})
	return &server{URL: "http://" + ln.Addr().String(), svc: svc}
}

func remote(t testing.TB, url, token string) *seed.Remote {
	t.Helper()
	r, err := seed.NewRemote(seed.RemoteConfig{URL: url, Token: token})
	require.NoError(t, err)
	return r
}

// stored lists a store's path basenames.
func stored(t testing.TB, s *store) []string {
	t.Helper()
	paths, err := seed.NewLocal(s.Store, s.key).Stored(context.Background())
	require.NoError(t, err)
	return paths
}
