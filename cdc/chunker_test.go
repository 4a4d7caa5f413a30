package cdc_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	fastcdc "github.com/jotfs/fastcdc-go"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
	"cairn/internal/nixtest"
)

// chunkAll cuts data with cdc, writing it in pieces of the given size.
func chunkAll(t testing.TB, p cdc.Params, data []byte, piece int) [][]byte {
	t.Helper()
	var out [][]byte
	c, err := cdc.NewChunker(p, func(b []byte) error {
		out = append(out, append([]byte(nil), b...))
		return nil
	})
	require.NoError(t, err)
	for len(data) > 0 {
		n := min(piece, len(data))
		_, err := c.Write(data[:n])
		require.NoError(t, err)
		data = data[n:]
	}
	require.NoError(t, c.Close())
	return out
}

// oracleLengths cuts data with jotfs/fastcdc-go, seed 0. It is called from
// one goroutine only: NewChunker writes a package-global table.
func oracleLengths(t testing.TB, p cdc.Params, data []byte) []int {
	t.Helper()
	c, err := fastcdc.NewChunker(bytes.NewReader(data), fastcdc.Options{
		MinSize: p.Min, AverageSize: p.Avg, MaxSize: p.Max, Normalization: p.Normalization,
		// jotfs reads Normalization 0 as "use the default"; off must be said.
		DisableNormalization: p.Normalization == 0,
	})
	require.NoError(t, err)
	var lens []int
	for {
		ch, err := c.Next()
		if errors.Is(err, io.EOF) {
			return lens
		}
		require.NoError(t, err)
		lens = append(lens, ch.Length)
	}
}

func lengths(chunks [][]byte) []int {
	out := make([]int, len(chunks))
	for i, c := range chunks {
		out[i] = len(c)
	}
	return out
}

func TestChunkerMatchesJotfsOnRealNARs(t *testing.T) {
	nars := nixtest.SampleNARs(t)
	rnd := make([]byte, 3<<20)
	for i := range rnd {
		rnd[i] = byte(rand.Uint32())
	}
	inputs := append(nars, nixtest.NAR{Name: "random", Bytes: rnd}, nixtest.NAR{Name: "zeros", Bytes: make([]byte, 1<<20)})
	params := []cdc.Params{
		cdc.DefaultParams,
		{Min: 2 << 10, Avg: 8 << 10, Max: 64 << 10, Normalization: 2},
		{Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10, Normalization: 1},
		{Min: 16 << 10, Avg: 32 << 10, Max: 128 << 10, Normalization: 0},
		{Min: 64 << 10, Avg: 128 << 10, Max: 512 << 10, Normalization: 3},
	}
	for _, p := range params {
		for _, in := range inputs {
			t.Run(p.String()+"/"+in.Name, func(t *testing.T) {
				want := oracleLengths(t, p, in.Bytes)
				for _, piece := range []int{1 << 20, 4096, 77777} {
					got := chunkAll(t, p, in.Bytes, piece)
					require.Equal(t, want, lengths(got), "piece size %d", piece)
					require.Equal(t, in.Bytes, bytes.Join(got, nil))
				}
			})
		}
	}
}

func TestChunkerConcurrent(t *testing.T) {
	nars := nixtest.SampleNARs(t)
	want := make([][]int, len(nars))
	for i, n := range nars {
		want[i] = lengths(chunkAll(t, cdc.DefaultParams, n.Bytes, 1<<16))
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := g % len(nars)
			require.Equal(t, want[i], lengths(chunkAll(t, cdc.DefaultParams, nars[i].Bytes, 1<<15+g)))
		}()
	}
	wg.Wait()
}

func TestParamsValidate(t *testing.T) {
	for _, tc := range []struct {
		p  cdc.Params
		ok bool
	}{
		{cdc.DefaultParams, true},
		{cdc.Params{Min: 32, Avg: 64, Max: 128}, false},
		{cdc.Params{Min: 1024, Avg: 1024, Max: 4096}, false},
		{cdc.Params{Min: 1024, Avg: 2048, Max: 4096, Normalization: 4}, false},
		{cdc.Params{Min: 1024, Avg: 2048, Max: 2 << 30}, false},
	} {
		err := tc.p.Validate()
		if tc.ok {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, cdc.ErrBadParams)
		}
	}
}

func TestChunkerEmitError(t *testing.T) {
	boom := errors.New("boom")
	c, err := cdc.NewChunker(cdc.DefaultParams, func([]byte) error { return boom })
	require.NoError(t, err)
	_, err = c.Write(make([]byte, 1<<20))
	require.ErrorIs(t, err, boom)
	_, err = c.Write([]byte{1})
	require.ErrorIs(t, err, boom)
}
