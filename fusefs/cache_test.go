package fusefs

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func value(n int) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return make([]byte, n), nil }
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		max     int64
		gets    []string // key:size, in order
		cached  []string
		evicted []string
	}{
		{"fits", 30, []string{"a:10", "b:10", "c:10"}, []string{"a", "b", "c"}, nil},
		{"oldest goes", 30, []string{"a:10", "b:10", "c:10", "d:10"}, []string{"b", "c", "d"}, []string{"a"}},
		{"a hit keeps a", 30, []string{"a:10", "b:10", "c:10", "a:10", "d:10"}, []string{"a", "c", "d"}, []string{"b"}},
		{"big value evicts several", 30, []string{"a:10", "b:10", "c:10", "d:25"}, []string{"d"}, []string{"a", "b", "c"}},
		{"larger than the cache is not kept", 30, []string{"a:10", "x:31"}, []string{"a"}, []string{"x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(tc.max, byteCost)
			for _, g := range tc.gets {
				key, size, _ := cut(g)
				n, err := strconv.Atoi(size)
				require.NoError(t, err)
				v, err := c.get(ctx, ctx, key, value(n))
				require.NoError(t, err)
				require.Len(t, v, n)
			}
			for _, k := range tc.cached {
				require.True(t, c.has(k), "%s cached", k)
			}
			for _, k := range tc.evicted {
				require.False(t, c.has(k), "%s evicted", k)
			}
			require.LessOrEqual(t, c.stats().Bytes, tc.max)
		})
	}
}

func TestCacheKeepsReadAheadApart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		adds    []string // key:size, ahead ones prefixed with ">"
		cached  []string
		evicted []string
	}{
		{"both fit", []string{"a:10", ">x:10", ">y:10"}, []string{"a", "x", "y"}, nil},
		{"ahead recycles itself", []string{"a:10", "b:10", ">x:10", ">y:10", ">z:10"}, []string{"a", "b", "y", "z"}, []string{"x"}},
		{"a hit keeps an ahead value", []string{">x:10", ">y:10", ">x:10", ">z:10"}, []string{"x", "z"}, []string{"y"}},
		{"demand values go first when all is full", []string{">x:10", ">y:10", "a:10", "b:10", "c:10"}, []string{"x", "y", "b", "c"}, []string{"a"}},
		{"ahead values go when no demand value is left", []string{">x:10", ">y:10", "a:40"}, []string{"a"}, []string{"x", "y"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(int64(40), byteCost).withAhead(20)
			for _, g := range tc.adds {
				key, size, _ := cut(g)
				n, err := strconv.Atoi(size)
				require.NoError(t, err)
				ahead := key[0] == '>'
				if ahead {
					key = key[1:]
				}
				c.mu.Lock()
				c.add(key, make([]byte, n), ahead)
				c.mu.Unlock()
			}
			for _, k := range tc.cached {
				require.True(t, c.has(k), "%s cached", k)
			}
			for _, k := range tc.evicted {
				require.False(t, c.has(k), "%s evicted", k)
			}
			st := c.stats()
			require.LessOrEqual(t, st.Bytes, int64(40))
			require.LessOrEqual(t, c.aheadUsed, int64(20))
		})
	}
}

func TestCachePrefetchAheadGoesToItsSegment(t *testing.T) {
	ctx := context.Background()
	c := newCache(int64(1<<20), byteCost).withAhead(100)
	for i := range 5 {
		require.True(t, c.prefetch(ctx, "k"+strconv.Itoa(i), true, value(40)))
		_, err := c.get(ctx, ctx, "k"+strconv.Itoa(i), value(40)) // waits for the load
		require.NoError(t, err)
	}
	require.True(t, c.prefetch(ctx, "demand", false, value(40)))
	_, err := c.get(ctx, ctx, "demand", value(40))
	require.NoError(t, err)
	c.mu.Lock()
	aheadUsed := c.aheadUsed
	c.mu.Unlock()
	require.Equal(t, int64(80), aheadUsed, "two ahead values of 40 fit in 100")
	require.True(t, c.has("demand"))
	require.True(t, c.has("k4"))
	require.False(t, c.has("k0"))
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestCacheSharesOneLoad(t *testing.T) {
	ctx := context.Background()
	c := newCache(1<<20, byteCost)
	var loads atomic.Int32
	release := make(chan struct{})
	fn := func(context.Context) ([]byte, error) {
		loads.Add(1)
		<-release
		return []byte("v"), nil
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			v, err := c.get(ctx, ctx, "k", fn)
			require.NoError(t, err)
			require.Equal(t, "v", string(v))
		})
	}
	require.Eventually(t, func() bool { return loads.Load() == 1 }, time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	require.Equal(t, int32(1), loads.Load())
	st := c.stats()
	require.Equal(t, uint64(1), st.Misses)
}

