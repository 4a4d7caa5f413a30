package fusefs

import (
	"container/list"
	"context"
	"fmt"
	"sync"
)

// cache is a least-recently-used cache of immutable values, bounded by
// their total cost (bytes, for blocks). Concurrent misses of one key share
// one load.
//
// Values loaded ahead of a sequential reader (prefetch with ahead set,
// prefetchRun) are kept apart, in a segment of at most aheadMax: a stream
// through a large NAR or tree then recycles a few MiB instead of pushing
// every value that random reads loaded out of the cache, and the process
// does not grow by the whole stream, whose fresh memory costs a page fault
// per 4 KiB.
type cache[V any] struct {
	max      int64
	aheadMax int64 // bound of the read-ahead segment; 0 for none
	cost     func(V) int64

	mu        sync.Mutex
	used      int64      // cost held in both segments
	aheadUsed int64      // cost held in the read-ahead segment
	ll        *list.List // of *cacheEntry loaded on demand, most recently used first
	ahead     *list.List // of *cacheEntry loaded ahead, most recently used first
	items     map[string]*list.Element
	loading   map[string]*load[V]

	hits, misses uint64

	loads group
}

type cacheEntry[V any] struct {
	key   string
	val   V
	cost  int64
	ahead bool // in the read-ahead segment
}

// load is a load in progress; done is closed once val or err is set.
type load[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int  // callers that joined the load; guarded by the cache's mu
	ahead   bool // loaded ahead of a reader: kept in the read-ahead segment
}

// newCache returns a cache holding values of at most maxCost in total. A
// value costing more than the whole cache is returned but not kept.
func newCache[V any](maxCost int64, cost func(V) int64) *cache[V] {
	return &cache[V]{max: maxCost, cost: cost, ll: list.New(), ahead: list.New(), items: map[string]*list.Element{}, loading: map[string]*load[V]{}}
}

// withAhead bounds the read-ahead segment at maxCost and returns c; before
// it, values loaded ahead are kept like any other.
func (c *cache[V]) withAhead(maxCost int64) *cache[V] {
	c.aheadMax = maxCost
	return c
}

// byteCost is the cost of a block: its length.
func byteCost(b []byte) int64 { return int64(len(b)) }

