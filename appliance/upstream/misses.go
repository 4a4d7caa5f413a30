package upstream

import (
	"sync"
	"time"
)

// missCache remembers narinfo misses for a fixed TTL, bounded in count;
// when full it forgets the oldest.
type missCache struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	now   func() time.Time
	until map[string]time.Time
	order []miss // by expiry, which is insertion order since the TTL is fixed
}

type miss struct {
	key   string
	until time.Time
}

func newMissCache(ttl time.Duration, max int, now func() time.Time) *missCache {
	return &missCache{ttl: ttl, max: max, now: now, until: make(map[string]time.Time)}
}

// has reports whether key is a remembered, unexpired miss.
func (c *missCache) has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.until[key]
	if ok && !c.now().Before(until) {
		delete(c.until, key)
		ok = false
	}
	return ok
}

// add remembers a miss for key.
func (c *missCache) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for len(c.order) > 0 && (len(c.until) >= c.max || len(c.order) > c.max || !now.Before(c.order[0].until)) {
		m := c.order[0]
		c.order = c.order[1:]
		if until, ok := c.until[m.key]; ok && until.Equal(m.until) {
			delete(c.until, m.key)
		}
	}
	m := miss{key, now.Add(c.ttl)}
	c.until[key] = m.until
	c.order = append(c.order, m)
}
