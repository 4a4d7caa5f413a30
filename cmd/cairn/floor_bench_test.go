package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance"
	"cairn/cdc"
)

// floorEnv, set to an xz binary cache directory, makes the test binary run
// floorServe on it instead of the tests: BenchmarkProxy's store-less floor.
const floorEnv = "CAIRN_BENCH_FLOOR_XZ"

// floorPath matches the narinfo and NAR paths the floor proxy serves.
var floorPath = regexp.MustCompile(`^/(?:nar/)?([0-9a-df-np-sv-z]{32})\.(narinfo|nar\.zst)$`)

// floorServe serves the file:// xz cache at dir as a zstd cache doing only
// the work every verifying proxy of that cache must do for a NAR: decode the
// xz, hash the NAR and compare with NarHash, wrap it in zstd frames (stored
// blocks, the cheapest there are) and send them. It stores nothing and
// fetches nothing ahead. It prints its URL on the first line of stdout and
// serves until killed, returning an exit code.
func floorServe(dir string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor proxy:", err)
		return 1
	}
	fmt.Printf("http://%s\n", ln.Addr())
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/nix-cache-info" {
			io.WriteString(w, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
			return
		}
		m := floorPath.FindStringSubmatch(r.URL.Path)
		if m == nil {
			http.NotFound(w, r)
			return
		}
		info, err := os.ReadFile(filepath.Join(dir, m[1]+".narinfo"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if m[2] == "narinfo" {
			w.Write(floorNarinfo(info, m[1]))
			return
		}
		if err := floorNAR(w, dir, info); err != nil {
			fmt.Fprintf(os.Stderr, "floor proxy: %s: %v\n", r.URL.Path, err)
			panic(http.ErrAbortHandler) // cut the client off: nothing unverified completes
		}
	}))
	fmt.Fprintln(os.Stderr, "floor proxy:", err)
	return 1
}

// floorNarinfo rewrites an upstream narinfo to name the floor's zstd NAR.
// The signature stays valid: it covers path, NarHash, NarSize and
// references, none of which change.
func floorNarinfo(info []byte, hash string) []byte {
	var out bytes.Buffer
	for line := range strings.Lines(string(info)) {
		switch key, _, _ := strings.Cut(line, ":"); key {
		case "URL":
			fmt.Fprintf(&out, "URL: nar/%s.nar.zst\n", hash)
		case "Compression":
			out.WriteString("Compression: zstd\n")
		case "FileHash", "FileSize":
		default:
			out.WriteString(line)
		}
	}
	return out.Bytes()
}

// floorNAR streams the NAR an upstream narinfo names as zstd frames to w and
// fails if its sha256 is not the narinfo's NarHash.
func floorNAR(w io.Writer, dir string, info []byte) error {
	var url, narHash string
	for line := range strings.Lines(string(info)) {
		if v, ok := strings.CutPrefix(line, "URL: "); ok {
			url = strings.TrimSpace(v)
		} else if v, ok := strings.CutPrefix(line, "NarHash: sha256:"); ok {
			narHash = strings.TrimSpace(v)
		}
	}
	want, err := nixbase32.DecodeString(narHash)
	if err != nil || !strings.HasSuffix(url, ".xz") {
		return fmt.Errorf("narinfo with URL %q and NarHash %q: want an xz NAR and a sha256", url, narHash)
	}
	file, err := os.Open(filepath.Join(dir, url))
	if err != nil {
		return err
	}
	defer file.Close()
	// Decoded the way cairn decodes (liblzma in-process where built in), a
	// block ahead of the hashing and sending, as cairn's ingest does.
	plain, err := appliance.Decompress(context.Background(), appliance.CompressionXZ, file)
	if err != nil {
		return err
	}
	defer plain.Close()
	out := readAhead(plain, 1<<20, 4)
	h := sha256.New()
	bw := bufio.NewWriterSize(w, 256<<10)
	in := bufio.NewReaderSize(out, 1<<20)
	defer out.Close()
	raw := make([]byte, 64<<10)
	var frame []byte
	for {
		n, err := io.ReadFull(in, raw)
		if n > 0 {
			h.Write(raw[:n])
			frame = cdc.Store(frame[:0], raw[:n])
			if _, werr := bw.Write(frame); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("NarHash mismatch: got sha256:%s", nixbase32.EncodeToString(got))
	}
	return bw.Flush()
}

// readAhead reads r in blocks of size on a goroutine of its own, up to n
// blocks ahead of the returned reader. Closing that reader stops it.
func readAhead(r io.Reader, size, n int) io.ReadCloser {
	pr, pw := io.Pipe()
	type block struct {
		b   []byte
		err error
	}
	blocks := make(chan block, n)
	stop := make(chan struct{})
	go func() {
		defer close(blocks)
		for {
			b := make([]byte, size)
			k, err := io.ReadFull(r, b)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			select {
			case blocks <- block{b[:k], err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for blk := range blocks {
			if _, err := pw.Write(blk.b); err != nil {
				close(stop) // the reader closed
				return
			}
			if blk.err != nil {
				pw.CloseWithError(blk.err)
			}
		}
	}()
	return pr
}

// benchFloor is a running floor proxy.
type benchFloor struct {
	url string
	cmd *exec.Cmd
}

func (f *benchFloor) pid() int { return f.cmd.Process.Pid }

// benchStartFloor runs this test binary as the floor proxy over xzDir.
func benchStartFloor(b *testing.B, xzDir string) *benchFloor {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), floorEnv+"="+xzDir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the floor proxy: %v", err)
	}
	f := &benchFloor{cmd: cmd}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case f.url = <-line:
	case <-time.After(30 * time.Second):
	}
	if !strings.HasPrefix(f.url, "http://") {
		b.Fatalf("the floor proxy did not print its URL within 30s (got %q)", f.url)
	}
	return f
}
