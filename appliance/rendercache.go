package appliance

import "sync"

// renderCacheMax bounds the rendered narinfos kept; past it the cache
// starts over.
const renderCacheMax = 65536

// renderCache keeps the narinfo text served for stored paths. Entries
// belong to one index generation: any index write makes them all stale,
// so a hit never serves a narinfo that was changed or deleted.
type renderCache struct {
	mu  sync.RWMutex
	gen uint64
	m   map[string][]byte
}

func (c *renderCache) get(hash string, gen uint64) []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.gen != gen {
		return nil
	}
	return c.m[hash]
}

func (c *renderCache) put(hash string, gen uint64, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen < c.gen {
		return // rendered from an older index than the entries held
	}
	if c.gen != gen || c.m == nil || len(c.m) >= renderCacheMax {
		c.m, c.gen = make(map[string][]byte), gen
	}
	c.m[hash] = b
}
