package nixtest

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/stretchr/testify/require"
)

// Toolchain is one Go toolchain release prepared as a Nix store path fixture.
//
// Everything lives under FixtureDir()/go<Version>/:
//
//	src/go<Version>/      Tree: the whole module zip extracted, as bench/make-fixtures.sh does
//	go<Version>.nar       NAR: `nix-store --dump` of Tree
//	xz/                   XZCache: file:// binary cache, compression=xz, with NAR listing
//	zst/                  ZstdCache: file:// binary cache, compression=zstd, with NAR listing
//	fixture.json          written last; its presence marks the fixture complete
//
// The store path itself is registered in the fixture-local Nix store Store
// (FixtureDir()/store), so on disk it is at Store+StorePath.
type Toolchain struct {
	Version   string // e.g. "1.25.1"
	Tree      string // extracted toolchain directory (Unix modes kept from the module zip)
	StorePath string // /nix/store/<hash>-go<version> (fixed-output, recursive sha256, like make-fixtures.sh)
	Store     string // root of the fixture-local Nix store holding StorePath (pass as --store)
	NAR       string // path of a file holding the raw NAR (nix-store --dump of Tree)
	NarSize   int64  // size of NAR in bytes
	NarHash   string // "sha256:<nix32>", as in a narinfo
	XZCache   string // file:// binary cache directory written with compression=xz
	ZstdCache string // file:// binary cache directory written with compression=zstd
	XZFile    string // the .nar.xz inside XZCache
	ZstdFile  string // the .nar.zst inside ZstdCache
	XZSize    int64  // size of XZFile in bytes
	ZstdSize  int64  // size of ZstdFile in bytes
}

// fixtureFormat versions fixture.json; bump it to force every fixture to be rebuilt.
const fixtureFormat = 1

// fixtureRecord is fixture.json. Paths are relative to the version's directory
// so that the fixture directory can be moved.
type fixtureRecord struct {
	Format    int    `json:"format"`
	Version   string `json:"version"`
	StorePath string `json:"storePath"`
	Tree      string `json:"tree"`
	NAR       string `json:"nar"`
	NarSize   int64  `json:"narSize"`
	NarHash   string `json:"narHash"`
	XZCache   string `json:"xzCache"`
	ZstdCache string `json:"zstdCache"`
	XZFile    string `json:"xzFile"`
	ZstdFile  string `json:"zstdFile"`
	XZSize    int64  `json:"xzSize"`
	ZstdSize  int64  `json:"zstdSize"`
}

// FixtureDir is where fixtures persist between runs: $CAIRN_FIXTURES, else
// os.UserCacheDir()/cairn-fixtures. It creates the directory.
func FixtureDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("CAIRN_FIXTURES")
	if dir == "" {
		cache, err := os.UserCacheDir()
		require.NoError(tb, err, "locating the user cache directory (or set CAIRN_FIXTURES)")
		dir = filepath.Join(cache, "cairn-fixtures")
	}
	dir, err := filepath.Abs(dir)
	require.NoError(tb, err, "fixture directory")
	require.NoError(tb, os.MkdirAll(dir, 0o755), "creating fixture directory")
	return dir
}

// Toolchains prepares (or reuses from the fixture cache) the given releases.
// Releases are prepared concurrently, at most GOMAXPROCS at a time; the result
// is in the order of versions.
func Toolchains(tb testing.TB, versions ...string) []Toolchain {
	tb.Helper()
	RequireNix(tb)
	_, err := exec.LookPath("go")
	require.NoError(tb, err, "the go command is needed to download toolchain modules")
	p := &preparer{root: FixtureDir(tb), env: Env(tb), logf: tb.Logf}

	out := make([]Toolchain, len(versions))
	errs := make([]error, len(versions))
	sem := make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for i, v := range versions {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i], errs[i] = p.toolchain(v)
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(tb, err, "go%s toolchain fixture", versions[i])
	}
	return out
}

// DumpNARFile streams `nix-store --dump path` into file (never holding the NAR
// in memory) and returns its size and "sha256:<nix32>" hash.
func DumpNARFile(tb testing.TB, path, file string) (size int64, narHash string) {
	tb.Helper()
	RequireNix(tb)
	size, narHash, err := dumpNAR(Env(tb), path, file)
	require.NoError(tb, err)
	return size, narHash
}

// preparer builds toolchain fixtures; its methods return errors instead of
// failing the test so that they can run in goroutines.
type preparer struct {
	root string
	env  []string
	logf func(format string, args ...any)
}

