package kv

import (
	"encoding/binary"
	"os"
	"reflect"
	"unsafe"

	badger "github.com/dgraph-io/badger/v4"
)

// The value log's layout, as Badger writes it: each file starts with a
// header, and each entry is a header, the key, the value, then a CRC32.
const (
	vlogHeaderSize = 20
	vlogCRCSize    = 4
)

// pageSize is the unit of mappings and of madvise.
var pageSize = uintptr(os.Getpagesize())

// vlogPointer is Badger's value pointer: where an entry sits in which file.
type vlogPointer struct{ Fid, Len, Offset uint32 }

// vptrField is the index of badger.Item's encoded value pointer field, or
// -1 if this Badger version has none.
var vptrField = func() int {
	f, ok := reflect.TypeOf(badger.Item{}).FieldByName("vptr")
	if !ok || f.Type != reflect.TypeOf([]byte(nil)) || len(f.Index) != 1 {
		return -1
	}
	return f.Index[0]
}()

// valuePointer reads item's value pointer. Badger does not export it; ok
// is false unless the field exists and its length agrees with what
// Item.EstimatedSize reports for a value-log entry.
func valuePointer(item *badger.Item) (vlogPointer, bool) {
	if vptrField < 0 {
		return vlogPointer{}, false
	}
	b := reflect.ValueOf(item).Elem().Field(vptrField).Bytes()
	if len(b) != int(unsafe.Sizeof(vlogPointer{})) {
		return vlogPointer{}, false
	}
	vp := vlogPointer{
		Fid:    binary.NativeEndian.Uint32(b[0:]),
		Len:    binary.NativeEndian.Uint32(b[4:]),
		Offset: binary.NativeEndian.Uint32(b[8:]),
	}
	return vp, int64(vp.Len) == item.EstimatedSize() && vp.Offset >= vlogHeaderSize
}

// valueThreshold is the smallest value Badger keeps in its value log rather
// than inline in the LSM tree.
const valueThreshold = 64

// inValueLog reports whether v, the value of item as item.Value passed it,
// is a slice of Badger's memory-mapped value log. Badger copies an inline
// value to the heap and hands out a value-log value in place; only the
// value-log entry's encoded length (EstimatedSize) exceeds key plus value.
func inValueLog(item *badger.Item, v []byte) bool {
	return len(v) >= valueThreshold && item.EstimatedSize() > int64(len(item.Key())+len(v))
}

// releaseValue drops the pages of a value-log value from the process's
// resident set once it has been used: the value log is a shared file
// mapping, and every page written or read would otherwise stay resident
// until the file is unmapped. With the value pointer it drops everything
// from the start of the value's file up to the value, because a fault maps
// a whole page-cache folio (or a fault-around span) and so maps pages before
// a value too. Call it inside item.Value's callback, where Badger keeps the
// file mapped.
func releaseValue(item *badger.Item, v []byte) {
	if !inValueLog(item, v) {
		return
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
	hi := lo + uintptr(len(v))
	if vp, ok := valuePointer(item); ok && uintptr(vp.Len) >= uintptr(len(v))+vlogCRCSize {
		entry := hi + vlogCRCSize - uintptr(vp.Len) // the entry's first byte
		// The file's first byte starts the mapping, so it is page aligned;
		// if it is not, the pointer is not what it seems.
		if base := entry - uintptr(vp.Offset); base%pageSize == 0 {
			lo = base
		}
	}
	dropPages(lo, hi)
}

// releaseItems drops the pages of the values of items. A release reaches
// back to the start of the value's file, so one per file, of the value
// that sits last in it, covers them all.
func releaseItems(items []*badger.Item) {
	if vptrField >= 0 {
		items = lastPerFile(items)
	}
	for _, item := range items {
		_ = item.Value(func(v []byte) error {
			releaseValue(item, v)
			return nil
		})
	}
}

// lastPerFile returns, for each value-log file items have values in, the
// item whose value sits last in it; inline items are dropped.
func lastPerFile(items []*badger.Item) []*badger.Item {
	type place struct {
		offset uint32
		item   *badger.Item
	}
	last := map[uint32]place{}
	for _, item := range items {
		vp, ok := valuePointer(item)
		if cur, seen := last[vp.Fid]; ok && (!seen || vp.Offset > cur.offset) {
			last[vp.Fid] = place{vp.Offset, item}
		}
	}
	out := make([]*badger.Item, 0, len(last))
	for _, p := range last {
		out = append(out, p.item)
	}
	return out
}
