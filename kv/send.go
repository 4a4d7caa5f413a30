package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	badger "github.com/dgraph-io/badger/v4"

	"cairn/cdc"
)

// span is where one frame's value lies in a value-log file, in 16 bytes
// (the frame-location cache holds many): value-log offsets and lengths are
// 32-bit in Badger's value pointers.
type span struct {
	fid   uint32
	entry uint32 // offset of the entry's header
	vlen  uint32 // value bytes
	hlen  uint8  // header bytes
}

// errStop ends a send early without failing it: a file ended before a
// frame did, and the caller copies the rest another way.
var errStop = errors.New("file ends early")

// located is a run of frames found in the value-log files, with the files
// open, ready to be sent.
type located struct {
	ids   []cdc.ID
	spans []span
	files map[uint32]*os.File
}

// Len is how many frames were located: the first Len of those asked for.
func (l *located) Len() int { return len(l.spans) }

// Close closes the files the frames are in.
func (l *located) Close() error {
	for _, f := range l.files {
		f.Close()
	}
	return nil
}

// LocateFrames finds the frames of ids in the value-log files and opens
// the files they are in. want holds each frame's promised length. It stops
// before the first frame it cannot vouch for (not in the value log,
// another length, or in a file whose entries are not where Badger's value
// pointers say): the caller copies that frame another way.
func (s *ChunkStore) LocateFrames(ctx context.Context, ids []cdc.ID, want []uint32) (cdc.FrameRun, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &located{ids: ids, spans: make([]span, 0, len(ids)), files: map[uint32]*os.File{}}
	gen := s.spans.generation()
	var txn *badger.Txn // opened at the first frame not cached
	var fresh []int     // which spans were looked up, to cache them
	for i, id := range ids {
		sp, ok := s.spans.get(id)
		if !ok || sp.vlen != want[i] {
			if txn == nil {
				txn = s.db.NewTransaction(false)
				defer txn.Discard()
			}
			var err error
			if sp, ok, err = lookupSpan(txn, id, want[i]); err != nil {
				return nil, err
			}
			if !ok {
				break // the copy path reports it
			}
			fresh = append(fresh, i)
		}
		l.spans = append(l.spans, sp)
	}
	if len(fresh) > 0 {
		freshIDs := make([]cdc.ID, len(fresh))
		freshSpans := make([]span, len(fresh))
		for k, i := range fresh {
			freshIDs[k], freshSpans[k] = ids[i], l.spans[i]
		}
		s.spans.add(gen, freshIDs, freshSpans)
	}
	// One entry per file is read back. The bytes under a written offset
	// never change until the value-log GC truncates the whole file to
	// delete it (a send then stops short, see errStop), and each frame's
	// length already matched its manifest, so this guards the value
	// pointers read from Badger's unexported field.
	if i, ok := l.check(s.logs); !ok {
		// The value-log GC deleted a file since the lookup, or a cached
		// location is stale: the cache is dropped whole, not trusted more.
		s.spans.clear()
		l.spans = l.spans[:i]
	}
	return l, nil
}

// lookupSpan finds where chunk id's frame lies in the value log. ok is
// false when it cannot vouch for it: not in the value log, or of another
// length than want.
func lookupSpan(txn *badger.Txn, id cdc.ID, want uint32) (sp span, ok bool, err error) {
	item, err := txn.Get(id[:])
	if errors.Is(err, badger.ErrKeyNotFound) {
		return span{}, false, nil
	}
	if err != nil {
		return span{}, false, fmt.Errorf("locate chunk %s: %w", id, err)
	}
	vp, ok := valuePointer(item)
	if !ok {
		return span{}, false, nil
	}
	hlen, vlen, ok := entryLayout(vp.Len, len(id)+8)
	if !ok || vlen != int(want) {
		return span{}, false, nil
	}
	return span{fid: vp.Fid, entry: vp.Offset, vlen: uint32(vlen), hlen: uint8(hlen)}, true, nil
}

// check opens the files of the located spans and reads back the first
// entry in each. It returns the index of the first span it cannot vouch
// for, and false, if there is one.
func (l *located) check(logs *logFiles) (int, bool) {
	var head [2 + 3*binary.MaxVarintLen64 + 64]byte
	for i, sp := range l.spans {
		if _, ok := l.files[sp.fid]; ok {
			continue
		}
		// A file the value-log GC deleted since the lookup fails to open.
		f, err := os.Open(logs.path(sp.fid))
		if err != nil {
			return i, false
		}
		l.files[sp.fid] = f
		key := l.ids[i][:]
		hlen := int(sp.hlen)
		if hlen+len(key)+8 > len(head) {
			return i, false
		}
		h := head[:hlen+len(key)+8]
		if k, err := f.ReadAt(h, int64(sp.entry)); k != len(h) || err != nil || !entryIs(h, key, hlen, int(sp.vlen)) {
			return i, false
		}
	}
	return len(l.spans), true
}

// Send writes bytes [skip, skip+n) of the located frames, back to back,
// to w straight from the value-log files: a socket gets them by splice or
// sendfile, never through this process's memory. It stops early, with no
// error, at the end of the located frames or where a file ends (deleted by
// the value-log GC meanwhile).
func (l *located) Send(w io.Writer, skip, n int64) (int64, error) {
	if sw, ok := w.(cdc.PipeWriter); ok {
		return spliceSpans(sw, l.files, l.spans, l.ids, skip, n)
	}
	return copySpans(w, l.files, l.spans, l.ids, skip, n)
}

// copySpans writes the spans' parts of bytes [skip, skip+n) to w with
// io.Copy: sendfile when w is a socket.
func copySpans(w io.Writer, files map[uint32]*os.File, spans []span, ids []cdc.ID, skip, n int64) (int64, error) {
	var written int64
	err := eachPart(files, spans, ids, skip, n, func(f *os.File, off, length int64) error {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return err
		}
		k, err := io.Copy(w, &io.LimitedReader{R: f, N: length})
		written += k
		if err == nil && k != length {
			err = errStop // the file ends early
		}
		return err
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return written, err
}

// eachPart calls fn with the file, offset and length of each span's part
// of bytes [skip, skip+n) of the frames, in order.
func eachPart(files map[uint32]*os.File, spans []span, ids []cdc.ID, skip, n int64, fn func(f *os.File, off, length int64) error) error {
	var start int64 // offset of the span's first byte in the frames
	for i, sp := range spans {
		end := start + int64(sp.vlen)
		from, to := max(start, skip), min(end, skip+n)
		value := int64(sp.entry) + int64(int(sp.hlen)+len(ids[i])+8) // file offset of the value
		if from < to {
			if err := fn(files[sp.fid], value+from-start, to-from); err != nil {
				return fmt.Errorf("send chunk %s: %w", ids[i], err)
			}
		}
		start = end
		if start >= skip+n {
			break
		}
	}
	return nil
}
