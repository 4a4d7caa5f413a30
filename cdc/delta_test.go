package cdc_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

// editedCopy returns a "next release" of an ELF slice: every 4-byte word
// at a multiple of 64 changed, as relinked code changes its addresses.
func editedCopy(b []byte) []byte {
	out := bytes.Clone(b)
	for i := 0; i+4 <= len(out); i += 64 {
		binary.LittleEndian.PutUint32(out[i:], binary.LittleEndian.Uint32(out[i:])+0x40)
	}
	return out
}

func testBinary(t *testing.T) []byte {
	exe, err := os.Executable()
	require.NoError(t, err)
	bin, err := os.ReadFile(exe)
	require.NoError(t, err)
	require.Greater(t, len(bin), 4<<20)
	return bin
}

func TestDeltaFrames(t *testing.T) {
	codec := testCodec(t)
	bin := testBinary(t)
	base := bin[1<<20 : 1<<20+64<<10]
	raw := editedCopy(base)
	for _, level := range []cdc.Level{zstd.SpeedDefault, zstd.SpeedBestCompression} {
		t.Run(cdc.EncoderName(level), func(t *testing.T) {
			enc, err := codec.NewEncoder(level)
			require.NoError(t, err)
			defer enc.Close()
			plain, err := enc.Compress(nil, raw)
			require.NoError(t, err)
			delta, err := enc.CompressDelta([]byte("keep"), raw, base)
			require.NoError(t, err)
			require.Equal(t, "keep", string(delta[:4]), "appends to dst")
			delta = delta[4:]
			require.Less(t, len(delta), len(plain)/2, "a delta against a similar chunk is far smaller")

			got, err := codec.DecompressDelta([]byte("x"), delta, base, len(raw))
			require.NoError(t, err)
			require.Equal(t, raw, got[1:])

			// Without its base, or with another one, it does not decode.
			_, err = codec.Decompress(nil, delta, len(raw))
			require.ErrorIs(t, err, cdc.ErrCorrupt)
			_, err = codec.DecompressDelta(nil, delta, bin[2<<20:2<<20+64<<10], len(raw))
			require.ErrorIs(t, err, cdc.ErrCorrupt)
			_, err = codec.DecompressDelta(nil, delta, base, len(raw)+1)
			require.ErrorIs(t, err, cdc.ErrCorrupt)

			// The reference decoder reads it as `zstd --patch-from` output.
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "base"), base, 0o600))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "delta.zst"), delta, 0o600))
			out, err := exec.Command("zstd", "-dc", "--patch-from="+filepath.Join(dir, "base"), filepath.Join(dir, "delta.zst")).Output()
			require.NoError(t, err, "zstd CLI (make deps installs it)")
			require.Equal(t, raw, out)

			// Stored with its header, it names its base.
			id := cdc.Sum(base)
			v := cdc.AppendDelta(nil, id, delta)
			gotBase, frame, ok := cdc.ParseDelta(v)
			require.True(t, ok)
			require.Equal(t, id, gotBase)
			require.Equal(t, delta, frame)
			for _, other := range [][]byte{plain, cdc.Store(nil, raw), v[:20], nil} {
				_, _, ok := cdc.ParseDelta(other)
				require.False(t, ok)
			}
			// A decoder that knows nothing of deltas skips the header and
			// fails on the frame.
			_, err = codec.Decompress(nil, v, len(raw))
			require.ErrorIs(t, err, cdc.ErrCorrupt)
		})
	}
}

func TestSketchesMatchSimilarChunks(t *testing.T) {
	bin := testBinary(t)
	shared := func(a, b cdc.Sketch) int {
		n := 0
		for i := range a {
			if a[i] == b[i] {
				n++
			}
		}
		return n
	}
	base := bin[1<<20 : 1<<20+64<<10]
	sk := cdc.SketchOf(base)
	require.Equal(t, sk, cdc.SketchOf(bytes.Clone(base)), "a pure function of the bytes")
	require.GreaterOrEqual(t, shared(sk, cdc.SketchOf(editedCopy(base))), 2, "an edited copy")
	require.GreaterOrEqual(t, shared(sk, cdc.SketchOf(bin[1<<20+4<<10:1<<20+68<<10])), 4, "a shifted window")
	other := make([]byte, 64<<10)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(other)
	require.Zero(t, shared(sk, cdc.SketchOf(other)), "unrelated bytes")
	// Sketches are kept in stores: the function may never change.
	require.Equal(t, uint64(0xa27b939094e0e247), cdc.SketchOf([]byte("cairn keeps sketches in its index"))[0])
}
