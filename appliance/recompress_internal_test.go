package appliance

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

// A recompression records its new frames every recompressSegment bytes,
// each part in its own index transaction, not once at the end: a .nar.zst
// read meanwhile rebuilds at most the frames of the part in flight.
func TestRecompressRecordsInSegments(t *testing.T) {
	nar := nixtest.SampleNARs(t)[2] // a binary of a few MB
	for _, tc := range []struct {
		name    string
		segment int
		writes  func(t require.TestingT, n uint64) // index writes the run made
	}{
		{"one part", 1 << 30, func(t require.TestingT, n uint64) { require.Equal(t, uint64(1), n) }},
		{"parts of 64 KiB", 64 << 10, func(t require.TestingT, n uint64) { require.Greater(t, n, uint64(4)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, err := Open(ctx, Config{Dir: t.TempDir(), RecompressDelay: -1, Level: zstd.SpeedFastest})
			require.NoError(t, err)
			defer s.Close()
			s.recompressSegment = tc.segment
			res, err := s.Ingest(ctx, Want{NarHash: nar.Hash, NarSize: uint64(len(nar.Bytes))}, bytes.NewReader(nar.Bytes), CompressionNone)
			require.NoError(t, err)
			before, err := s.ix.Stats()
			require.NoError(t, err)

			gen := s.ix.Generation()
			st, err := s.RecompressDue(ctx, time.Now().Add(time.Hour))
			require.NoError(t, err)
			require.Equal(t, 1, st.NARs)
			tc.writes(t, s.ix.Generation()-gen)

			after, err := s.ix.Stats()
			require.NoError(t, err)
			require.Equal(t, before.PhysicalBytes-st.BytesSaved, after.PhysicalBytes)
			due, err := s.ix.DueRecompress(time.Now().Add(time.Hour), nil, 16)
			require.NoError(t, err)
			require.Empty(t, due, "the queue entry goes with the last part")
			n, err := s.OpenNAR(ctx, res.NarHash)
			require.NoError(t, err)
			var got bytes.Buffer
			require.NoError(t, n.WriteRange(ctx, &got, 0, n.Size()))
			require.Equal(t, nar.Bytes, got.Bytes())
		})
	}
}
