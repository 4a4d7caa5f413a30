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
		kept      int  // lines that reach the sink
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
			// No timed write before Close: what reaches the sink depends
			// only on the lines and the limit.
			b := startLogBuffer(&logBuffer{w: sink, limit: tc.limit, every: time.Hour, closeWait: time.Minute,
				now: func() time.Time { return time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC) }})
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
			got := sink.String()
			var want strings.Builder
			for i := range tc.kept {
				want.WriteString(line(i))
			}
			if dropped := tc.lines - tc.kept; dropped > 0 {
				fmt.Fprintf(&want, "time=2026-12-05T00:00:00Z level=WARN msg=\"log lines dropped: the log output did not keep up\" lines=%d\n", dropped)
			}
			require.Equal(t, want.String(), got)
		})
	}
}

func TestLogBufferCloseGivesUpOnAStuckSink(t *testing.T) {
	sink := &gatedWriter{open: make(chan struct{})} // never opens
	b := startLogBuffer(&logBuffer{w: sink, limit: 1 << 20, every: time.Millisecond, closeWait: 50 * time.Millisecond, now: time.Now})
	_, err := b.Write([]byte("line\n"))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond) // the writer is stuck in the sink by now
	start := time.Now()
	require.NoError(t, b.Close())
	require.Less(t, time.Since(start), 5*time.Second)
	close(sink.open) // let the stuck write go, so the test leaks nothing
}

func TestLogBufferLimitCountsTheBatchBeingWritten(t *testing.T) {
	line := func(i int) []byte { return fmt.Appendf(nil, "line %04d\n", i) } // 10 bytes
	sink := &gatedWriter{open: make(chan struct{})}
	b := startLogBuffer(&logBuffer{w: sink, limit: 1000, every: time.Hour, closeWait: time.Minute,
		now: func() time.Time { return time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC) }})
	for i := range 50 {
		_, _ = b.Write(line(i))
	}
	go b.flush() // takes lines 0-49 and sticks in the sink
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.writing == 500
	}, 10*time.Second, time.Millisecond)
	for i := 50; i < 150; i++ { // room for 50 of them
		_, _ = b.Write(line(i))
	}
	close(sink.open)
	require.NoError(t, b.Close())
	var want strings.Builder
	for i := range 100 {
		want.Write(line(i))
	}
	want.WriteString("time=2026-12-05T00:00:00Z level=WARN msg=\"log lines dropped: the log output did not keep up\" lines=50\n")
	require.Equal(t, want.String(), sink.String())
}
