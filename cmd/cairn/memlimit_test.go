package main

import (
	"flag"
	"io"
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/appliance"
)

func TestServeMemoryLimit(t *testing.T) {
	const before = 3 << 30
	prev := debug.SetMemoryLimit(before)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	tests := []struct {
		name       string
		args       []string
		gomemlimit string
		want       int64
	}{
		{"default", nil, "", defaultMemoryLimit},
		{"a size", []string{"--memory-limit", "256M"}, "", 256 << 20},
		{"0 keeps the runtime's", []string{"--memory-limit", "0"}, "", before},
		{"GOMEMLIMIT stands", nil, "3GiB", before},
		{"the flag beats GOMEMLIMIT", []string{"--memory-limit", "256M"}, "3GiB", 256 << 20},
	}
	// The limit cairn set rises with running ingests and falls back;
	// GOMEMLIMIT's never moves.
	running := func(f *serveFlags, n int) int64 {
		if hook := f.ingestMemory(); hook != nil {
			hook(n)
		}
		return debug.SetMemoryLimit(-1)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			debug.SetMemoryLimit(before)
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var f serveFlags
			f.register(fs)
			require.NoError(t, parse(fs, tc.args))
			f.applyMemoryLimit()
			require.Equal(t, tc.want, debug.SetMemoryLimit(-1))
			grown := tc.want
			if tc.want != before {
				grown += 3 * appliance.IngestHeadroom
			}
			require.Equal(t, grown, running(&f, 3), "three ingests running")
			require.Equal(t, tc.want, running(&f, 0), "none running")
			debug.SetMemoryLimit(math.MaxInt64)
		})
	}
}

func TestByteSizeStringReadsBack(t *testing.T) {
	for _, tc := range []struct {
		size uint64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1 << 10, "1K"}, {96 << 20, "96M"}, {3 << 30, "3G"}, {2 << 40, "2T"}, {(1 << 20) + 1, "1048577"},
	} {
		b := byteSize(tc.size)
		require.Equal(t, tc.want, b.String())
		var back byteSize
		require.NoError(t, back.Set(b.String()))
		require.Equal(t, b, back)
	}
}
