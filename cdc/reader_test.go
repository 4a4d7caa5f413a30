package cdc_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"cairn/cdc"
	"cairn/internal/nixtest"
)

// memFrames is an in-memory FrameSource.
type memFrames map[cdc.ID][]byte

func (m memFrames) Frame(_ context.Context, id cdc.ID, dst []byte) ([]byte, error) {
	f, ok := m[id]
	if !ok {
		return dst, fmt.Errorf("chunk %s: missing", id)
	}
	return append(dst, f...), nil
}

func buildNAR(t testing.TB, codec *cdc.Codec, data []byte) (*cdc.NAR, memFrames) {
	t.Helper()
	frames := memFrames{}
	var refs []cdc.ChunkRef
	for _, c := range chunkAll(t, cdc.Params{Min: 2 << 10, Avg: 8 << 10, Max: 32 << 10, Normalization: 2}, data, 1<<16) {
		id := cdc.Sum(c)
		f := codec.Compress(nil, c)
		frames[id] = f
		refs = append(refs, cdc.ChunkRef{ID: id, Raw: uint32(len(c)), Comp: uint32(len(f))})
	}
	return cdc.NewNAR(refs, frames, codec), frames
}

func TestNARRandomRanges(t *testing.T) {
	codec := testCodec(t)
	for _, in := range nixtest.SampleNARs(t) {
		t.Run(in.Name, func(t *testing.T) {
			nar, _ := buildNAR(t, codec, in.Bytes)
			size := int64(len(in.Bytes))
			require.Equal(t, size, nar.Size())
			rng := rand.New(rand.NewPCG(1, uint64(size)))
			for range 200 {
				off := rng.Int64N(size)
				n := rng.Int64N(min(size-off, 100<<10) + 1)
				p := make([]byte, n)
				k, err := nar.ReadAt(p, off)
				require.NoError(t, err)
				require.Equal(t, int(n), k)
				require.Equal(t, in.Bytes[off:off+n], p)

				var buf bytes.Buffer
				require.NoError(t, nar.WriteRange(context.Background(), &buf, off, n))
				require.Equal(t, string(in.Bytes[off:off+n]), buf.String())
			}
			off := size / 3
			r := nar.Reader(context.Background(), off, size-off)
			all, err := io.ReadAll(r)
			require.NoError(t, err)
			require.NoError(t, r.Close())
			require.Equal(t, string(in.Bytes[off:]), string(all))

			// Reads at and past the end.
			p := make([]byte, 10)
			k, err := nar.ReadAt(p, size-3)
			require.ErrorIs(t, err, io.EOF)
			require.Equal(t, 3, k)
			_, err = nar.ReadAt(p, size)
			require.ErrorIs(t, err, io.EOF)
			require.ErrorIs(t, nar.WriteRange(context.Background(), io.Discard, size-1, 2), cdc.ErrRange)
		})
	}
}

func TestNARFramesAreAZstdStream(t *testing.T) {
	codec := testCodec(t)
	in := nixtest.SampleNARs(t)[1]
	nar, _ := buildNAR(t, codec, in.Bytes)

	var all bytes.Buffer
	_, err := nar.WriteFrames(context.Background(), &all, 0, len(nar.Chunks())-1)
	require.NoError(t, err)
	require.EqualValues(t, nar.CompressedSize(), all.Len())
	dec, err := zstd.NewReader(bytes.NewReader(all.Bytes()))
	require.NoError(t, err)
	plain, err := io.ReadAll(dec)
	require.NoError(t, err)
	require.Equal(t, in.Bytes, plain)

	// Any byte range of the compressed stream is a plain copy.
	rng := rand.New(rand.NewPCG(2, 3))
	for range 100 {
		off := rng.Int64N(int64(all.Len()))
		n := rng.Int64N(int64(all.Len())-off) + 1
		var part bytes.Buffer
		k, err := nar.WriteCompressedRange(context.Background(), &part, off, n)
		require.NoError(t, err)
		require.Equal(t, n, k)
		require.Equal(t, all.Bytes()[off:off+n], part.Bytes())
	}
}

func TestNARConcurrentReadAt(t *testing.T) {
	codec := testCodec(t)
	in := nixtest.SampleNARs(t)[2]
	nar, _ := buildNAR(t, codec, in.Bytes)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 100 {
				off := rng.Int64N(int64(len(in.Bytes)))
				p := make([]byte, min(int64(len(in.Bytes))-off, 20000))
				_, err := nar.ReadAt(p, off)
				require.NoError(t, err)
				require.Equal(t, in.Bytes[off:off+int64(len(p))], p)
			}
		}()
	}
	wg.Wait()
}

