package appliance

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

// xzDecoders are the three ways cairn decodes xz, as Config.XZ names them.
func xzDecoders(t *testing.T) map[string]string {
	xz, err := exec.LookPath("xz")
	require.NoError(t, err, "the xz binary is needed (make deps)")
	d := map[string]string{"binary": xz, "pure Go": ""}
	if xzLibBuiltIn {
		d["liblzma"] = XZLibrary
	}
	return d
}

// Every xz decoder gives the same bytes and refuses the same bad streams.
func TestXZDecoders(t *testing.T) {
	plain := nixtest.SampleNARs(t)[1].Bytes
	good := nixtest.Compress(t, "xz", plain)
	for _, tc := range []struct {
		name string
		body func() io.Reader
		want []byte // nil: an error
		msg  string // part of the liblzma error
	}{
		{"whole", func() io.Reader { return bytes.NewReader(good) }, plain, ""},
		{"one byte per read", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(good)) }, plain, ""},
		// liblzma and xz --single-stream stop at the stream's end; pure Go's
		// reader refuses what follows it.
		{"trailing bytes ignored", func() io.Reader { return bytes.NewReader(append(bytes.Clone(good), "garbage"...)) }, plain, ""},
		{"truncated", func() io.Reader { return bytes.NewReader(good[:len(good)/2]) }, nil, "unexpected end of input"},
		{"no header", func() io.Reader { return bytes.NewReader(plain[:4096]) }, nil, "file format not recognized"},
		{"corrupt", func() io.Reader {
			b := bytes.Clone(good)
			b[len(b)/2] ^= 0x55
			return bytes.NewReader(b)
		}, nil, "corrupt"},
		{"empty", func() io.Reader { return bytes.NewReader(nil) }, nil, "unexpected end of input"},
	} {
		for name, xzPath := range xzDecoders(t) {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				r, err := decompress(context.Background(), CompressionXZ, tc.body(), xzPath, nil)
				if err != nil { // pure Go reads the header at once
					require.Nil(t, tc.want, "%v", err)
					return
				}
				defer r.Close()
				// Small reads first, then large ones.
				got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(r, 4096)))
				if err == nil {
					var rest []byte
					rest, err = io.ReadAll(r)
					got = append(got, rest...)
				}
				if tc.want == nil || (xzPath == "" && tc.name == "trailing bytes ignored") {
					require.Error(t, err)
					if xzPath == XZLibrary {
						require.ErrorContains(t, err, tc.msg)
					}
					return
				}
				require.NoError(t, err)
				require.Equal(t, tc.want, got)
			})
		}
	}
}

// A body read error reaches the reader as it is, and so does the end of a
// body that stops mid-stream.
func TestXZLibBodyError(t *testing.T) {
	if !xzLibBuiltIn {
		t.Fatal("this build has no liblzma decoder: build with cgo on Linux (CGO_ENABLED=1 and a C compiler)")
	}
	good := nixtest.Compress(t, "xz", nixtest.SampleNARs(t)[1].Bytes)
	r, err := newXZLib(io.MultiReader(bytes.NewReader(good[:len(good)/2]), iotest.ErrReader(context.Canceled)), nil)
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, r.Close())
	_, err = r.Read(make([]byte, 10))
	require.Error(t, err)
}

// Close during a Read that waits for the body ends that read through abort
// and frees the decoder after it; reads after Close fail.
func TestXZLibCloseDuringRead(t *testing.T) {
	if !xzLibBuiltIn {
		t.Fatal("this build has no liblzma decoder: build with cgo on Linux (CGO_ENABLED=1 and a C compiler)")
	}
	good := nixtest.Compress(t, "xz", nixtest.SampleNARs(t)[1].Bytes)
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(good[:len(good)/2]) }()
	aborted := make(chan struct{})
	r, err := newXZLib(pr, func() { close(aborted); pw.CloseWithError(context.Canceled) })
	require.NoError(t, err)
	readErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond) // the copy now waits for the body
	require.NoError(t, r.Close())
	<-aborted
	require.ErrorIs(t, <-readErr, context.Canceled)
	_, err = r.Read(make([]byte, 10))
	require.Error(t, err)
}

// FuzzXZLib feeds liblzma arbitrary bodies: it must never crash or hang,
// and what it decodes without error, pure Go decodes the same.
func FuzzXZLib(f *testing.F) {
	if !xzLibBuiltIn {
		f.Fatal("this build has no liblzma decoder: build with cgo on Linux (CGO_ENABLED=1 and a C compiler)")
	}
	f.Add(nixtest.Compress(f, "xz", []byte("nix-archive-1\x00")))
	f.Add(nixtest.Compress(f, "xz", bytes.Repeat([]byte("cairn "), 5000)))
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := newXZLib(bytes.NewReader(body), nil)
		require.NoError(t, err)
		got, err := io.ReadAll(io.LimitReader(r, 64<<20))
		require.NoError(t, r.Close())
		if err != nil {
			return
		}
		pure, err := decompress(context.Background(), CompressionXZ, bytes.NewReader(body), "", nil)
		if err != nil {
			return
		}
		want, err := io.ReadAll(io.LimitReader(pure, 64<<20))
		if err == nil {
			require.Equal(t, want, got)
		}
	})
}
