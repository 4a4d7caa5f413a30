package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// logBuffer collects log lines and writes them to its sink in batches from
// a goroutine of its own, so that one line per request costs no system call
// per request, and a slow sink (a busy journald, a pipe nobody drains, a
// terminal over a slow link) never holds up a request. It keeps at most
// limit bytes waiting; past that it drops lines, and says how many once the
// sink takes writes again.
type logBuffer struct {
	w     io.Writer
	limit int
	now   func() time.Time

	mu      sync.Mutex
	buf     []byte // lines waiting for the sink
	dropped int    // lines dropped since the last write
	kick    chan struct{}

	writeMu sync.Mutex // one write to the sink at a time
	spare   []byte     // the last batch written, reused; writeMu guards it
	stop    chan struct{}
	done    chan struct{}
}

// Log lines are written every flushEvery, or as soon as logKick bytes wait.
// At most logLimit bytes wait; a sink that falls that far behind loses lines.
const (
	flushEvery = 200 * time.Millisecond
	logKick    = 64 << 10
	logLimit   = 8 << 20
)

func newLogBuffer(w io.Writer) *logBuffer { return newLogBufferLimit(w, logLimit) }

func newLogBufferLimit(w io.Writer, limit int) *logBuffer {
	b := &logBuffer{w: w, limit: limit, now: time.Now, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// Write queues one log line. It never waits for the sink.
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	if len(b.buf)+len(p) > b.limit {
		b.dropped++
	} else {
		b.buf = append(b.buf, p...)
	}
	full := len(b.buf) >= logKick
	b.mu.Unlock()
	if full {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (b *logBuffer) loop() {
	defer close(b.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		case <-b.kick:
		}
		b.flush()
	}
}

// flush writes what waits, and a line counting the lines dropped before it.
func (b *logBuffer) flush() {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	b.mu.Lock()
	out, dropped := b.buf, b.dropped
	b.buf, b.dropped = b.spare[:0], 0
	b.mu.Unlock()
	if dropped > 0 {
		out = fmt.Appendf(out, "time=%s level=WARN msg=\"log lines dropped: the log output did not keep up\" lines=%d\n",
			b.now().Format(time.RFC3339Nano), dropped)
	}
	if len(out) > 0 {
		_, _ = b.w.Write(out) // nowhere to report a failing log sink
	}
	b.spare = nil // a burst's large buffer is let go
	if cap(out) <= 4*logKick {
		b.spare = out
	}
}

// Close stops the writer goroutine and writes what is left.
func (b *logBuffer) Close() error {
	close(b.stop)
	<-b.done
	b.flush()
	return nil
}
