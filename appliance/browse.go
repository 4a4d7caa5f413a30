package appliance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// IsStore reports whether dir holds a store's index, without opening it,
// so that a command meant for an existing data directory does not create
// an empty one.
func IsStore(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("data directory %s: %w", dir, err)
	}
	return true, nil
}
