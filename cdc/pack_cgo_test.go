//go:build cgo

package cdc_test

import (
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

// With cgo, best-level frames come from libzstd and are smaller than
// klauspost's best on real binary chunks.
func TestBestLevelPacksWithLibzstd(t *testing.T) {
	require.Equal(t, "libzstd level 16", cdc.EncoderName(zstd.SpeedBestCompression))
	require.Equal(t, "klauspost better", cdc.EncoderName(zstd.SpeedBetterCompression))
	exe, err := os.Executable()
	require.NoError(t, err)
	bin, err := os.ReadFile(exe)
	require.NoError(t, err)
	require.Greater(t, len(bin), 1<<20)
	codec, err := cdc.NewCodec(zstd.SpeedBestCompression, 1) // klauspost
	require.NoError(t, err)
	defer codec.Close()
	enc, err := codec.NewEncoder(zstd.SpeedBestCompression)
	require.NoError(t, err)
	defer enc.Close()
	var packed, klauspost int
	for off := 0; off+64<<10 <= 1<<20; off += 64 << 10 {
		raw := bin[off : off+64<<10]
		frame, err := enc.Compress(nil, raw)
		require.NoError(t, err)
		packed += len(frame)
		klauspost += len(codec.Compress(nil, raw))
	}
	require.Less(t, packed, klauspost)
	t.Logf("1 MiB of this test binary in 64 KiB frames: libzstd %d bytes, klauspost best %d", packed, klauspost)
}
