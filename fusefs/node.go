package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"cairn/appliance/narinfo"
	"cairn/cdc"
)

// fsys is what every node of one mount shares.
type fsys struct {
	src   Source
	cfg   Config
	ld    *loader
	paths *cache[*storePath] // parsed trees of recently used store paths
	// noOpen is set when the kernel can open files without asking.
	noOpen atomic.Bool

	pushedFiles, pushedBytes atomic.Uint64
	pushes                   group
}

// close stops background work, pushes and loads, and waits for what runs.
// Cancel the loader's context first, so that it ends soon.
func (f *fsys) close() {
	f.pushes.close()
	f.ld.cache.close()
	f.paths.close()
}

// storePath is a store path whose tree is loaded; its NAR opens on the
// first read.
type storePath struct {
	info *PathInfo
	tree *tree

	mu sync.Mutex
	rd *reader

	pushMu   sync.Mutex
	lastRead int32 // entry whose start was read last, or -1
	pushedTo int32 // entries up to this one were pushed or passed over
	pushing  bool
}

// Attributes of what the mount shows. Everything is owned by root and has
// mtime 1, as in a Nix store.
const (
	dirMode  = syscall.S_IFDIR | 0o555
	fileMode = syscall.S_IFREG | 0o444
	execMode = syscall.S_IFREG | 0o555
	linkMode = syscall.S_IFLNK | 0o777
	// topTimeout is the attribute timeout of the root and top directories,
	// whose contents change as paths arrive.
	topTimeout = time.Second
	blockSize  = 4096
	// readBlockSize is the st_blksize of files: tools such as cat size
	// their reads by it, and larger reads mean fewer round trips.
	readBlockSize = 128 << 10
)

// errno maps a source error to what the kernel gets, logging unexpected
// ones.
func (f *fsys) errno(what string, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, ErrUnauthorized):
		f.cfg.Logger.Warn("mount: "+what, "err", err)
		return syscall.EACCES
	}
	f.cfg.Logger.Warn("mount: "+what, "err", err)
	return syscall.EIO
}

// fileAttr fills the attributes of a regular file.
func fileAttr(a *fuse.Attr, ino, size uint64, exec bool) {
	a.Ino, a.Size, a.Nlink = ino, size, 1
	a.Mode = fileMode
	if exec {
		a.Mode = execMode
	}
	a.Blocks = (size + 511) / 512
	a.Blksize = readBlockSize
	a.Mtime, a.Atime, a.Ctime = 1, 1, 1
}

// dirAttr fills the attributes of a directory with subdirs subdirectories.
func dirAttr(a *fuse.Attr, ino uint64, subdirs int) {
	a.Ino, a.Mode, a.Nlink, a.Size = ino, dirMode, uint32(2+subdirs), blockSize
	a.Blksize = blockSize
	a.Mtime, a.Atime, a.Ctime = 1, 1, 1
}

// linkAttr fills the attributes of a symlink.
func linkAttr(a *fuse.Attr, ino uint64, target string) {
	a.Ino, a.Mode, a.Nlink, a.Size = ino, linkMode, 1, uint64(len(target))
	a.Blksize = blockSize
	a.Mtime, a.Atime, a.Ctime = 1, 1, 1
}

// immutable sets the long timeouts of a node that never changes.
func (f *fsys) immutable(out *fuse.EntryOut) {
	out.SetEntryTimeout(f.cfg.Timeout)
	out.SetAttrTimeout(f.cfg.Timeout)
}

// writeFlags are the open flags that would change a file.
const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC | syscall.O_APPEND | syscall.O_CREAT

// readOnly answers every operation that would change the file system with
// EROFS. The mount is also made with the ro option, so the kernel refuses
// most of them before they arrive.
type readOnly struct{}

