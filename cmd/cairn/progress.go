package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progressConfig is where and how a progress reporter shows itself.
type progressConfig struct {
	Out io.Writer
	// Terminal redraws one bar in place; otherwise a plain line is
	// printed every Every.
	Terminal bool
	Every    time.Duration    // default 200ms on a terminal, 5s otherwise
	Width    int              // terminal columns; default 80
	Now      func() time.Time // nil means time.Now
}

// progressTo returns the configuration for showing progress on f: a bar
// when f is a terminal, plain lines otherwise.
func progressTo(f io.Writer) progressConfig {
	cfg := progressConfig{Out: f}
	if file, ok := f.(*os.File); ok {
		fd := int(file.Fd())
		if _, err := unix.IoctlGetTermios(fd, termiosGet); err == nil {
			cfg.Terminal = true
			if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
				cfg.Width = int(ws.Col)
			}
		}
	}
	return cfg
}

// progress shows how far a long operation has come, in bytes: on a
// terminal a bar with bytes, rate and ETA redrawn in place, otherwise a
// plain line every few seconds. An operation runs in phases; each one
// ends with a summary line. The total of a phase may be unknown (< 0).
// It is safe for concurrent use.
type progress struct {
	cfg  progressConfig
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	label   string
	total   int64
	n       int64
	start   time.Time
	samples []progressSample // recent counts, for the rate
	printed time.Time        // the last plain line
	drawn   bool             // a bar is on the terminal's current line
	closed  bool
}

type progressSample struct {
	at time.Time
	n  int64
}

// rateWindow is how far back the rate looks, so that it follows changes
// of speed without jumping at every tick.
const rateWindow = 5 * time.Second

// newProgress starts a reporter; Close stops it.
func newProgress(cfg progressConfig) *progress {
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Second
		if cfg.Terminal {
			cfg.Every = 200 * time.Millisecond
		}
	}
	if cfg.Width <= 0 {
		cfg.Width = 80
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &progress{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{}), start: cfg.Now(), total: -1}
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(p.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.tick()
		}
	}
}

// Phase ends the current phase with its summary line and starts another
// of total bytes (< 0 when unknown).
func (p *progress) Phase(label string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endPhase()
	now := p.cfg.Now()
	p.label, p.total, p.n, p.start, p.printed = label, total, 0, now, now
	p.samples = append(p.samples[:0], progressSample{now, 0})
}

// Add counts n more bytes done.
func (p *progress) Add(n int64) {
	p.mu.Lock()
	p.n += n
	p.mu.Unlock()
}

// Printf prints a line, above the bar on a terminal.
func (p *progress) Printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.cfg.Out, format, args...)
	p.draw(p.cfg.Now())
}

// Close ends the current phase with its summary line and stops the
// reporter.
func (p *progress) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.endPhase()
	p.label = ""
	p.mu.Unlock()
	close(p.stop)
	<-p.done
}

// tick samples the count and redraws the bar, or prints a plain line
// when one is due.
func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.label == "" || p.closed {
		return
	}
	now := p.cfg.Now()
	p.samples = append(p.samples, progressSample{now, p.n})
	for len(p.samples) > 2 && now.Sub(p.samples[1].at) >= rateWindow {
		p.samples = p.samples[1:]
	}
	if p.cfg.Terminal {
		p.draw(now)
		return
	}
	if now.Sub(p.printed) >= p.cfg.Every {
		p.printed = now
		fmt.Fprintln(p.cfg.Out, p.line(now))
	}
}

// rate is bytes per second over the recent window, or since the phase
// started when that is all there is.
func (p *progress) rate(now time.Time) float64 {
	first := progressSample{p.start, 0}
	if len(p.samples) > 0 {
		first = p.samples[0]
	}
	if d := now.Sub(first.at).Seconds(); d >= 0.5 {
		return float64(p.n-first.n) / d
	}
	if d := now.Sub(p.start).Seconds(); d > 0 {
		return float64(p.n) / d
	}
	return 0
}

// eta is the time left at the current rate, or -1 when unknown.
func (p *progress) eta(now time.Time) time.Duration {
	r := p.rate(now)
	if p.total < 0 || r <= 0 {
		return -1
	}
	left := max(p.total-p.n, 0)
	return time.Duration(float64(left) / r * float64(time.Second)).Round(time.Second)
}

// line is the plain progress line: label, share, bytes, rate, ETA.
func (p *progress) line(now time.Time) string {
	var b strings.Builder
	b.WriteString(p.label + ": ")
	if p.total >= 0 {
		fmt.Fprintf(&b, "%d%% %s of %s", p.percent(), human(uint64(p.n)), human(uint64(p.total)))
	} else {
		b.WriteString(human(uint64(p.n)))
	}
	fmt.Fprintf(&b, ", %s/s", human(uint64(p.rate(now))))
	if eta := p.eta(now); eta >= 0 {
		fmt.Fprintf(&b, ", ETA %s", eta)
	} else {
		fmt.Fprintf(&b, ", %s", now.Sub(p.start).Round(time.Second))
	}
	return b.String()
}

func (p *progress) percent() int {
	if p.total <= 0 {
		return 100
	}
	return int(min(100, p.n*100/p.total))
}

// bar is the terminal line: label, bar, share, bytes, rate, ETA, fitted
// to the width.
func (p *progress) bar(now time.Time) string {
	// Fixed widths keep the bar from jumping as the numbers grow.
	head := p.label + " "
	tail := fmt.Sprintf(" %9s  %9s/s", human(uint64(p.n)), human(uint64(p.rate(now))))
	if p.total >= 0 {
		tail = fmt.Sprintf(" %3d%%  %9s / %s  %9s/s", p.percent(), human(uint64(p.n)), human(uint64(p.total)), human(uint64(p.rate(now))))
	}
	if eta := p.eta(now); eta >= 0 {
		tail += "  ETA " + eta.String()
	} else {
		tail += "  " + now.Sub(p.start).Round(time.Second).String()
	}
	room := p.cfg.Width - 1 - len(head) - len(tail) - 2
	if room < 10 || p.total < 0 {
		return truncate(head+strings.TrimLeft(tail, " "), p.cfg.Width-1)
	}
	fill := room * p.percent() / 100
	return head + "[" + strings.Repeat("=", fill) + strings.Repeat(" ", room-fill) + "]" + tail
}

func truncate(s string, n int) string {
	if n > 0 && len(s) > n {
		return s[:n]
	}
	return s
}

// draw puts the bar on the terminal's current line.
func (p *progress) draw(now time.Time) {
	if !p.cfg.Terminal || p.label == "" {
		return
	}
	fmt.Fprint(p.cfg.Out, "\r"+p.bar(now)+"\x1b[K")
	p.drawn = true
}

// clear removes the bar from the terminal's current line.
func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.cfg.Out, "\r\x1b[K")
		p.drawn = false
	}
}

// endPhase prints the summary of the phase that ends, unless it had
// nothing to do.
func (p *progress) endPhase() {
	if p.label == "" || (p.n == 0 && p.total <= 0) {
		p.clear()
		return
	}
	now := p.cfg.Now()
	elapsed := now.Sub(p.start)
	p.clear()
	fmt.Fprintf(p.cfg.Out, "%s: %s in %s (%s/s)\n", p.label, human(uint64(p.n)),
		elapsed.Round(time.Millisecond), human(uint64(float64(p.n)/max(elapsed.Seconds(), 1e-3))))
}
