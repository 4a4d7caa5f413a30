package appliance

import (
	"sync"
	"sync/atomic"
)

// frameBuf is a stored frame an ingest made, shared by the chunk batch that
// writes it, the live view that serves it to followers, and those
// followers. The last holder to let go returns its buffer to the pool, so
// that the next frame reuses memory the process already has mapped instead
// of making the garbage collector clear and the kernel map fresh pages.
// A holder that never lets go only costs the recycling: the garbage
// collector then frees the buffer as usual.
type frameBuf struct {
	b     []byte
	refs  atomic.Int32
	pool  *framePool // nil for a buffer too large to pool
	class int
}

// hold adds a holder. The caller must already hold the frame, or reach it
// through a holder that cannot let go meanwhile.
func (f *frameBuf) hold() { f.refs.Add(1) }

// release drops a holder, returning the buffer to its pool with the last.
func (f *frameBuf) release() {
	switch n := f.refs.Add(-1); {
	case n < 0:
		panic("appliance: frame buffer released more often than held")
	case n == 0 && f.pool != nil:
		f.pool.classes[f.class].Put(f)
	}
}

// Frame buffers come in size classes of framePoolStep bytes, up to the
// largest frame the chunker's largest chunk makes; a buffer wastes less
// than one step.
const framePoolStep = 32 << 10

// framePool recycles frame buffers, and the chunk copies frames are made
// from, between the chunks and ingests of a store.
type framePool struct {
	classes []sync.Pool // classes[i] holds buffers of (i+1)*framePoolStep bytes
}

func newFramePool(maxFrame int) *framePool {
	return &framePool{classes: make([]sync.Pool, (maxFrame+framePoolStep-1)/framePoolStep)}
}

// get returns an empty buffer of at least size bytes. The caller sets how
// many hold it.
func (p *framePool) get(size int) *frameBuf {
	class := max(size-1, 0) / framePoolStep
	if class >= len(p.classes) {
		return &frameBuf{b: make([]byte, 0, size)}
	}
	if f, _ := p.classes[class].Get().(*frameBuf); f != nil {
		f.b = f.b[:0]
		return f
	}
	return &frameBuf{b: make([]byte, 0, (class+1)*framePoolStep), pool: p, class: class}
}
