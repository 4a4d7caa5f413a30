package appliance

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRenderCacheKeepsNewestGeneration(t *testing.T) {
	tests := []struct {
		name string
		puts []uint64 // generations of successive puts of keys "a", "b", ...
		gen  uint64   // generation of the gets
		want []bool   // which keys hit
	}{
		{"same generation", []uint64{1, 1}, 1, []bool{true, true}},
		{"newer generation starts over", []uint64{1, 2}, 2, []bool{false, true}},
		{"older put leaves newer entries", []uint64{2, 1}, 2, []bool{true, false}},
		{"stale get misses", []uint64{1}, 2, []bool{false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c renderCache
			for i, g := range tt.puts {
				c.put(string(rune('a'+i)), g, []byte{byte(i)})
			}
			for i, want := range tt.want {
				require.Equal(t, want, c.get(string(rune('a'+i)), tt.gen) != nil, "key %c", 'a'+i)
			}
		})
	}
}
