package seed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"cairn/appliance"
)

// TestHeldBody proves that an upload body releases its last bytes only
// after the NAR matched, for every alignment of the input to the blocks
// it holds back.
func TestHeldBody(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	require.NoError(t, err)
	defer enc.Close()
	for _, tc := range []struct {
		name string
		size int // plaintext bytes
	}{
		{"small", 1000},
		{"near one block", heldBlock - 200},
		{"two blocks", 2*heldBlock + 5000},
	} {
		plain := make([]byte, tc.size)
		r := rand.New(rand.NewPCG(1, uint64(tc.size)))
		for i := range plain {
			plain[i] = byte(r.Uint32())
		}
		z := enc.EncodeAll(plain, nil)
		sum := sha256.Sum256(plain)
		wrongHash := sum
		wrongHash[0] ^= 1
		corrupt := bytes.Clone(z)
		corrupt[len(corrupt)-2] ^= 1 // the frame's checksum
		for _, c := range []struct {
			name    string
			body    []byte
			hash    [32]byte
			size    uint64
			refused bool
		}{
			{"matches", z, sum, uint64(tc.size), false},
			{"exactly a block long", padTo(t, z, heldBlock), sum, uint64(tc.size), false},
			{"other NarHash", z, wrongHash, uint64(tc.size), true},
			{"other NarSize", z, sum, uint64(tc.size) + 1, true},
			{"corrupt frame", corrupt, sum, uint64(tc.size), true},
		} {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				if c.body == nil {
					t.Skip("input longer than a block")
				}
				h := newHeldBody(context.Background(), bytes.NewReader(c.body), appliance.CompressionZstd, c.hash, c.size)
				defer h.Close()
				got, err := io.ReadAll(oddReader{h})
				if !c.refused {
					require.NoError(t, err)
					require.Equal(t, c.body, got)
					require.NoError(t, h.refusal())
					return
				}
				require.ErrorIs(t, err, ErrRefused)
				require.ErrorIs(t, h.refusal(), ErrRefused)
				require.Less(t, len(got), len(c.body), "a NAR that does not match is never delivered whole")
			})
		}
	}
}

// padTo appends a skippable zstd frame so that z is exactly n bytes, or
// returns nil when it is longer already.
func padTo(t *testing.T, z []byte, n int) []byte {
	t.Helper()
	if len(z)+8 > n {
		return nil
	}
	pad := make([]byte, 8, n-len(z))
	copy(pad, []byte{0x50, 0x2a, 0x4d, 0x18})
	size := n - len(z) - 8
	pad[4], pad[5], pad[6], pad[7] = byte(size), byte(size>>8), byte(size>>16), byte(size>>24)
	pad = append(pad, make([]byte, size)...)
	return append(bytes.Clone(z), pad...)
}

// oddReader reads in odd sizes, as an HTTP client may.
type oddReader struct{ r io.Reader }

func (o oddReader) Read(p []byte) (int, error) {
	if len(p) > 4093 {
		p = p[:4093]
	}
	return o.r.Read(p)
}
