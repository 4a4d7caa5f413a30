package fusefs

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memNAR is a NAR in memory, cut into blocks at given ends; it counts loads.
type memNAR struct {
	data  []byte
	ends  []int64
	loads atomic.Int32
	fail  map[int]error
}

func newMemNAR(data []byte, sizes ...int) *memNAR {
	n := &memNAR{data: data}
	var end int64
	for i := 0; end < int64(len(data)); i++ {
		end = min(end+int64(sizes[i%len(sizes)]), int64(len(data)))
		n.ends = append(n.ends, end)
	}
	return n
}

func (n *memNAR) Size() int64 { return int64(len(n.data)) }
func (n *memNAR) Blocks() int { return len(n.ends) }
func (n *memNAR) Block(i int) Block {
	start := int64(0)
	if i > 0 {
		start = n.ends[i-1]
	}
	return Block{Key: "mem" + strconv.Itoa(i), Off: start, Size: int(n.ends[i] - start)}
}
func (n *memNAR) Find(off int64) int {
	return sort.Search(len(n.ends), func(i int) bool { return n.ends[i] > off })
}
func (n *memNAR) Load(ctx context.Context, i int) ([]byte, error) {
	n.loads.Add(1)
	if err := n.fail[i]; err != nil {
		return nil, err
	}
	b := n.Block(i)
	return append([]byte(nil), n.data[b.Off:b.Off+int64(b.Size)]...), nil
}

func testReader(n NAR, cacheBytes int64) *reader {
	return testReaderAhead(n, cacheBytes, 64<<10)
}

func testReaderAhead(n NAR, cacheBytes, ahead int64) *reader {
	return newReader(n, newLoader(context.Background(), newCache(cacheBytes, byteCost), 4, ahead), "test")
}

func TestReaderReadAt(t *testing.T) {
	data := make([]byte, 300_000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		sizes   []int
		off     int64
		n       int
		wantN   int
		wantEOF bool
	}{
		{"inside one block", []int{1000}, 10, 100, 100, false},
		{"across blocks", []int{1000, 7, 3000}, 990, 5000, 5000, false},
		{"whole", []int{65536}, 0, 300_000, 300_000, false},
		{"to the end", []int{4096}, 299_000, 1000, 1000, false},
		{"past the end", []int{4096}, 299_000, 2000, 1000, true},
		{"at the end", []int{4096}, 300_000, 10, 0, true},
		{"one-byte blocks", []int{1}, 5, 20, 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testReader(newMemNAR(data, tc.sizes...), 1<<20)
			p := make([]byte, tc.n)
			k, err := r.ReadAt(ctx, p, tc.off)
			require.Equal(t, tc.wantN, k)
			if tc.wantEOF {
				require.ErrorIs(t, err, io.EOF)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, data[tc.off:tc.off+int64(k)], p[:k])
		})
	}

	// Random concurrent reads with a cache smaller than the NAR.
	r := testReader(newMemNAR(data, 999, 4096, 1717, 65536), 64<<10)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 50 {
				off := rng.Int64N(int64(len(data)))
				p := make([]byte, rng.IntN(100_000))
				k, err := r.ReadAt(ctx, p, off)
				if err != nil && !errors.Is(err, io.EOF) {
					t.Error(err)
					return
				}
				if string(p[:k]) != string(data[off:off+int64(k)]) {
					t.Errorf("read %d at %d: wrong bytes", len(p), off)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestReaderReadsAheadWhenSequential(t *testing.T) {
	data := make([]byte, 1<<20)
	ctx := context.Background()
	nar := newMemNAR(data, 16<<10)
	r := testReader(nar, 4<<20)
	p := make([]byte, 8<<10)
	for off := int64(0); off < 256<<10; off += int64(len(p)) {
		_, err := r.ReadAt(ctx, p, off)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return r.ld.cache.has(nar.Block(nar.Find(256<<10 + 32<<10)).Key)
	}, time.Second, time.Millisecond, "blocks after the reader's position are loading")

	// A random reader gets no read-ahead.
	nar2 := newMemNAR(make([]byte, 8<<20), 16<<10)
	r2 := testReader(nar2, 4<<20)
	for _, off := range []int64{7 << 20, 1 << 20, 5 << 20, 3 << 20} {
		_, err := r2.ReadAt(ctx, p, off)
		require.NoError(t, err)
	}
	require.Equal(t, int32(4), nar2.loads.Load())
}

// runNAR is a memNAR that loads runs of blocks, counting run loads.
type runNAR struct {
	*memNAR
	runs atomic.Int32
}

func (n *runNAR) LoadRun(ctx context.Context, first, count int) ([][]byte, error) {
	n.runs.Add(1)
	out := make([][]byte, count)
	for k := range out {
		b := n.Block(first + k)
		out[k] = append([]byte(nil), n.data[b.Off:b.Off+int64(b.Size)]...)
	}
	return out, nil
}

func TestReaderLoadsRunsAhead(t *testing.T) {
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	nar := &runNAR{memNAR: newMemNAR(data, 16<<10)}
	r := testReaderAhead(nar, 8<<20, 1<<20)
	p := make([]byte, 128<<10)
	ctx := context.Background()
	for off := int64(0); off < int64(len(data)); off += int64(len(p)) {
		k, err := r.ReadAt(ctx, p, off)
		require.NoError(t, err)
		require.Equal(t, data[off:off+int64(k)], p[:k])
	}
	blocks := int32(nar.Blocks())
	loads := nar.loads.Load() + nar.runs.Load()
	require.Less(t, loads, blocks/2, "%d single loads and %d run loads for %d blocks", nar.loads.Load(), nar.runs.Load(), blocks)
}

func TestReaderReportsLoadErrors(t *testing.T) {
	nar := newMemNAR(make([]byte, 100), 10)
	boom := errors.New("boom")
	nar.fail = map[int]error{3: boom}
	r := testReader(nar, 1<<20)
	p := make([]byte, 50)
	k, err := r.ReadAt(context.Background(), p, 0)
	require.ErrorIs(t, err, boom)
	require.Equal(t, 30, k)
	require.Contains(t, err.Error(), "block 3 at 30")
}
