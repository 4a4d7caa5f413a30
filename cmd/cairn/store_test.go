package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/appliance"
)

// openStats opens a stopped cairn's data directory and returns its counters.
func openStats(t *testing.T, dir string) appliance.Stats {
	t.Helper()
	s, err := appliance.Open(context.Background(), appliance.Config{Dir: dir})
	require.NoError(t, err)
	defer s.Close()
	st, err := s.Stats()
	require.NoError(t, err)
	return st
}
