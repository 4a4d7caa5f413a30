package nixtest

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// Compress returns data in the named narinfo compression (none, xz, zstd,
// bzip2), made by the same tools Nix caches are made with.
func Compress(tb testing.TB, compression string, data []byte) []byte {
	tb.Helper()
	switch compression {
	case "none":
		return data
	case "zstd":
		enc, err := zstd.NewWriter(nil)
		require.NoError(tb, err)
		defer enc.Close()
		return enc.EncodeAll(data, nil)
	case "xz", "bzip2":
		tool := map[string][]string{"xz": {"xz", "-c", "-3", "-T1"}, "bzip2": {"bzip2", "-c", "-1"}}[compression]
		cmd := exec.Command(tool[0], tool[1:]...)
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		require.NoError(tb, err, "%s: the xz-utils and bzip2 packages are needed (make deps)", tool[0])
		return out
	}
	tb.Fatalf("unknown compression %q", compression)
	return nil
}
