//go:build !cgo

package cdc

import (
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// Without cgo the best level is klauspost's, and no Encoder holds a packer.
func TestBestLevelFallsBackToKlauspost(t *testing.T) {
	require.Equal(t, "klauspost best", EncoderName(zstd.SpeedBestCompression))
	codec, err := NewCodec(zstd.SpeedBestCompression, 1)
	require.NoError(t, err)
	defer codec.Close()
	e, err := codec.NewEncoder(zstd.SpeedBestCompression)
	require.NoError(t, err)
	defer e.Close()
	require.Nil(t, e.pack)
	require.NotNil(t, e.enc)
}