func (p *preparer) store() string { return filepath.Join(p.root, "store") }

func (p *preparer) toolchain(v string) (Toolchain, error) {
	if v == "" || strings.ContainsAny(v, "/\\ ") || strings.Contains(v, "..") {
		return Toolchain{}, fmt.Errorf("invalid Go version %q", v)
	}
	name := "go" + v
	unlock, err := lock(filepath.Join(p.root, name+".lock"), func() {
		p.logf("%s: another process is preparing this fixture; waiting for its lock", name)
	})
	if err != nil {
		return Toolchain{}, err
	}
	defer unlock()

	tc, err := p.load(v)
	if err == nil {
		p.logf("%s: reusing fixture %s (%s, NAR %d bytes, xz %d, zstd %d)", name, filepath.Dir(tc.NAR), tc.StorePath, tc.NarSize, tc.XZSize, tc.ZstdSize)
		return tc, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		p.logf("%s: cached fixture unusable, rebuilding: %v", name, err)
	}
	return p.prepare(v)
}

// load returns the recorded fixture for v if it is complete and intact.
func (p *preparer) load(v string) (Toolchain, error) {
	dir := filepath.Join(p.root, "go"+v)
	data, err := os.ReadFile(filepath.Join(dir, "fixture.json"))
	if err != nil {
		return Toolchain{}, fmt.Errorf("reading fixture record: %w", err)
	}
	var r fixtureRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return Toolchain{}, fmt.Errorf("parsing %s/fixture.json: %w", dir, err)
	}
	if r.Format != fixtureFormat || r.Version != v {
		return Toolchain{}, fmt.Errorf("fixture record has format %d version %q, want %d %q", r.Format, r.Version, fixtureFormat, v)
	}
	tc := Toolchain{
		Version:   v,
		Tree:      filepath.Join(dir, r.Tree),
		StorePath: r.StorePath,
		Store:     p.store(),
		NAR:       filepath.Join(dir, r.NAR),
		NarSize:   r.NarSize,
		NarHash:   r.NarHash,
		XZCache:   filepath.Join(dir, r.XZCache),
		ZstdCache: filepath.Join(dir, r.ZstdCache),
		XZFile:    filepath.Join(dir, r.XZFile),
		ZstdFile:  filepath.Join(dir, r.ZstdFile),
		XZSize:    r.XZSize,
		ZstdSize:  r.ZstdSize,
	}
	for _, f := range []struct {
		path string
		size int64
	}{{tc.NAR, tc.NarSize}, {tc.XZFile, tc.XZSize}, {tc.ZstdFile, tc.ZstdSize}} {
		st, err := os.Stat(f.path)
		if err != nil {
			return Toolchain{}, fmt.Errorf("fixture file: %w", err)
		}
		if st.Size() != f.size {
			return Toolchain{}, fmt.Errorf("%s has %d bytes, fixture record says %d", f.path, st.Size(), f.size)
		}
	}
	hashPart := strings.SplitN(filepath.Base(tc.StorePath), "-", 2)[0]
	for _, path := range []string{
		tc.Tree,
		filepath.Join(tc.Store, tc.StorePath),
		filepath.Join(tc.XZCache, hashPart+".narinfo"),
		filepath.Join(tc.ZstdCache, hashPart+".narinfo"),
	} {
		if _, err := os.Stat(path); err != nil {
			return Toolchain{}, fmt.Errorf("fixture file: %w", err)
		}
	}
	return tc, nil
}