// Setattr refuses chmod, chown, truncate and utimes.
func (readOnly) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// Create refuses new files.
func (readOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

// Mkdir refuses new directories.
func (readOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Mknod refuses device and fifo nodes.
func (readOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Link refuses hard links.
func (readOnly) Link(context.Context, fs.InodeEmbedder, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Symlink refuses new symlinks.
func (readOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

// Unlink refuses removing files.
func (readOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }

// Rmdir refuses removing directories.
func (readOnly) Rmdir(context.Context, string) syscall.Errno { return syscall.EROFS }

// Rename refuses renames.
func (readOnly) Rename(context.Context, string, fs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}

// Setxattr refuses extended attributes.
func (readOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }

// Removexattr refuses removing extended attributes.
func (readOnly) Removexattr(context.Context, string) syscall.Errno { return syscall.EROFS }

// Write refuses writes to an open file.
func (readOnly) Write(context.Context, fs.FileHandle, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

// open answers OPEN of a file. It refuses opens for writing, and
// otherwise keeps the kernel's page cache of the file, whose contents
// never change (FOPEN_KEEP_CACHE). When the kernel supports it, the first
// open answers ENOSYS instead: the kernel then skips OPEN and RELEASE for
// every file of the mount and opens them with FOPEN_KEEP_CACHE itself,
// which saves two round trips per file. The mount is read-only, so the
// kernel refuses opens for writing without asking.
func (f *fsys) open(flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&writeFlags != 0 {
		return nil, 0, syscall.EROFS
	}
	if f.noOpen.Load() {
		return nil, 0, syscall.ENOSYS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// noFlush answers FLUSH with ENOSYS, after which the kernel stops sending
// it: there is nothing to flush.
type noFlush struct{}

// Flush tells the kernel not to send FLUSH again.
func (noFlush) Flush(context.Context, fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

// readBytes serves a read of data.
func readBytes(data []byte, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(data[off:min(int64(len(data)), off+int64(len(dest)))]), 0
}

// root is the mount's root: nar/, narinfo/ and store/.
type root struct {
	fs.Inode
	readOnly
	f *fsys
}

// OnAdd creates the three top directories.
func (r *root) OnAdd(ctx context.Context) {
	for _, d := range []struct {
		name string
		ino  uint64
		kind topKind
	}{{"nar", narDirIno, kindNAR}, {"narinfo", narinfoDirIno, kindNarInfo}, {"store", storeDirIno, kindStore}} {
		node := &topDir{f: r.f, kind: d.kind, ino: d.ino}
		r.AddChild(d.name, r.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: d.ino}), false)
	}
}

// Getattr describes the root.
func (r *root) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, rootIno, 3)
	out.SetTimeout(topTimeout)
	return 0
}

// Statfs describes the file system: read-only, nothing free.
func (r *root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize, out.Frsize, out.NameLen = blockSize, blockSize, 255
	return 0
}

// topKind is which top directory a topDir is.
type topKind int

const (
	kindNAR topKind = iota
	kindStore
	kindNarInfo
)

// topDir is nar/, narinfo/ or store/: what the source holds right now. A
// name it does not know is asked for again on every lookup (there is no
// negative caching), so paths that arrive appear at once.
type topDir struct {
	fs.Inode
	readOnly
	f    *fsys
	kind topKind
	ino  uint64
}

// Getattr describes the directory.
func (d *topDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, d.ino, 0)
	out.SetTimeout(topTimeout)
	return 0
}

// Lookup finds a NAR, a narinfo or a store path by name.
func (d *topDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch d.kind {
	case kindNAR:
		return d.lookupNAR(ctx, name, out)
	case kindNarInfo:
		return d.lookupNarInfo(ctx, name, out)
	default:
		return d.lookupStore(ctx, name, out)
	}
}

func (d *topDir) lookupNAR(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	h, ok := parseNARName(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	size, err := d.f.src.NARSize(ctx, h)
	if err != nil {
		return nil, d.f.errno("nar "+name, err)
	}
	ino := narIno(h)
	fileAttr(&out.Attr, ino, uint64(size), false)
	d.f.immutable(out)
	return d.NewInode(ctx, &narFile{f: d.f, hash: h, size: size, ino: ino}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino}), 0
}

func (d *topDir) lookupNarInfo(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	hash, ok := strings.CutSuffix(name, ".narinfo")
	if !ok || !narinfo.ValidHash(hash) {
		return nil, syscall.ENOENT
	}
	p, err := d.f.src.Path(ctx, hash)
	if err != nil {
		return nil, d.f.errno("narinfo "+hash, err)
	}
	ino := narinfoIno(hash)
	fileAttr(&out.Attr, ino, uint64(len(p.NarInfo)), false)
	d.f.immutable(out)
	return d.NewInode(ctx, &textFile{f: d.f, data: p.NarInfo, ino: ino}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino}), 0
}

func (d *topDir) lookupStore(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	hash, ok := splitBase(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	p, err := d.f.src.Path(ctx, hash)
	if err != nil {
		return nil, d.f.errno("store path "+name, err)
	}
	if p.Base() != name {
		return nil, syscall.ENOENT
	}
	sp, err := d.f.storePath(ctx, p)
	if err != nil {
		return nil, d.f.errno("store path "+name, err)
	}
	return d.f.entryNode(ctx, &d.Inode, sp, 0, out), 0
}

// storePath returns a store path with its tree, parsing its listing unless
// it was used recently.
func (f *fsys) storePath(ctx context.Context, p *PathInfo) (*storePath, error) {
	return f.paths.get(ctx, f.ld.base, p.Hash()+string(p.NarHash[:]), func(ctx context.Context) (*storePath, error) {
		ls, err := f.src.Listing(ctx, p)
		if err != nil {
			return nil, err
		}
		t, err := newTree(ls)
		if err != nil {
			return nil, fmt.Errorf("listing of %s: %w", p.StorePath, err)
		}
		return &storePath{info: p, tree: t, lastRead: -1}, nil
	})
}

// OpendirHandle lists the directory as the source has it now.
func (d *topDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	paths, err := d.f.src.Paths(ctx)
	if err != nil {
		return nil, 0, d.f.errno("list paths", err)
	}
	var names []string
	switch d.kind {
	case kindStore:
		names = paths
	case kindNarInfo:
		names = make([]string, 0, len(paths))
		for _, p := range paths {
			if h, ok := splitBase(p); ok {
				names = append(names, h+".narinfo")
			}
		}
	case kindNAR:
		if names, err = d.narNames(ctx, paths); err != nil {
			return nil, 0, d.f.errno("list nars", err)
		}
	}
	sort.Strings(names)
	entries := make([]fuse.DirEntry, 0, len(names))
	for _, n := range names {
		mode := uint32(syscall.S_IFREG)
		if d.kind == kindStore {
			mode = 0 // a file, a directory or a symlink: known once looked up
		}
		entries = append(entries, fuse.DirEntry{Name: n, Mode: mode, Ino: d.childIno(n)})
	}
	// No look-ups while listing: that would load every store path's
	// listing (or, remotely, fetch every narinfo) just to list names.
	return &bareDirHandle{dirHandle{entries: entries}}, 0, 0
}

// childIno is the inode number a listed name will have once looked up, or
// 0 when that is not known yet.
func (d *topDir) childIno(name string) uint64 {
	switch d.kind {
	case kindNAR:
		if h, ok := parseNARName(name); ok {
			return narIno(h)
		}
	case kindNarInfo:
		return narinfoIno(name[:hashLen])
	case kindStore:
		if h, ok := splitBase(name); ok {
			return entryIno(h, "")
		}
	}
	return 0
}

// narNames returns the file names of the NARs of paths, asking the source
// for up to eight paths at once.
func (d *topDir) narNames(ctx context.Context, paths []string) ([]string, error) {
	var (
		mu    sync.Mutex
		seen  = map[[32]byte]bool{}
		names []string
		first error
		wg    sync.WaitGroup
	)
	work := make(chan string)
	for range min(8, len(paths)) {
		wg.Go(func() {
			for base := range work {
				h, ok := splitBase(base)
				if !ok {
					continue
				}
				p, err := d.f.src.Path(ctx, h)
				mu.Lock()
				switch {
				case errors.Is(err, ErrNotFound): // gone meanwhile
				case err != nil:
					if first == nil {
						first = err
					}
				case !seen[p.NarHash]:
					seen[p.NarHash] = true
					names = append(names, narName(p.NarHash))
				}
				mu.Unlock()
			}
		})
	}
	for _, p := range paths {
		work <- p
	}
	close(work)
	wg.Wait()
	return names, first
}

// entryNode returns the node of entry i of a store path's tree, filling
// out with its attributes.
func (f *fsys) entryNode(ctx context.Context, parent *fs.Inode, sp *storePath, i int32, out *fuse.EntryOut) *fs.Inode {
	e := &sp.tree.entries[i]
	ino := entryIno(sp.info.Hash(), e.Path)
	f.immutable(out)
	switch e.Type {
	case cdc.TypeDirectory:
		dirAttr(&out.Attr, ino, int(sp.tree.subdirs[i]))
		return parent.NewInode(ctx, &treeDir{f: f, sp: sp, i: i, ino: ino}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino})
	case cdc.TypeSymlink:
		linkAttr(&out.Attr, ino, e.Target)
		return parent.NewInode(ctx, &treeLink{sp: sp, i: i, ino: ino}, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: ino})
	default:
		fileAttr(&out.Attr, ino, e.Size, e.Executable)
		return parent.NewInode(ctx, &treeFile{f: f, sp: sp, i: i, ino: ino}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino})
	}
}

// treeDir is a directory inside a store path.
type treeDir struct {
	fs.Inode
	readOnly
	f   *fsys
	sp  *storePath
	i   int32
	ino uint64
}

// Getattr describes the directory.
func (d *treeDir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, d.ino, int(d.sp.tree.subdirs[d.i]))
	out.SetTimeout(d.f.cfg.Timeout)
	return 0
}

