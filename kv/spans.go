package kv

import (
	"sync"

	"cairn/cdc"
)

// spanCacheEntries is how many frame locations LocateFrames keeps: the
// locations of 1.7 GB of recompressed frames, in about 7 MiB of map.
const spanCacheEntries = 1 << 16

// spanCache keeps where frames lie in the value-log files, so that a send
// of a NAR sent before needs no Badger lookups. An entry is only a hint:
// LocateFrames checks it as it checks a lookup, and a frame recompressed
// since shows up as another length than the manifest's.
//
// A lookup may race a write of the same chunk and find the frame it
// replaces. So every write, delete and value-log rewrite moves gen on once
// it can be seen, and drops what it touched; locations looked up before
// that are not kept.
type spanCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[cdc.ID]span
	max int
}

func newSpanCache(max int) *spanCache {
	return &spanCache{m: make(map[cdc.ID]span), max: max}
}

// get returns the cached location of id's frame.
func (c *spanCache) get(id cdc.ID) (span, bool) {
	c.mu.Lock()
	sp, ok := c.m[id]
	c.mu.Unlock()
	return sp, ok
}

// generation is what add must be given for locations looked up from now on.
func (c *spanCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// add keeps the locations of ids, looked up after generation gen began,
// unless a write has been seen since. A full cache keeps about three
// quarters of its entries, whichever the map yields, in a new map: a Go
// map never shrinks, and deleting in place lets it grow without bound
// under churn.
func (c *spanCache) add(gen uint64, ids []cdc.ID, spans []span) {
	if len(ids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m)+len(ids) > c.max {
		keep := max(c.max-max(c.max/4, len(ids)), 0)
		m := make(map[cdc.ID]span, c.max)
		for id, sp := range c.m {
			if len(m) >= keep {
				break
			}
			m[id] = sp
		}
		c.m = m
	}
	for i, id := range ids {
		if len(c.m) >= c.max {
			return
		}
		c.m[id] = spans[i]
	}
}

// forget drops the locations of ids, after a write or delete of them can
// be seen, and refuses locations looked up before.
func (c *spanCache) forget(ids []cdc.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, id := range ids {
		delete(c.m, id)
	}
}

// clear drops every location, after the value-log GC moved frames.
func (c *spanCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.m = make(map[cdc.ID]span)
}

// len is how many locations are kept.
func (c *spanCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
