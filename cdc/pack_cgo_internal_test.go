//go:build cgo

package cdc

import (
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// A closed best-level Encoder gives its libzstd context back to the Codec,
// which keeps up to idlePackers of them; the next Encoder reuses one.
func TestCodecReusesLibzstdContexts(t *testing.T) {
	codec, err := NewCodec(zstd.SpeedBestCompression, 1)
	require.NoError(t, err)
	defer codec.Close()
	var encs []*Encoder
	seen := map[packer]bool{}
	for range idlePackers + 1 {
		e, err := codec.NewEncoder(zstd.SpeedBestCompression)
		require.NoError(t, err)
		require.NotNil(t, e.pack)
		_, err = e.Compress(nil, []byte("frame"))
		require.NoError(t, err)
		encs = append(encs, e)
		seen[e.pack] = true
	}
	require.Len(t, seen, idlePackers+1, "encoders in use never share a context")
	for _, e := range encs {
		e.Close()
		e.Close() // a second Close does nothing
	}
	require.Len(t, codec.idle, idlePackers)
	e, err := codec.NewEncoder(zstd.SpeedBestCompression)
	require.NoError(t, err)
	require.True(t, seen[e.pack], "a new encoder reuses an idle context")
	e.Close()
	// Other levels are klauspost's and never hold a context.
	k, err := codec.NewEncoder(zstd.SpeedBetterCompression)
	require.NoError(t, err)
	require.Nil(t, k.pack)
	k.Close()
	require.Len(t, codec.idle, idlePackers)
}