// prepare builds the fixture for v from scratch. The caller holds the lock.
func (p *preparer) prepare(v string) (Toolchain, error) {
	name := "go" + v
	dir := filepath.Join(p.root, name)
	start := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		return Toolchain{}, fmt.Errorf("clearing %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Toolchain{}, fmt.Errorf("creating %s: %w", dir, err)
	}

	zipPath, err := p.moduleZip(v)
	if err != nil {
		return Toolchain{}, err
	}

	// Extract the whole zip into src/go<V>, as make-fixtures.sh does; the
	// directory's name becomes the store path's name.
	p.logf("%s: extracting %s", name, zipPath)
	tmpSrc := filepath.Join(dir, "src.tmp")
	if err := extractZip(zipPath, filepath.Join(tmpSrc, name)); err != nil {
		return Toolchain{}, err
	}
	if err := os.Rename(tmpSrc, filepath.Join(dir, "src")); err != nil {
		return Toolchain{}, fmt.Errorf("renaming extracted tree: %w", err)
	}
	tree := filepath.Join(dir, "src", name)

	p.logf("%s: nix-store --dump", name)
	narName := name + ".nar"
	narSize, narHash, err := dumpNAR(p.env, tree, filepath.Join(dir, narName))
	if err != nil {
		return Toolchain{}, err
	}

	p.logf("%s: nix-store --add-fixed into %s", name, p.store())
	out, err := runCmd(p.env, "nix-store", "--store", p.store(), "--add-fixed", "--recursive", "sha256", tree)
	if err != nil {
		return Toolchain{}, err
	}
	storePath := strings.TrimSpace(string(out))
	if filepath.Dir(storePath) != "/nix/store" || !strings.HasSuffix(storePath, "-"+name) {
		return Toolchain{}, fmt.Errorf("nix-store --add-fixed printed %q, want /nix/store/<hash>-%s", storePath, name)
	}

	r := fixtureRecord{
		Format:    fixtureFormat,
		Version:   v,
		StorePath: storePath,
		Tree:      filepath.Join("src", name),
		NAR:       narName,
		NarSize:   narSize,
		NarHash:   narHash,
		XZCache:   "xz",
		ZstdCache: "zst",
	}
	for _, c := range []struct {
		dir, compression string
		file             *string
		size             *int64
	}{
		{r.XZCache, "xz", &r.XZFile, &r.XZSize},
		{r.ZstdCache, "zstd", &r.ZstdFile, &r.ZstdSize},
	} {
		t0 := time.Now()
		p.logf("%s: nix copy to a file:// cache with compression=%s", name, c.compression)
		tmp := filepath.Join(dir, c.dir+".tmp")
		url := "file://" + tmp + "?compression=" + c.compression + "&write-nar-listing=true"
		if _, err := runCmd(p.env, "nix", "copy", "--store", p.store(), "--to", url, storePath); err != nil {
			return Toolchain{}, err
		}
		ni, err := readNarinfo(tmp, storePath)
		if err != nil {
			return Toolchain{}, err
		}
		if err := checkNarinfo(ni, storePath, c.compression, narSize, narHash); err != nil {
			return Toolchain{}, err
		}
		st, err := os.Stat(filepath.Join(tmp, filepath.FromSlash(ni.URL)))
		if err != nil {
			return Toolchain{}, fmt.Errorf("compressed NAR named by narinfo: %w", err)
		}
		if uint64(st.Size()) != ni.FileSize {
			return Toolchain{}, fmt.Errorf("%s: %d bytes, narinfo FileSize %d", ni.URL, st.Size(), ni.FileSize)
		}
		if err := os.Rename(tmp, filepath.Join(dir, c.dir)); err != nil {
			return Toolchain{}, fmt.Errorf("renaming %s cache: %w", c.compression, err)
		}
		*c.file = filepath.Join(c.dir, filepath.FromSlash(ni.URL))
		*c.size = st.Size()
		p.logf("%s: %s NAR is %d bytes (%.1fs)", name, c.compression, st.Size(), time.Since(t0).Seconds())
	}

	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return Toolchain{}, fmt.Errorf("encoding fixture record: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "fixture.json"), append(data, '\n')); err != nil {
		return Toolchain{}, err
	}
	tc, err := p.load(v)
	if err != nil {
		return Toolchain{}, fmt.Errorf("re-reading the fixture just written: %w", err)
	}
	p.logf("%s: fixture ready in %.1fs: %s, NAR %d bytes %s", name, time.Since(start).Seconds(), storePath, narSize, narHash)
	return tc, nil
}