// Lookup finds an entry of the directory.
func (d *treeDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, ok := d.sp.tree.child(d.i, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return d.f.entryNode(ctx, &d.Inode, d.sp, c, out), 0
}

// OpendirHandle lists the directory; the kernel may cache the listing.
func (d *treeDir) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	t := d.sp.tree
	kids := t.kids[d.i]
	entries := make([]fuse.DirEntry, len(kids))
	for j, c := range kids {
		e := &t.entries[c]
		mode := uint32(syscall.S_IFREG)
		switch e.Type {
		case cdc.TypeDirectory:
			mode = syscall.S_IFDIR
		case cdc.TypeSymlink:
			mode = syscall.S_IFLNK
		}
		entries[j] = fuse.DirEntry{Name: t.names[c], Mode: mode, Ino: entryIno(d.sp.info.Hash(), e.Path)}
	}
	return &dirHandle{entries: entries}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// treeFile is a regular file inside a store path: a byte range of its NAR.
type treeFile struct {
	fs.Inode
	readOnly
	noFlush
	f   *fsys
	sp  *storePath
	i   int32
	ino uint64
}

// Getattr describes the file.
func (n *treeFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e := &n.sp.tree.entries[n.i]
	fileAttr(&out.Attr, n.ino, e.Size, e.Executable)
	out.SetTimeout(n.f.cfg.Timeout)
	return 0
}

// Open opens the file for reading.
func (n *treeFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.f.open(flags)
}

// Read reads the file's bytes from its NAR.
func (n *treeFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	e := &n.sp.tree.entries[n.i]
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if uint64(off) >= e.Size {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(uint64(len(dest)), e.Size-uint64(off))]
	rd, err := n.sp.reader(ctx, n.f)
	if err != nil {
		return nil, n.f.errno("open "+n.sp.info.StorePath, err)
	}
	if off == 0 {
		n.f.pushAhead(n.Root(), n.sp, n.i)
	}
	k, err := rd.ReadAt(ctx, dest, int64(e.NAROffset)+off)
	if err != nil && !(errors.Is(err, io.EOF) && k == len(dest)) {
		return nil, n.f.errno("read "+n.sp.info.StorePath+"/"+e.Path, err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// reader returns the reader of the store path's NAR, opening it once.
func (sp *storePath) reader(ctx context.Context, f *fsys) (*reader, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.rd != nil {
		return sp.rd, nil
	}
	nar, err := f.src.OpenNAR(ctx, sp.info.NarHash, int64(sp.info.NarSize))
	if err != nil {
		return nil, err
	}
	sp.rd = newReader(nar, f.ld, sp.info.StorePath)
	return sp.rd, nil
}

// treeLink is a symlink inside a store path. Its target is the NAR's,
// unchanged: an absolute /nix/store target points out of the mount, as
// it does in a real store.
type treeLink struct {
	fs.Inode
	readOnly
	sp  *storePath
	i   int32
	ino uint64
}

// Getattr describes the symlink.
func (n *treeLink) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	linkAttr(&out.Attr, n.ino, n.sp.tree.entries[n.i].Target)
	return 0
}

// Readlink returns the target.
func (n *treeLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	return []byte(n.sp.tree.entries[n.i].Target), 0
}

// narFile is nar/<narhash>.nar: a whole NAR, rebuilt from its blocks.
type narFile struct {
	fs.Inode
	readOnly
	noFlush
	f    *fsys
	hash [32]byte
	size int64
	ino  uint64

	mu sync.Mutex
	rd *reader
}

// Getattr describes the NAR file.
func (n *narFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fileAttr(&out.Attr, n.ino, uint64(n.size), false)
	out.SetTimeout(n.f.cfg.Timeout)
	return 0
}

// Open opens the NAR for reading.
func (n *narFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.f.open(flags)
}

// Read reads NAR bytes.
func (n *narFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.mu.Lock()
	if n.rd == nil {
		nar, err := n.f.src.OpenNAR(ctx, n.hash, n.size)
		if err != nil {
			n.mu.Unlock()
			return nil, n.f.errno("open nar "+narName(n.hash), err)
		}
		n.rd = newReader(nar, n.f.ld, narName(n.hash))
	}
	rd := n.rd
	n.mu.Unlock()
	k, err := rd.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, n.f.errno("read nar "+narName(n.hash), err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

// textFile is a small file held in memory: a narinfo.
type textFile struct {
	fs.Inode
	readOnly
	noFlush
	f    *fsys
	data []byte
	ino  uint64
}

// Getattr describes the file.
func (n *textFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fileAttr(&out.Attr, n.ino, uint64(len(n.data)), false)
	return 0
}

// Open opens the file for reading.
func (n *textFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.f.open(flags)
}

// Read reads the text.
func (n *textFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return readBytes(n.data, dest, off)
}

// dirHandle is an open directory: its entries, listed once at opendir.
type dirHandle struct {
	mu      sync.Mutex
	entries []fuse.DirEntry
	next    int
}

// Readdirent returns the next entry, or nil at the end.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.next >= len(h.entries) {
		return nil, 0
	}
	e := h.entries[h.next]
	h.next++
	e.Off = uint64(h.next)
	return &e, 0
}

// Seekdir moves to the entry after offset off.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off > uint64(len(h.entries)) {
		return syscall.EINVAL
	}
	h.next = int(off)
	return 0
}

// bareDirHandle is an open top directory. It declines the look-ups that
// READDIRPLUS makes for each entry, so the kernel gets bare names, which
// it looks up when they are used.
type bareDirHandle struct{ dirHandle }

// Lookup declines: an entry without a node id is a plain directory entry.
func (h *bareDirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.ENOENT
}

// Interface checks: the nodes answer what they should.
var (
	_ fs.NodeOnAdder        = (*root)(nil)
	_ fs.NodeGetattrer      = (*root)(nil)
	_ fs.NodeStatfser       = (*root)(nil)
	_ fs.NodeLookuper       = (*topDir)(nil)
	_ fs.NodeOpendirHandler = (*topDir)(nil)
	_ fs.NodeLookuper       = (*treeDir)(nil)
	_ fs.NodeOpendirHandler = (*treeDir)(nil)
	_ fs.NodeReader         = (*treeFile)(nil)
	_ fs.NodeReadlinker     = (*treeLink)(nil)
	_ fs.NodeReader         = (*narFile)(nil)
	_ fs.NodeReader         = (*textFile)(nil)
	_ fs.FileReaddirenter   = (*dirHandle)(nil)
	_ fs.FileSeekdirer      = (*dirHandle)(nil)
	_ fs.FileLookuper       = (*bareDirHandle)(nil)
	_ fs.NodeSetattrer      = (*treeFile)(nil)
	_ fs.NodeCreater        = (*treeDir)(nil)
	_ fs.NodeMkdirer        = (*topDir)(nil)
	_ fs.NodeUnlinker       = (*root)(nil)
	_ fs.NodeRenamer        = (*treeDir)(nil)
	_ fs.NodeSetxattrer     = (*treeLink)(nil)
	_ fs.NodeWriter         = (*narFile)(nil)
	_ fs.NodeRemovexattrer  = (*textFile)(nil)
	_ fs.NodeSymlinker      = (*treeDir)(nil)
	_ fs.NodeLinker         = (*treeDir)(nil)
	_ fs.NodeMknoder        = (*treeDir)(nil)
	_ fs.NodeRmdirer        = (*treeDir)(nil)
)
