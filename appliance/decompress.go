package appliance

import (
	"bytes"
	"compress/bzip2"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression is the compression of a NAR body, as named in a narinfo.
type Compression string

// The compressions a NAR body may arrive in.
const (
	CompressionNone  Compression = "none"
	CompressionXZ    Compression = "xz"
	CompressionZstd  Compression = "zstd"
	CompressionBzip2 Compression = "bzip2"
)

// ErrCompression reports a compression cairn cannot decode.
var ErrCompression = errors.New("unsupported compression")

// ParseCompression reads a narinfo Compression value; an empty one means
// bzip2, as it does for Nix.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case "":
		return CompressionBzip2, nil
	case CompressionNone, CompressionXZ, CompressionZstd, CompressionBzip2:
		return c, nil
	}
	return "", fmt.Errorf("%w: %q", ErrCompression, s)
}

// decompress returns a reader of body's plaintext. xzPath says how to
// decode xz: XZLibrary for liblzma in-process, the path of the xz binary,
// or "" for pure Go, which is several times slower than either. abort,
// when set, ends a read of body that blocks: closing the reader uses it so
// that nothing reads body afterwards.
func decompress(ctx context.Context, c Compression, body io.Reader, xzPath string, abort func()) (io.ReadCloser, error) {
	switch c {
	case CompressionNone:
		return io.NopCloser(body), nil
	case CompressionBzip2:
		return io.NopCloser(bzip2.NewReader(body)), nil
	case CompressionZstd:
		d, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return d.IOReadCloser(), nil
	case CompressionXZ:
		switch xzPath {
		case XZLibrary:
			return newXZLib(body, abort)
		case "": // pure Go, below
		default:
			return xzCommand(ctx, xzPath, body, abort)
		}
		// One stream, and nothing after it read, as xz --single-stream.
		r, err := xz.ReaderConfig{SingleStream: true}.NewReader(body)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrCompression, c)
}

// xzCmd is a running `xz -dc`, read through its stdout, with a goroutine
// feeding it the body.
type xzCmd struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *bytes.Buffer
	cancel context.CancelFunc
	fed    chan struct{} // closed when the feeding goroutine is done
	abort  func()        // ends a blocked read of the body, or nil
}

func xzCommand(ctx context.Context, path string, body io.Reader, abort func()) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, path, "-dc", "--single-stream")
	cmd.WaitDelay = 2 * time.Second
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	// The body is fed by a goroutine of ours rather than exec's, so that
	// Close can end it (see stopFeed).
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("xz: stdin: %w", err)
	}
	out, w, err := xzPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("xz: pipe: %w", err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		cancel()
		return nil, fmt.Errorf("xz: start %s: %w", path, err)
	}
	x := &xzCmd{cmd: cmd, out: out, stderr: stderr, cancel: cancel, fed: make(chan struct{}), abort: abort}
	go func() {
		defer close(x.fed)
		_, _ = io.Copy(stdin, body) // ends when xz exits, the body ends or fails
		stdin.Close()
	}()
	return x, nil
}

func (x *xzCmd) Read(p []byte) (int, error) {
	n, err := x.out.Read(p)
	if err == io.EOF {
		// The stream ended: only a clean exit makes it a complete one.
		if werr := x.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (x *xzCmd) wait() error {
	err := x.cmd.Wait()
	x.cancel()
	if err != nil {
		msg := strings.TrimSpace(x.stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("xz: %s", msg)
	}
	return nil
}

// Close stops xz if it is still running, and the feeding goroutine.
func (x *xzCmd) Close() error {
	x.cancel()
	x.out.Close()
	if x.cmd.ProcessState == nil {
		_ = x.cmd.Wait()
	}
	x.stopFeed()
	return nil
}

// stopFeed ends the goroutine feeding xz. It may still be blocked reading
// a stalled body after xz exited (a corrupt stream, or bytes past its end).
// With an abort, that read is ended and waited for, so that an upload's
// request stream is never read after its handler returns; without one,
// the body's own context ends it.
func (x *xzCmd) stopFeed() {
	select {
	case <-x.fed:
		return
	default:
	}
	if x.abort != nil {
		x.abort()
		<-x.fed
	}
}