// moduleZip returns the module cache's zip of the toolchain module for v,
// downloading it if needed.
func (p *preparer) moduleZip(v string) (string, error) {
	mod := "golang.org/toolchain@v0.0.1-go" + v + ".linux-" + runtime.GOARCH
	p.logf("go%s: go mod download %s", v, mod)
	// Run outside any module so the repository's go.mod and go.sum stay untouched.
	tmp, err := os.MkdirTemp("", "nixtest-moddownload-")
	if err != nil {
		return "", fmt.Errorf("temp dir for go mod download: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = tmp
	cmd.Env = append(withoutEnv(os.Environ(), "GOFLAGS"), "GO111MODULE=on")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var info struct{ Zip, Error string }
	_ = json.Unmarshal(stdout.Bytes(), &info) // on failure, -json still reports Error
	switch {
	case runErr != nil:
		return "", fmt.Errorf("go mod download -json %s: %w: %s %s", mod, runErr, info.Error, stderr.String())
	case info.Error != "" || info.Zip == "":
		return "", fmt.Errorf("go mod download -json %s: no zip: %q %s", mod, info.Error, stdout.String())
	}
	return info.Zip, nil
}

// extractZip extracts every entry of the zip at zipPath under dest the way
// make-fixtures.sh's Python does: files get 0755 if any execute bit is set in
// the entry's Unix mode, else 0644; nothing is stripped from the names.
func extractZip(zipPath, dest string) error {
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return fmt.Errorf("opening module zip: %w", err)
	}
	defer zr.Close()
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dest, err)
	}
	for _, f := range zr.File {
		if !filepath.IsLocal(f.Name) {
			return fmt.Errorf("module zip %s: unsafe entry name %q", zipPath, f.Name)
		}
		path := filepath.Join(dest, filepath.FromSlash(f.Name))
		if strings.HasSuffix(f.Name, "/") {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return fmt.Errorf("extracting %s: %w", f.Name, err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("extracting %s: %w", f.Name, err)
		}
		mode := os.FileMode(0o644)
		if (f.ExternalAttrs>>16)&0o111 != 0 {
			mode = 0o755
		}
		if err := extractFile(f, path, mode); err != nil {
			return fmt.Errorf("extracting %s: %w", f.Name, err)
		}
	}
	return nil
}

func extractFile(f *zip.File, path string, mode os.FileMode) error {
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, rc); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.Chmod(path, mode) // explicit, so the umask cannot change it
}

// dumpNAR streams `nix-store --dump path` into file via a temporary name and
// returns the NAR's size and "sha256:<nix32>" hash.
func dumpNAR(env []string, path, file string) (int64, string, error) {
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, "", fmt.Errorf("creating NAR file: %w", err)
	}
	defer os.Remove(tmp) // no-op after the rename
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	cmd := exec.Command("nix-store", "--dump", path)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = cw, &stderr
	if err := cmd.Run(); err != nil {
		f.Close()
		return 0, "", fmt.Errorf("nix-store --dump %s: %w: %s", path, err, stderr.String())
	}
	if err := f.Close(); err != nil {
		return 0, "", fmt.Errorf("writing NAR file: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return 0, "", fmt.Errorf("renaming NAR file: %w", err)
	}
	return cw.n, "sha256:" + nixbase32.EncodeToString(h.Sum(nil)), nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// runCmd runs a command with env and returns its stdout, or an error carrying its stderr.
func runCmd(env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// readNarinfo reads the narinfo for storePath from the file:// cache in dir.
func readNarinfo(dir, storePath string) (*narinfo.NarInfo, error) {
	hashPart := strings.SplitN(filepath.Base(storePath), "-", 2)[0]
	f, err := os.Open(filepath.Join(dir, hashPart+".narinfo"))
	if err != nil {
		return nil, fmt.Errorf("narinfo: %w", err)
	}
	defer f.Close()
	ni, err := narinfo.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", f.Name(), err)
	}
	return ni, nil
}

// checkNarinfo checks that a narinfo describes the NAR we dumped ourselves.
func checkNarinfo(ni *narinfo.NarInfo, storePath, compression string, narSize int64, narHash string) error {
	switch {
	case ni.StorePath != storePath:
		return fmt.Errorf("narinfo StorePath %q, want %q", ni.StorePath, storePath)
	case ni.Compression != compression:
		return fmt.Errorf("narinfo Compression %q, want %q", ni.Compression, compression)
	case ni.NarHash == nil || ni.NarHash.String() != narHash:
		return fmt.Errorf("narinfo NarHash %v, but nix-store --dump hashes to %s", ni.NarHash, narHash)
	case ni.NarSize != uint64(narSize):
		return fmt.Errorf("narinfo NarSize %d, but nix-store --dump wrote %d bytes", ni.NarSize, narSize)
	case ni.CA != "fixed:r:"+narHash:
		return fmt.Errorf("narinfo CA %q, want fixed:r:%s", ni.CA, narHash)
	}
	return nil
}

// writeFileAtomic writes data to a temporary name and renames it into place.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return nil
}

// lock takes an exclusive flock on path, calling waiting first if another
// process holds it. The returned function releases it.
func lock(path string, waiting func()) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	fd := int(f.Fd())
	err = syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		waiting()
		for err = syscall.Flock(fd, syscall.LOCK_EX); errors.Is(err, syscall.EINTR); {
			err = syscall.Flock(fd, syscall.LOCK_EX)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(fd, syscall.LOCK_UN)
		f.Close()
	}, nil
}

// withoutEnv drops the variable key from env.
func withoutEnv(env []string, key string) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return out
}
