package main

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestProgressPlainLines(t *testing.T) {
	for _, tc := range []struct {
		name  string
		total int64
		adds  []int64 // bytes done in each second
		ticks []string
		final string
	}{
		{"known total", 10 << 20, []int64{1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20},
			[]string{"copy: 50% 5.0 MiB of 10.0 MiB, 1.0 MiB/s, ETA 5s"},
			"copy: 5.0 MiB in 5s (1.0 MiB/s)"},
		{"unknown total", -1, []int64{2000, 2000, 2000, 2000, 2000},
			[]string{"copy: 9.8 KiB, 2.0 KiB/s, 5s"},
			"copy: 9.8 KiB in 5s (2.0 KiB/s)"},
		{"speed changes", 100 << 20, []int64{10 << 20, 10 << 20, 10 << 20, 10 << 20, 10 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20},
			[]string{"copy: 50% 50.0 MiB of 100.0 MiB, 10.0 MiB/s, ETA 5s", "copy: 55% 55.0 MiB of 100.0 MiB, 1.0 MiB/s, ETA 45s"},
			"copy: 56.0 MiB in 11s (5.1 MiB/s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			clock := &fakeClock{now: time.Unix(1000, 0)}
			// The test ticks by hand, on its own clock; the reporter's
			// ticker, every 5s of real time, does not fire meanwhile.
			p := newProgress(progressConfig{Out: &out, Every: 5 * time.Second, Now: clock.Now})
			p.Phase("copy", tc.total)
			for _, n := range tc.adds {
				clock.advance(time.Second)
				p.Add(n)
				p.tick()
			}
			p.Close()
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			require.Equal(t, append(tc.ticks, tc.final), lines)
		})
	}
}

func TestProgressTerminalBar(t *testing.T) {
	var out syncBuffer
	clock := &fakeClock{now: time.Unix(1000, 0)}
	p := newProgress(progressConfig{Out: &out, Terminal: true, Width: 72, Every: time.Hour, Now: clock.Now})
	p.Phase("export", 200<<20)
	clock.advance(2 * time.Second)
	p.Add(50 << 20)
	p.tick()
	s := out.String()
	require.True(t, strings.HasPrefix(s, "\r"), "%q", s)
	require.True(t, strings.HasSuffix(s, "\x1b[K"), "%q", s)
	bar := strings.TrimSuffix(strings.TrimPrefix(s, "\r"), "\x1b[K")
	require.Equal(t, "export [===          ]  25%   50.0 MiB / 200.0 MiB   25.0 MiB/s  ETA 6s", bar)
	require.LessOrEqual(t, len(bar), 71, "the bar fits the terminal")

	p.Printf("a line\n")
	require.Contains(t, out.String(), "\r\x1b[Ka line\n\rexport [", "a line goes above the bar, which is redrawn")

	p.Phase("import", -1)
	require.Contains(t, out.String(), "\r\x1b[Kexport: 50.0 MiB in 2s (25.0 MiB/s)\n", "a phase ends with its summary")
	clock.advance(time.Second)
	p.Add(1 << 20)
	p.tick()
	require.True(t, strings.HasSuffix(out.String(), "\rimport 1.0 MiB    1.0 MiB/s  1s\x1b[K"), "%q", out.String())
	p.Close()
	p.Close()
}

func TestProgressQuietPhases(t *testing.T) {
	var out syncBuffer
	p := newProgress(progressConfig{Out: &out})
	p.Phase("check", 0)
	p.Phase("export", -1)
	p.Close()
	require.Empty(t, out.String(), "phases with nothing to do print nothing")
}

func TestProgressToDetectsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "out")
	require.NoError(t, err)
	defer f.Close()
	require.False(t, progressTo(f).Terminal, "a file is no terminal")
	var b bytes.Buffer
	require.False(t, progressTo(&b).Terminal)
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		require.True(t, progressTo(tty).Terminal)
	}
}
