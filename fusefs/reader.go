package fusefs

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// loader runs the block loads of one mount: every block goes through its
// cache, and background read-ahead is bounded by sem.
type loader struct {
	cache *cache[[]byte]
	base  context.Context // the mount's lifetime: loads run with it
	sem   chan struct{}   // slots for loads running at once
	ahead int64           // bytes read ahead of a sequential reader
}

// newLoader returns a loader over c allowing parallel loads at once.
func newLoader(base context.Context, c *cache[[]byte], parallel int, ahead int64) *loader {
	return &loader{cache: c, base: base, sem: make(chan struct{}, max(parallel, 1)), ahead: ahead}
}

// reader reads a NAR through the mount's block cache. Reads that follow
// one another start loading the blocks after them in the background, so
// a sequential reader, or a walk over a store path's files in NAR order,
// rarely waits for a load.
type reader struct {
	nar NAR
	ld  *loader
	key string // the NAR, for error messages

	mu     sync.Mutex
	next   int64 // offset just past the previous read
	streak int   // sequential reads in a row
	issued int   // blocks before this one were read ahead in this streak
}

// seqSlack is how far a read may start from the end of the previous one
// and still count as sequential: the kernel's read-ahead reorders reads a
// little, and a tree walk skips the NAR framing between files.
const seqSlack = 1 << 20

func newReader(nar NAR, ld *loader, key string) *reader {
	return &reader{nar: nar, ld: ld, key: key, next: -1}
}

// Size is the NAR's length.
func (r *reader) Size() int64 { return r.nar.Size() }

// ReadAt reads len(p) bytes from off, fewer only at the end of the NAR,
// where it returns io.EOF.
func (r *reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	size := r.nar.Size()
	if off < 0 {
		return 0, fmt.Errorf("read %s at %d: negative offset", r.key, off)
	}
	if off >= size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > size-off {
		p, short = p[:size-off], true
	}
	if len(p) == 0 {
		return 0, nil
	}
	first, last := r.nar.Find(off), r.nar.Find(off+int64(len(p))-1)
	window := r.track(off, int64(len(p)))
	for i := first + 1; i <= last; i++ { // blocks of this read, in parallel
		r.prefetch(i, window > 0)
	}
	if window > 0 {
		r.readAhead(last+1, off+int64(len(p))+window)
	}
	done := 0
	for i := first; i <= last; i++ {
		b := r.nar.Block(i)
		data, err := r.block(ctx, i, b)
		if err != nil {
			return done, err
		}
		done += copy(p[done:], data[off+int64(done)-b.Off:])
	}
	if short {
		return done, io.EOF
	}
	return done, nil
}

// track records a read and returns how many bytes to read ahead of it.
func (r *reader) track(off, n int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next >= 0 && off >= r.next-seqSlack && off <= r.next+seqSlack {
		r.streak++
		r.next = max(r.next, off+n)
	} else {
		r.streak, r.next, r.issued = 0, off+n, 0
	}
	if r.streak == 0 {
		return 0
	}
	// Ramp up: a reader that keeps going gets the whole window.
	return min(r.ld.ahead, int64(128<<10)<<min(r.streak, 10))
}

// maxRun bounds how many blocks one run load asks for.
const maxRun = 16

// readAhead starts loading blocks from i until one starts at or after end.
// A NAR that loads runs of blocks cheaply gets each run of blocks that are
// neither cached nor loading in one load.
func (r *reader) readAhead(i int, end int64) {
	i = r.claimAhead(i)
	runs, _ := r.nar.(RunLoader)
	for i < r.nar.Blocks() && r.nar.Block(i).Off < end {
		if runs == nil {
			r.prefetch(i, true)
			i++
			continue
		}
		var keys []string
		for j := i; j < r.nar.Blocks() && r.nar.Block(j).Off < end && len(keys) < maxRun; j++ {
			keys = append(keys, r.nar.Block(j).Key)
		}
		first := i
		n := r.ld.cache.prefetchRun(r.ld.base, keys, func(ctx context.Context, n int) ([][]byte, error) {
			if err := r.acquire(ctx); err != nil {
				return nil, err
			}
			defer r.release()
			return runs.LoadRun(ctx, first, n)
		})
		i += max(n, 1)
	}
	r.doneAhead(i)
}

// claimAhead returns the first block from i on that this streak has not
// read ahead yet: a reader going through small files asks for the same
// window again on every read, and looking each block up again would cost
// more than the reads.
func (r *reader) claimAhead(i int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(i, r.issued)
}

// doneAhead notes that the blocks before i were read ahead.
func (r *reader) doneAhead(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streak > 0 {
		r.issued = max(r.issued, i)
	}
}

// acquire takes a load slot.
func (r *reader) acquire(ctx context.Context) error {
	select {
	case r.ld.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *reader) release() { <-r.ld.sem }

// prefetch starts loading block i in the background; ahead says it is
// loaded ahead of a sequential reader rather than for a read.
func (r *reader) prefetch(i int, ahead bool) {
	b := r.nar.Block(i)
	r.ld.cache.prefetch(r.ld.base, b.Key, ahead, r.loadFunc(i))
}

// block returns block i's bytes, from the cache or loaded.
func (r *reader) block(ctx context.Context, i int, b Block) ([]byte, error) {
	data, err := r.ld.cache.get(ctx, r.ld.base, b.Key, r.loadFunc(i))
	if err != nil {
		return nil, fmt.Errorf("read %s block %d at %d: %w", r.key, i, b.Off, err)
	}
	if len(data) != b.Size {
		return nil, fmt.Errorf("read %s block %d at %d: got %d bytes, want %d", r.key, i, b.Off, len(data), b.Size)
	}
	return data, nil
}

func (r *reader) loadFunc(i int) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		if err := r.acquire(ctx); err != nil {
			return nil, err
		}
		defer r.release()
		return r.nar.Load(ctx, i)
	}
}
