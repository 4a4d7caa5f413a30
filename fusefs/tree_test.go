package fusefs

import (
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
)

func TestTreeFromListing(t *testing.T) {
	ls := `{"version":1,"root":{"type":"directory","entries":{` +
		`"z":{"type":"regular","size":3,"narOffset":400},` +
		`"bin":{"type":"directory","entries":{"go":{"type":"regular","size":10,"executable":true,"narOffset":200}}},` +
		`"empty":{"type":"regular","size":0},` +
		`"link":{"type":"symlink","target":"/nix/store/x"},` +
		`"a":{"type":"directory","entries":{}}}}}`
	tr, err := newTree([]byte(ls))
	require.NoError(t, err)
	for _, tc := range []struct {
		dir, name string
		path      string
		typ       cdc.EntryType
		ok        bool
	}{
		{"", "bin", "bin", cdc.TypeDirectory, true},
		{"", "z", "z", cdc.TypeRegular, true},
		{"", "link", "link", cdc.TypeSymlink, true},
		{"", "a", "a", cdc.TypeDirectory, true},
		{"", "empty", "empty", cdc.TypeRegular, true},
		{"", "go", "", 0, false},
		{"bin", "go", "bin/go", cdc.TypeRegular, true},
		{"bin", "gofmt", "", 0, false},
		{"a", "x", "", 0, false},
	} {
		t.Run(tc.dir+"/"+tc.name, func(t *testing.T) {
			dir := int32(0)
			if tc.dir != "" {
				var ok bool
				dir, ok = tr.child(0, tc.dir)
				require.True(t, ok)
			}
			i, ok := tr.child(dir, tc.name)
			require.Equal(t, tc.ok, ok)
			if ok {
				require.Equal(t, tc.path, tr.entries[i].Path)
				require.Equal(t, tc.typ, tr.entries[i].Type)
			}
		})
	}
	var names []string
	for _, k := range tr.kids[0] {
		names = append(names, tr.names[k])
	}
	require.Equal(t, []string{"a", "bin", "empty", "link", "z"}, names, "children in name order")
	require.Equal(t, int32(2), tr.subdirs[0])
}

func TestTreeRefusesBadListings(t *testing.T) {
	for _, tc := range []struct {
		name, ls string
		err      error
	}{
		{"not json", `{`, cdc.ErrBadListing},
		{"no offsets", `{"version":1,"root":{"type":"directory","entries":{"f":{"type":"regular","size":3}}}}`, ErrNoOffsets},
		{"root file without offset", `{"version":1,"root":{"type":"regular","size":3}}`, ErrNoOffsets},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newTree([]byte(tc.ls))
			require.ErrorIs(t, err, tc.err)
		})
	}
	// A file root and a symlink root are trees of one entry.
	for _, ls := range []string{
		`{"version":1,"root":{"type":"regular","size":3,"narOffset":96}}`,
		`{"version":1,"root":{"type":"symlink","target":"x"}}`,
	} {
		tr, err := newTree([]byte(ls))
		require.NoError(t, err)
		require.Len(t, tr.entries, 1)
	}
}
