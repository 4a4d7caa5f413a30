package seed

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDriveLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "seed")
	for _, tc := range []struct {
		name          string
		first, second bool // exclusive?
		busy          bool
	}{
		{"two readers", false, false, false},
		{"reader while exporting", true, false, true},
		{"export while reading", false, true, true},
		{"two exports", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := openDrive(dir, true)
			require.NoError(t, err)
			require.NoError(t, a.Close())
			a, err = openDrive(dir, tc.first)
			require.NoError(t, err)
			defer a.Close()
			b, err := openDrive(dir, tc.second)
			if tc.busy {
				require.ErrorIs(t, err, ErrBusy)
				return
			}
			require.NoError(t, err)
			require.NoError(t, b.Close())
		})
	}
}
