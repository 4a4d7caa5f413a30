package cdc_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

func TestStoredFramesAreStandardZstd(t *testing.T) {
	codec := testCodec(t)
	var stream, plain []byte
	for _, n := range []int{0, 1, 255, 256, 65791, 65792, 128 << 10, 128<<10 + 1, 300 << 10} {
		raw := bytes.Repeat([]byte{byte(n), 7, 9}, n/3+1)[:n]
		frame := cdc.Store(nil, raw)
		got, err := codec.Decompress(nil, frame, n)
		require.NoError(t, err, "size %d", n)
		require.Equal(t, raw, got)
		// A flipped content byte fails the frame checksum.
		if n > 0 {
			bad := bytes.Clone(frame)
			bad[len(bad)-5] ^= 1
			_, err = codec.Decompress(nil, bad, n)
			require.ErrorIs(t, err, cdc.ErrCorrupt)
		}
		stream = append(stream, frame...)
		stream = append(stream, codec.Compress(nil, raw)...) // mixed with compressed frames
		plain = append(plain, raw...)
		plain = append(plain, raw...)
	}
	// The reference decoder reads a mixed series of frames as one stream.
	cmd := exec.Command("zstd", "-dc")
	cmd.Stdin = bytes.NewReader(stream)
	out, err := cmd.Output()
	require.NoError(t, err, "zstd CLI (make deps installs it)")
	require.Equal(t, plain, out)
	dec, err := zstd.NewReader(bytes.NewReader(stream))
	require.NoError(t, err)
	got, err := io.ReadAll(dec)
	require.NoError(t, err)
	require.Equal(t, plain, got)
}

func TestEncoderFramesAreStandardZstd(t *testing.T) {
	codec := testCodec(t)
	exe, err := os.Executable()
	require.NoError(t, err)
	bin, err := os.ReadFile(exe)
	require.NoError(t, err)
	levels := []cdc.Level{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression}
	var stream, plain []byte
	for _, level := range levels {
		enc, err := codec.NewEncoder(level)
		require.NoError(t, err)
		for _, raw := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("nix"), 40000), bin[:min(len(bin), 200<<10)]} {
			frame, err := enc.Compress([]byte("kept"), raw)
			require.NoError(t, err, "%s, %d bytes", cdc.EncoderName(level), len(raw))
			require.Equal(t, "kept", string(frame[:4]), "Compress appends")
			frame = frame[4:]
			got, err := codec.Decompress(nil, frame, len(raw))
			require.NoError(t, err, "%s, %d bytes", cdc.EncoderName(level), len(raw))
			require.True(t, bytes.Equal(raw, got), "%s, %d bytes", cdc.EncoderName(level), len(raw))
			// Every frame carries a checksum that the decode checks.
			bad := bytes.Clone(frame)
			bad[len(bad)-1] ^= 1
			_, err = codec.Decompress(nil, bad, len(raw))
			require.ErrorIs(t, err, cdc.ErrCorrupt, "%s, %d bytes", cdc.EncoderName(level), len(raw))
			stream = append(stream, frame...)
			plain = append(plain, raw...)
		}
		enc.Close()
	}
	cmd := exec.Command("zstd", "-dc")
	cmd.Stdin = bytes.NewReader(stream)
	out, err := cmd.Output()
	require.NoError(t, err, "zstd CLI (make deps installs it)")
	require.Equal(t, plain, out)
}