func TestCacheDoesNotKeepErrors(t *testing.T) {
	ctx := context.Background()
	c := newCache(1<<20, byteCost)
	boom := errors.New("boom")
	_, err := c.get(ctx, ctx, "k", func(context.Context) ([]byte, error) { return nil, boom })
	require.ErrorIs(t, err, boom)
	v, err := c.get(ctx, ctx, "k", value(3))
	require.NoError(t, err)
	require.Len(t, v, 3)
}

func TestCacheWaiterGivesUpAlone(t *testing.T) {
	c := newCache(1<<20, byteCost)
	release := make(chan struct{})
	fn := func(context.Context) ([]byte, error) { <-release; return []byte("v"), nil }
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.get(ctx, context.Background(), "k", fn)
	require.ErrorIs(t, err, context.Canceled)
	close(release)
	v, err := c.get(context.Background(), context.Background(), "k", fn)
	require.NoError(t, err, "the load went on for the others")
	require.Equal(t, "v", string(v))
}

func TestCacheRefusesLoadsAfterClose(t *testing.T) {
	ctx := context.Background()
	c := newCache(1<<20, byteCost)
	release := make(chan struct{})
	var ended atomic.Bool
	require.True(t, c.prefetch(ctx, "slow", false, func(context.Context) ([]byte, error) {
		<-release
		ended.Store(true)
		return []byte("v"), nil
	}))
	closed := make(chan struct{})
	go func() { c.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("close returned while a load ran")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	require.True(t, ended.Load())
	_, err := c.get(ctx, ctx, "new", value(1))
	require.ErrorIs(t, err, errClosed)
	require.False(t, c.prefetch(ctx, "other", false, value(1)))
	v, err := c.get(ctx, ctx, "slow", value(1))
	require.NoError(t, err, "what is cached stays readable")
	require.Equal(t, "v", string(v))
}

func TestCachePrefetchRun(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		cached  []string // present before the run
		keys    []string
		err     error
		claimed int
	}{
		{"all free", nil, []string{"a", "b", "c"}, nil, 3},
		{"stops at a cached key", []string{"c"}, []string{"a", "b", "c", "d"}, nil, 2},
		{"first cached", []string{"a"}, []string{"a", "b"}, nil, 0},
		{"error reaches every waiter", nil, []string{"a", "b"}, boom, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(1<<20, byteCost)
			for _, k := range tc.cached {
				_, err := c.get(ctx, ctx, k, value(1))
				require.NoError(t, err)
			}
			var calls atomic.Int32
			release := make(chan struct{})
			n := c.prefetchRun(ctx, tc.keys, func(_ context.Context, n int) ([][]byte, error) {
				calls.Add(1)
				<-release
				if tc.err != nil {
					return nil, tc.err
				}
				out := make([][]byte, n)
				for i := range out {
					out[i] = []byte(tc.keys[i])
				}
				return out, nil
			})
			require.Equal(t, tc.claimed, n)
			// Waiters join the run's loads while it is in flight.
			errs := make([]error, n)
			vals := make([][]byte, n)
			var wg sync.WaitGroup
			for i, k := range tc.keys[:n] {
				wg.Go(func() {
					vals[i], errs[i] = c.get(ctx, ctx, k, func(context.Context) ([]byte, error) { return nil, errors.New("not from the run") })
				})
			}
			require.Eventually(t, func() bool {
				for _, k := range tc.keys[:n] {
					if c.joined(k) != 1 {
						return false
					}
				}
				return true
			}, 5*time.Second, time.Millisecond, "every waiter joined the run's load")
			close(release)
			wg.Wait()
			for i, k := range tc.keys[:n] {
				if tc.err != nil {
					require.ErrorIs(t, errs[i], tc.err)
					require.False(t, c.has(k), "errors are not kept")
					continue
				}
				require.NoError(t, errs[i])
				require.Equal(t, k, string(vals[i]))
			}
			if n > 0 {
				require.Equal(t, int32(1), calls.Load(), "one load for the whole run")
			}
		})
	}
}
