package upstream

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMissCache(t *testing.T) {
	now := time.Unix(1e9, 0)
	c := newMissCache(time.Minute, 2, func() time.Time { return now })
	steps := []struct {
		do   string // "add", "tick" or "has"
		key  string
		want bool
	}{
		{"add", "a", false}, {"add", "b", false},
		{"has", "a", true}, {"has", "b", true},
		{"add", "c", false}, // full: forgets a, the oldest
		{"has", "a", false}, {"has", "b", true}, {"has", "c", true},
		{"tick", "", false}, // a minute passes
		{"has", "b", false}, {"has", "c", false},
		{"add", "d", false}, {"add", "d", false}, {"add", "e", false},
		{"has", "d", true}, {"has", "e", true},
	}
	for i, s := range steps {
		switch s.do {
		case "add":
			c.add(s.key)
		case "tick":
			now = now.Add(time.Minute)
		case "has":
			require.Equal(t, s.want, c.has(s.key), "step %d: has %s", i, s.key)
		}
		require.LessOrEqual(t, len(c.until), 2)
		require.LessOrEqual(t, len(c.order), 3)
	}
}
