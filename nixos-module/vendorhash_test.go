package nixosmodule

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/internal/nixtest"
)

var vendorHashRE = regexp.MustCompile(`vendorHash = "([^"]*)";`)

// TestVendorHashMatchesFlake recomputes buildGoModule's vendorHash the way
// nixpkgs does (the NAR hash of what `go mod vendor` writes, modules.txt
// included) from the go.mod and imports in the tree right now, and requires
// flake.nix to carry it.
func TestVendorHashMatchesFlake(t *testing.T) {
	nixtest.RequireNix(t)
	root := repoRoot(t)

	flake, err := os.ReadFile(filepath.Join(root, "flake.nix"))
	require.NoError(t, err)
	m := vendorHashRE.FindAllSubmatch(flake, -1)
	require.Len(t, m, 1, "flake.nix should have exactly one vendorHash = \"...\"; line")
	inFlake := string(m[0][1])

	vendor := filepath.Join(t.TempDir(), "vendor")
	cmd := exec.Command("go", "mod", "vendor", "-o", vendor)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go mod vendor: %s", out)

	got := strings.TrimSpace(string(nixtest.Run(t, "nix", "hash", "path", "--sri", "--type", "sha256", vendor)))
	require.Regexp(t, `^sha256-[A-Za-z0-9+/]{43}=$`, got)
	require.Equal(t, got, inFlake,
		"flake.nix has vendorHash = %q, but the vendored dependencies of the current go.mod hash to %q.\n"+
			"Update vendorHash in flake.nix to %q.", inFlake, got, got)
}
