package appliance

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFramePoolSizesBuffersByClass(t *testing.T) {
	p := newFramePool(256<<10 + 30)
	for _, tc := range []struct {
		size, wantCap int
		pooled        bool
	}{
		{0, framePoolStep, true},
		{1, framePoolStep, true},
		{framePoolStep, framePoolStep, true},
		{framePoolStep + 1, 2 * framePoolStep, true},
		{256<<10 + 30, 9 * framePoolStep, true},
		{300 << 10, 300 << 10, false}, // larger than any class: made to measure
	} {
		f := p.get(tc.size)
		require.Empty(t, f.b, "size %d", tc.size)
		require.Equal(t, tc.wantCap, cap(f.b), "size %d", tc.size)
		require.Equal(t, tc.pooled, f.pool != nil, "size %d", tc.size)
	}
}

func TestFrameBufReleasedTooOftenPanics(t *testing.T) {
	f := newFramePool(1 << 20).get(100)
	f.refs.Store(2)
	f.hold()
	f.release()
	f.release()
	f.release() // the last holder: back to the pool
	require.Panics(t, f.release)
}
