package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// logFiles reads value-log entries with pread instead of through Badger's
// shared mapping of the files: a read through the mapping leaves its pages
// in the process's resident set, and dropping them after every read costs
// a page fault on every later one. Files are opened on first use and kept
// open until the value-log GC may have deleted some (closeAll).
type logFiles struct {
	dir    string
	mu     sync.RWMutex // held shared while reading, exclusively to open or close
	open   map[uint32]int
	closed bool // after shut, nothing is opened again
}

// errLogsShut reports a read after the chunk store closed; the caller falls
// back to Badger, which reports its own closing.
var errLogsShut = errors.New("value-log files closed")

func newLogFiles(dir string) *logFiles {
	return &logFiles{dir: dir, open: map[uint32]int{}}
}

// fd returns the descriptor of value-log file fid, opening it if need be;
// the caller holds l.mu shared.
func (l *logFiles) fd(fid uint32) (int, error) {
	for {
		if fd, ok := l.open[fid]; ok {
			return fd, nil
		}
		l.mu.RUnlock()
		err := l.openFile(fid)
		l.mu.RLock()
		if err != nil {
			return -1, err
		}
	}
}

// openFile opens value-log file fid unless it is open.
func (l *logFiles) openFile(fid uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errLogsShut
	}
	if _, ok := l.open[fid]; ok {
		return nil
	}
	path := l.path(fid)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	l.open[fid] = fd
	return nil
}

// path is Badger's name for value-log file fid.
func (l *logFiles) path(fid uint32) string {
	return filepath.Join(l.dir, fmt.Sprintf("%06d.vlog", fid))
}

// closeAll closes every open file, so that deleted ones give their space
// back; later reads open them again.
func (l *logFiles) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for fid, fd := range l.open {
		unix.Close(fd)
		delete(l.open, fid)
	}
}

// shut closes every open file for good: a read racing the chunk store's
// Close opens none again.
func (l *logFiles) shut() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.closeAll()
}

// appendValue appends the value of item to dst, read from its value-log
// entry with one preadv that puts the value straight into dst. It checks
// that the entry's header and key are item's, and returns ok false (dst
// unchanged) whenever it cannot vouch for the bytes: the caller then reads
// the value through Badger.
func (l *logFiles) appendValue(item *badger.Item, dst []byte) ([]byte, bool) {
	vp, ok := valuePointer(item)
	key := item.Key()
	if !ok {
		return dst, false
	}
	hlen, vlen, ok := entryLayout(vp.Len, len(key)+8)
	if !ok {
		return dst, false
	}
	var head [2 + 3*binary.MaxVarintLen64 + 64]byte
	if hlen+len(key)+8 > len(head) {
		return dst, false
	}
	var crc [vlogCRCSize]byte
	start := len(dst)
	dst = slices.Grow(dst, vlen)[:start+vlen]
	l.mu.RLock()
	defer l.mu.RUnlock()
	fd, err := l.fd(vp.Fid)
	if err != nil {
		return dst[:start], false
	}
	iov := [][]byte{head[:hlen+len(key)+8], dst[start:], crc[:]}
	n, err := preadv(fd, iov, int64(vp.Offset))
	if err != nil || n != int(vp.Len) || !entryIs(head[:hlen+len(key)+8], key, hlen, vlen) {
		return dst[:start], false
	}
	return dst, true
}

// entryLayout works out the header and value lengths of a value-log entry
// of entryLen bytes whose key (with its timestamp) is klen bytes long and
// which has no expiry: a header is meta, user meta, then the key length,
// value length and expiry as uvarints.
func entryLayout(entryLen uint32, klen int) (hlen, vlen int, ok bool) {
	for vl := 1; vl <= binary.MaxVarintLen32; vl++ {
		hlen = 2 + uvarintLen(uint64(klen)) + vl + 1
		vlen = int(entryLen) - hlen - klen - vlogCRCSize
		if vlen >= 0 && uvarintLen(uint64(vlen)) == vl {
			return hlen, vlen, true
		}
	}
	return 0, 0, false
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}

// entryIs reports whether head, an entry's header and key, is the header
// entryLayout assumed and carries key.
func entryIs(head, key []byte, hlen, vlen int) bool {
	i := 2
	klen, n := binary.Uvarint(head[i:])
	i += n
	vl, n2 := binary.Uvarint(head[i:])
	i += n2
	exp, n3 := binary.Uvarint(head[i:])
	i += n3
	return n > 0 && n2 > 0 && n3 > 0 && exp == 0 && i == hlen &&
		klen == uint64(len(key)+8) && vl == uint64(vlen) &&
		bytes.Equal(head[hlen:hlen+len(key)], key)
}
