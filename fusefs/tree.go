package fusefs

import (
	"fmt"
	"slices"
	"strings"

	"cairn/cdc"
)

// tree is a store path's file tree, built from its NAR listing.
type tree struct {
	entries []cdc.Entry
	names   []string  // base name of each entry; "" for the root
	kids    [][]int32 // children of each directory entry, by name
	subdirs []int32   // how many children of each entry are directories
	bytes   int64     // rough memory use, for the tree cache
}

// newTree parses a .ls listing into a tree. Entries may come in any order;
// every one needs its parent directory, and every regular file with
// contents needs its NAR offset.
func newTree(listing []byte) (*tree, error) {
	entries, err := cdc.ParseListingJSON(listing)
	if err != nil {
		return nil, fmt.Errorf("parse listing: %w", err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("parse listing: %w: no root entry", cdc.ErrBadListing)
	}
	index := make(map[string]int32, len(entries))
	for i, e := range entries {
		if _, dup := index[e.Path]; dup {
			return nil, fmt.Errorf("parse listing: %w: duplicate entry %q", cdc.ErrBadListing, e.Path)
		}
		index[e.Path] = int32(i)
	}
	root, ok := index[""]
	if !ok {
		return nil, fmt.Errorf("parse listing: %w: no root entry", cdc.ErrBadListing)
	}
	if root != 0 { // keep the root first
		entries[0], entries[root] = entries[root], entries[0]
		index[entries[0].Path], index[entries[root].Path] = 0, root
	}
	t := &tree{entries: entries, names: make([]string, len(entries)), kids: make([][]int32, len(entries)), subdirs: make([]int32, len(entries))}
	for i, e := range entries {
		t.bytes += int64(len(e.Path)+len(e.Target)) + 96
		if e.Type == cdc.TypeRegular && e.Size > 0 && e.NAROffset == 0 {
			return nil, fmt.Errorf("parse listing: entry %q: %w", e.Path, ErrNoOffsets)
		}
		if i == 0 {
			continue
		}
		parent, name := "", e.Path
		if j := strings.LastIndexByte(e.Path, '/'); j >= 0 {
			parent, name = e.Path[:j], e.Path[j+1:]
		}
		p, ok := index[parent]
		if !ok || entries[p].Type != cdc.TypeDirectory {
			return nil, fmt.Errorf("parse listing: %w: entry %q has no parent directory", cdc.ErrBadListing, e.Path)
		}
		t.names[i] = name
		t.kids[p] = append(t.kids[p], int32(i))
		if e.Type == cdc.TypeDirectory {
			t.subdirs[p]++
		}
	}
	for _, k := range t.kids {
		if !slices.IsSortedFunc(k, t.byName) {
			slices.SortFunc(k, t.byName)
		}
	}
	return t, nil
}

func (t *tree) byName(a, b int32) int { return strings.Compare(t.names[a], t.names[b]) }

// child returns the entry named name in directory dir.
func (t *tree) child(dir int32, name string) (int32, bool) {
	k := t.kids[dir]
	i, ok := slices.BinarySearchFunc(k, name, func(e int32, name string) int { return strings.Compare(t.names[e], name) })
	if !ok {
		return 0, false
	}
	return k[i], true
}
