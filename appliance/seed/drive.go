package seed

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// tmpMarker is part of every temporary file name an export writes, so
// that a later export can remove what an interrupted one left behind.
const tmpMarker = ".cairn-tmp-"

// narDir is the drive directory holding the NAR files.
const narDir = "nar"

// drive is a seed drive's directory. Every access goes through an os.Root,
// so a drive's symlinks or a narinfo's URL cannot reach outside it.
type drive struct {
	dir  string
	root *os.Root
	lock *os.File // holds the drive's flock while open
}

// openDrive opens the drive at dir and locks it: exclusively to write it,
// when create is set, which also creates it and its nar directory, and
// shared to read it. A drive an export is writing cannot be opened.
func openDrive(dir string, create bool) (*drive, error) {
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create drive %s: %w", dir, err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open drive %s: %w", dir, err)
	}
	d := &drive{dir: dir, root: root}
	if err := d.flock(create); err != nil {
		root.Close()
		return nil, err
	}
	if create {
		if err := root.Mkdir(narDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			d.Close()
			return nil, fmt.Errorf("create %s/%s: %w", dir, narDir, err)
		}
	}
	return d, nil
}

// flock takes the drive's lock, without waiting.
func (d *drive) flock(exclusive bool) error {
	f, err := d.root.Open(".")
	if err != nil {
		return fmt.Errorf("lock drive %s: %w", d.dir, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s", ErrBusy, d.dir)
		}
		return fmt.Errorf("lock drive %s: %w", d.dir, err)
	}
	d.lock = f
	return nil
}

// Close releases the drive and its lock.
func (d *drive) Close() error {
	d.lock.Close()
	return d.root.Close()
}

// open opens a drive file for reading; it must be a regular file.
func (d *drive) open(rel string) (*os.File, int64, error) {
	f, err := d.root.Open(rel)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", rel)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// stat returns a drive file's size, or fs.ErrNotExist.
func (d *drive) stat(rel string) (int64, error) {
	st, err := d.root.Stat(rel)
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%s: not a regular file", rel)
	}
	return st.Size(), nil
}

// readFile reads a whole drive file of at most limit bytes.
func (d *drive) readFile(rel string, limit int64) ([]byte, error) {
	f, size, err := d.open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > limit {
		return nil, fmt.Errorf("%s: %d bytes exceeds %d", rel, size, limit)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// pending is a file being written under a temporary name.
type pending struct {
	d        *drive
	f        *os.File
	tmp, rel string
}

// create starts writing rel under a temporary name beside it.
func (d *drive) create(rel string) (*pending, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	dir, base := path.Split(rel)
	tmp := dir + "." + base + tmpMarker + hex.EncodeToString(rnd[:])
	f, err := d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", rel, err)
	}
	return &pending{d: d, f: f, tmp: tmp, rel: rel}, nil
}

// Write writes to the temporary file.
func (p *pending) Write(b []byte) (int, error) { return p.f.Write(b) }

// commit closes the file and renames it to its name, replacing any file
// there. With sync, or where there is no syncfs, the data reaches the disk
// first.
func (p *pending) commit(sync bool) error {
	var err error
	if sync || !haveSyncfs {
		err = p.f.Sync()
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.d.root.Rename(p.tmp, p.rel)
	}
	if err != nil {
		p.d.root.Remove(p.tmp)
		return fmt.Errorf("write %s: %w", p.rel, err)
	}
	return nil
}

// abort drops the temporary file.
func (p *pending) abort() {
	p.f.Close()
	p.d.root.Remove(p.tmp)
}

// writeFile writes a small file atomically.
func (d *drive) writeFile(rel string, b []byte, sync bool) error {
	p, err := d.create(rel)
	if err != nil {
		return err
	}
	if _, err := p.Write(b); err != nil {
		p.abort()
		return fmt.Errorf("write %s: %w", rel, err)
	}
	return p.commit(sync)
}

// files lists the drive's files that a binary cache or an export can
// hold: those in the root and in nar/, as slash-separated relative paths.
func (d *drive) files() ([]string, error) {
	var out []string
	for _, dir := range []string{".", narDir} {
		f, err := d.root.Open(dir)
		if errors.Is(err, fs.ErrNotExist) && dir == narDir {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", d.dir, err)
		}
		entries, err := f.ReadDir(-1)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("list %s/%s: %w", d.dir, dir, err)
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			out = append(out, path.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// isTemp reports whether a drive file is a temporary one an export left.
func isTemp(rel string) bool { return strings.Contains(path.Base(rel), tmpMarker) }

// removeTemps deletes what interrupted exports left behind.
func (d *drive) removeTemps() (int, error) {
	files, err := d.files()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		if isTemp(f) {
			if err := d.root.Remove(f); err != nil {
				return n, fmt.Errorf("remove %s: %w", f, err)
			}
			n++
		}
	}
	return n, nil
}

// sync flushes every file written to the drive's file system to the disk:
// with syncfs, or else (each file was synced as it was committed) by
// syncing the directories that name them.
func (d *drive) sync() error {
	dirs := []string{"."}
	if !haveSyncfs {
		dirs = []string{narDir, "."}
	}
	for _, dir := range dirs {
		f, err := d.root.Open(dir)
		if errors.Is(err, fs.ErrNotExist) && dir == narDir {
			continue
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", d.dir, err)
		}
		if haveSyncfs {
			err = syncFS(f)
		} else {
			err = f.Sync()
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", d.dir, err)
		}
	}
	return nil
}

// syncDir makes the drive's root directory entries durable.
func (d *drive) syncDir() error {
	f, err := d.root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// statfsFree is the space an unprivileged user may still write on the
// file system holding dir.
func statfsFree(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
