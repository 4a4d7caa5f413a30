package fusefs

import (
	"errors"
	"sync"
)

// errClosed reports work refused because the mount is closing.
var errClosed = errors.New("mount closed")

// group runs background goroutines until it is closed; close waits for
// those running and starts none after.
type group struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// start runs fn in a goroutine, unless the group is closed.
func (g *group) start(fn func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// close stops new goroutines and waits for the running ones.
func (g *group) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
