package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// gatedWriter blocks every write until open is closed, as a log sink that
// stopped reading does.
type gatedWriter struct {
	open chan struct{}
	syncBuffer
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.open
	return g.syncBuffer.Write(p)
}

func TestLogBuffer(t *testing.T) {
	line := func(i int) string { return fmt.Sprintf("line %04d\n", i) } // 10 bytes
	tests := []struct {
		name      string
		lines     int
		limit     int
		stuckSink bool // the sink blocks until every line is written
		kept      int  // lines that reach the sink at least
	}{
		{"everything arrives in order", 5000, 1 << 20, false, 5000},
		{"a stuck sink never holds up a writer", 5000, 1 << 20, true, 5000},
		{"past the limit lines are dropped and counted", 500, 1000, true, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := &gatedWriter{open: make(chan struct{})}
			if !tc.stuckSink {
				close(sink.open)
			}
			b := newLogBufferLimit(sink, tc.limit)
			b.now = func() time.Time { return time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC) }
			start := time.Now()
			for i := range tc.lines {
				n, err := b.Write([]byte(line(i)))
				require.NoError(t, err)
				require.Equal(t, 10, n)
			}
			require.Less(t, time.Since(start), 5*time.Second, "writes waited for the sink")
			if tc.stuckSink {
				close(sink.open)
			}
			require.NoError(t, b.Close())
			// What arrives is the first lines in order, then, if any were
			// dropped, one line counting the rest: once the buffer is full
			// nothing after it gets in until the sink takes it.
			got := sink.String()
			kept := strings.Count(got, "line ")
			require.GreaterOrEqual(t, kept, tc.kept)
			var want strings.Builder
			for i := range kept {
				want.WriteString(line(i))
			}
			if dropped := tc.lines - kept; dropped > 0 {
				fmt.Fprintf(&want, "time=2026-12-05T00:00:00Z level=WARN msg=\"log lines dropped: the log output did not keep up\" lines=%d\n", dropped)
			}
			require.Equal(t, want.String(), got)
		})
	}
}