// get returns the value of key, calling fn to load it on a miss. The load
// runs with loadCtx, not ctx, so a caller that gives up does not fail the
// others waiting for the same key; ctx only bounds this caller's wait.
func (c *cache[V]) get(ctx, loadCtx context.Context, key string, fn func(context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.touch(el)
		c.hits++
		v := el.Value.(*cacheEntry[V]).val
		c.mu.Unlock()
		return v, nil
	}
	l, running := c.loading[key]
	if running {
		l.waiters++
	}
	if !running {
		l = &load[V]{done: make(chan struct{})}
		c.loading[key] = l
		c.misses++
	}
	if !running && !c.loads.start(func() { c.run(loadCtx, key, l, fn) }) {
		delete(c.loading, key)
		l.err = errClosed
		close(l.done)
	}
	c.mu.Unlock()
	select {
	case <-l.done:
		return l.val, l.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// run loads key and publishes the result.
func (c *cache[V]) run(ctx context.Context, key string, l *load[V], fn func(context.Context) (V, error)) {
	if l.err = ctx.Err(); l.err == nil {
		l.val, l.err = fn(ctx)
	}
	c.mu.Lock()
	delete(c.loading, key)
	if l.err == nil {
		c.add(key, l.val, l.ahead)
	}
	c.mu.Unlock()
	close(l.done)
}

// prefetch starts loading key unless it is cached or loading already, and
// does not wait. It reports whether a load was started. A value loaded
// ahead of a sequential reader goes to the read-ahead segment.
func (c *cache[V]) prefetch(loadCtx context.Context, key string, ahead bool, fn func(context.Context) (V, error)) bool {
	c.mu.Lock()
	_, cached := c.items[key]
	_, running := c.loading[key]
	if cached || running {
		c.mu.Unlock()
		return false
	}
	l := &load[V]{done: make(chan struct{}), ahead: ahead}
	c.loading[key] = l
	started := c.loads.start(func() { c.run(loadCtx, key, l, fn) })
	if !started {
		delete(c.loading, key)
		l.err = errClosed
		close(l.done)
	}
	c.mu.Unlock()
	return started
}

// prefetchRun starts loading a run of keys ahead of a reader with one call
// of fn, which gets how many of them to load and returns their values in
// order. It claims keys from the first on while they are neither cached
// nor loading, and returns how many it claimed; those are loaded, into the
// read-ahead segment, the rest left alone.
func (c *cache[V]) prefetchRun(loadCtx context.Context, keys []string, fn func(ctx context.Context, n int) ([]V, error)) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var loads []*load[V]
	for _, k := range keys {
		_, cached := c.items[k]
		_, running := c.loading[k]
		if cached || running {
			break
		}
		l := &load[V]{done: make(chan struct{})}
		c.loading[k] = l
		loads = append(loads, l)
	}
	n := len(loads)
	if n == 0 {
		return 0
	}
	claimed := keys[:n]
	publish := func(vals []V, err error) {
		for i, l := range loads {
			delete(c.loading, claimed[i])
			if l.err = err; err == nil && i < len(vals) {
				l.val = vals[i]
				c.add(claimed[i], l.val, true)
			} else if err == nil {
				l.err = fmt.Errorf("run load returned %d of %d values", len(vals), n)
			}
			close(l.done)
		}
	}
	started := c.loads.start(func() {
		var vals []V
		err := loadCtx.Err()
		if err == nil {
			vals, err = fn(loadCtx, n)
		}
		c.mu.Lock()
		publish(vals, err)
		c.mu.Unlock()
	})
	if !started {
		publish(nil, errClosed)
	}
	return n
}

// joined returns how many callers joined the running load of key.
func (c *cache[V]) joined(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.loading[key]; ok {
		return l.waiters
	}
	return 0
}

// close refuses new loads and waits for those running.
func (c *cache[V]) close() { c.loads.close() }

// has reports whether key is cached or loading.
func (c *cache[V]) has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, cached := c.items[key]
	_, running := c.loading[key]
	return cached || running
}

// add inserts a value, into the read-ahead segment when ahead is set and
// there is one, and evicts the least recently used ones beyond the bounds;
// mu is held.
func (c *cache[V]) add(key string, val V, ahead bool) {
	size := c.cost(val)
	if size > c.max {
		return
	}
	if el, ok := c.items[key]; ok {
		c.touch(el)
		return
	}
	ahead = ahead && c.aheadMax > 0
	e := &cacheEntry[V]{key: key, val: val, cost: size, ahead: ahead}
	var added *list.Element
	if ahead {
		added = c.ahead.PushFront(e)
		c.aheadUsed += size
	} else {
		added = c.ll.PushFront(e)
	}
	c.items[key] = added
	c.used += size
	for c.aheadUsed > c.aheadMax && c.ahead.Back() != added {
		c.evict(c.ahead.Back())
	}
	// Demand values go first: the read-ahead segment has its own bound.
	// The value just added stays, as it fits.
	for c.used > c.max {
		el := c.ll.Back()
		if el == nil || el == added {
			el = c.ahead.Back()
		}
		c.evict(el)
	}
}

// touch marks an entry as just used, within its segment; mu is held.
func (c *cache[V]) touch(el *list.Element) {
	if el.Value.(*cacheEntry[V]).ahead {
		c.ahead.MoveToFront(el)
		return
	}
	c.ll.MoveToFront(el)
}

// evict drops an entry; mu is held.
func (c *cache[V]) evict(el *list.Element) {
	e := el.Value.(*cacheEntry[V])
	if e.ahead {
		c.ahead.Remove(el)
		c.aheadUsed -= e.cost
	} else {
		c.ll.Remove(el)
	}
	delete(c.items, e.key)
	c.used -= e.cost
}

// CacheStats are a cache's counters.
type CacheStats struct {
	Bytes, MaxBytes int64 // cost held, and the bound
	Entries         int
	Hits, Misses    uint64
}

// stats returns the cache's counters.
func (c *cache[V]) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Bytes: c.used, MaxBytes: c.max, Entries: len(c.items), Hits: c.hits, Misses: c.misses}
}
