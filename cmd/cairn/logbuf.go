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
	w         io.Writer
	limit     int           // bytes waiting or being written, at most
	every     time.Duration // how often waiting lines are written
	closeWait time.Duration // how long Close waits for a stuck sink
	now       func() time.Time

	mu      sync.Mutex
	buf     []byte // lines waiting for the sink
	writing int    // bytes of the batch being written
	dropped int    // lines dropped since the last write
	kick    chan struct{}

	writeMu sync.Mutex // one write to the sink at a time
	spare   []byte     // the last batch written, reused; writeMu guards it
	stop    chan struct{}
	done    chan struct{}
}

// Log lines are written every flushEvery, or as soon as logKick bytes wait.
// At most logLimit bytes wait or are being written; a sink that falls that
// far behind loses lines. Close gives a stuck sink logCloseWait.
const (
	flushEvery   = 200 * time.Millisecond
	logKick      = 64 << 10
	logLimit     = 8 << 20
	logCloseWait = 2 * time.Second
)

func newLogBuffer(w io.Writer) *logBuffer {
	return startLogBuffer(&logBuffer{w: w, limit: logLimit, every: flushEvery, closeWait: logCloseWait, now: time.Now})
}

// startLogBuffer starts b's writer goroutine.
func startLogBuffer(b *logBuffer) *logBuffer {
	b.kick, b.stop, b.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go b.loop()
	return b
}

// Write queues one log line. It never waits for the sink.
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	if len(b.buf)+b.writing+len(p) > b.limit {
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
	t := time.NewTicker(b.every)
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
	b.buf, b.dropped, b.writing = b.spare[:0], 0, len(out)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.writing = 0
		b.mu.Unlock()
	}()
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

// Close stops the writer goroutine and writes what is left, unless the
// sink has not taken a write for closeWait: then what waits is lost rather
// than holding up the process's exit.
func (b *logBuffer) Close() error {
	close(b.stop)
	flushed := make(chan struct{})
	go func() {
		<-b.done
		b.flush()
		close(flushed)
	}()
	select {
	case <-flushed:
	case <-time.After(b.closeWait):
	}
	return nil
}
