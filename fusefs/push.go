package fusefs

import (
	"strings"

	"github.com/hanwen/go-fuse/v2/fs"

	"cairn/cdc"
)

// Pushing files ahead. A walk that reads a tree's files in order, like
// find with cat or a compiler reading a source tree, costs one READ round
// trip per file, and with small files those round trips are most of its
// time. When files of a store path are read from their start in NAR order,
// the next small files are written into the kernel's page cache
// (FUSE_NOTIFY_STORE) before they are asked for, so reading them costs no
// round trip. Only files whose nodes the kernel already knows (a listing
// of their directory created them) can be pushed; the walk that lists a
// directory before reading it gets them all.
const (
	// pushGap is how far, in entries, a file read may be from the previous
	// one for the walk to count as in order.
	pushGap = 64
	// pushMaxFile is the largest file pushed; larger ones go through the
	// kernel's own read-ahead.
	pushMaxFile = 1 << 20
)

// pushAhead notes that entry i of sp is being read from its start and, when
// that continues an in-order walk, starts pushing the files after it.
func (f *fsys) pushAhead(root *fs.Inode, sp *storePath, i int32) {
	if f.cfg.PushAhead < 0 {
		return
	}
	sp.pushMu.Lock()
	inOrder := sp.lastRead >= 0 && i > sp.lastRead && i-sp.lastRead <= pushGap
	sp.lastRead = i
	start := max(i+1, sp.pushedTo+1)
	if !inOrder || sp.pushing {
		sp.pushMu.Unlock()
		return
	}
	sp.pushing = true
	sp.pushMu.Unlock()
	started := f.pushes.start(func() {
		f.push(root, sp, start)
		sp.pushMu.Lock()
		sp.pushing = false
		sp.pushMu.Unlock()
	})
	if !started {
		sp.pushMu.Lock()
		sp.pushing = false
		sp.pushMu.Unlock()
	}
}

// push writes files from entry start on into the kernel's page cache,
// up to PushAhead bytes, stopping at the first file the kernel does not
// know yet.
func (f *fsys) push(root *fs.Inode, sp *storePath, start int32) {
	rd, err := sp.reader(f.ld.base, f)
	if err != nil {
		return
	}
	var pushed int64
	for j := start; int(j) < len(sp.tree.entries) && pushed < f.cfg.PushAhead; j++ {
		e := &sp.tree.entries[j]
		if e.Type == cdc.TypeRegular && e.Size > 0 && e.Size <= pushMaxFile {
			node := f.known(root, sp, e.Path)
			if node == nil {
				return
			}
			data := make([]byte, e.Size)
			if _, err := rd.ReadAt(f.ld.base, data, int64(e.NAROffset)); err != nil {
				return
			}
			if errno := node.WriteCache(0, data); errno != 0 {
				return
			}
			pushed += int64(e.Size)
			f.pushedFiles.Add(1)
			f.pushedBytes.Add(e.Size)
		}
		sp.pushMu.Lock()
		sp.pushedTo = max(sp.pushedTo, j)
		sp.pushMu.Unlock()
	}
}

// known returns the node of an entry of sp if the kernel holds it.
func (f *fsys) known(root *fs.Inode, sp *storePath, path string) *fs.Inode {
	n := root.GetChild("store")
	if n != nil {
		n = n.GetChild(sp.info.Base())
	}
	for rest := path; n != nil && rest != ""; {
		name, after, _ := strings.Cut(rest, "/")
		n, rest = n.GetChild(name), after
	}
	if n == nil || n.Forgotten() {
		return nil
	}
	return n
}