func TestNARCorruptAndMissingChunks(t *testing.T) {
	codec := testCodec(t)
	in := nixtest.SampleNARs(t)[1]
	for _, tc := range []struct {
		name   string
		break_ func(memFrames, cdc.ID)
	}{
		{"flipped byte", func(m memFrames, id cdc.ID) { m[id][len(m[id])/2] ^= 0xff }},
		{"missing", func(m memFrames, id cdc.ID) { delete(m, id) }},
		{"truncated", func(m memFrames, id cdc.ID) { m[id] = m[id][:len(m[id])-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nar, frames := buildNAR(t, codec, in.Bytes)
			victim := nar.Chunks()[1]
			tc.break_(frames, victim.ID)
			_, err := io.Copy(io.Discard, io.NewSectionReader(nar, 0, nar.Size()))
			require.Error(t, err)
			require.Contains(t, err.Error(), victim.ID.String())
			require.Error(t, nar.WriteRange(context.Background(), io.Discard, 0, nar.Size()))
		})
	}
}

// sender is a FrameSender over memFrames that cannot send the frames in
// refuse, so a copy must take them the other way.
type sender struct {
	memFrames
	refuse map[cdc.ID]bool
	calls  int
}

func (s *sender) LocateFrames(_ context.Context, ids []cdc.ID, want []uint32) (cdc.FrameRun, error) {
	s.calls++
	r := &memRun{}
	for i, id := range ids {
		if s.refuse[id] || len(s.memFrames[id]) != int(want[i]) {
			break
		}
		r.frames = append(r.frames, s.memFrames[id]...)
		r.n++
	}
	return r, nil
}

// memRun is a run of frames memFrames located.
type memRun struct {
	frames []byte
	n      int
}

func (r *memRun) Len() int     { return r.n }
func (r *memRun) Close() error { return nil }

func (r *memRun) Send(w io.Writer, skip, n int64) (int64, error) {
	if skip >= int64(len(r.frames)) {
		return 0, nil
	}
	k, err := w.Write(r.frames[skip:min(int64(len(r.frames)), skip+n)])
	return int64(k), err
}

// testCodec returns a codec at the default level, closed when t ends.
func testCodec(t testing.TB) *cdc.Codec {
	t.Helper()
	codec, err := cdc.NewCodec(zstd.SpeedDefault, 0)
	require.NoError(t, err)
	t.Cleanup(codec.Close)
	return codec
}

// pipeBuffer is a bytes.Buffer posing as a socket, so that copies to it
// go through a FrameSender.
type pipeBuffer struct{ bytes.Buffer }

func (*pipeBuffer) SpliceFrom(int, int) (int, error) { panic("memRun never splices") }

func TestNARCompressedRangesThroughASender(t *testing.T) {
	codec := testCodec(t)
	in := nixtest.SampleNARs(t)[1]
	nar, frames := buildNAR(t, codec, in.Bytes)
	var stream []byte
	for _, c := range nar.Chunks() {
		stream = append(stream, frames[c.ID]...)
	}
	size := nar.CompressedSize()
	require.Greater(t, len(nar.Chunks()), 20)
	for _, tc := range []struct {
		name   string
		refuse []int // chunk indexes the sender cannot send
	}{
		{"sends all", nil},
		{"copies some", []int{0, 3, 4, 17, len(nar.Chunks()) - 1}},
		{"copies all", func() (all []int) {
			for i := range nar.Chunks() {
				all = append(all, i)
			}
			return all
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &sender{memFrames: frames, refuse: map[cdc.ID]bool{}}
			for _, i := range tc.refuse {
				s.refuse[nar.Chunks()[i].ID] = true
			}
			n := cdc.NewNAR(nar.Chunks(), s, codec)
			rng := rand.New(rand.NewPCG(2, uint64(size)))
			for range 100 {
				off := rng.Int64N(size)
				length := rng.Int64N(size - off + 1)
				r, err := n.CompressedReader(context.Background(), off, length)
				require.NoError(t, err)
				var buf pipeBuffer
				k, err := r.(io.WriterTo).WriteTo(&buf)
				require.NoError(t, err)
				require.Equal(t, length, k)
				require.Equal(t, stream[off:off+length], buf.Bytes())
			}
			require.Positive(t, s.calls)
		})
	}
}
