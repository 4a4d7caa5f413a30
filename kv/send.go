package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"

	"cairn/cdc"
)

// span is where one frame's value lies in a value-log file.
type span struct {
	fid   uint32
	entry int64 // offset of the entry's header
	hlen  int   // header bytes
	vlen  int   // value bytes
}

// SendFrames writes bytes [skip, skip+n) of the frames of ids, back to
// back, to w straight from the value-log files: a socket behind w's
// ReadFrom gets them by sendfile, never through this process's memory.
// want holds each frame's promised length. It stops before the first frame
// it cannot vouch for (not in the value log, another length, or a header
// that is not its own) and returns the bytes written; the caller copies
// that frame another way.
func (s *ChunkStore) SendFrames(ctx context.Context, w io.Writer, ids []cdc.ID, want []uint32, skip, n int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	spans := make([]span, 0, len(ids))
	err := s.db.View(func(txn *badger.Txn) error {
		for i, id := range ids {
			item, err := txn.Get(id[:])
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil // the copy path reports it
			}
			if err != nil {
				return fmt.Errorf("chunk %s: %w", id, err)
			}
			vp, ok := valuePointer(item)
			if !ok {
				return nil
			}
			hlen, vlen, ok := entryLayout(vp.Len, len(id)+8)
			if !ok || vlen != int(want[i]) {
				return nil
			}
			spans = append(spans, span{fid: vp.Fid, entry: int64(vp.Offset), hlen: hlen, vlen: vlen})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	files := map[uint32]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// Check every header before the first byte goes out, so that a frame
	// found wrong leaves nothing half sent.
	var head [2 + 3*binary.MaxVarintLen64 + 64]byte
	for i, sp := range spans {
		f, ok := files[sp.fid]
		if !ok {
			// A file the value-log GC deleted since the lookup fails to
			// open; one opened stays readable until closed.
			path := filepath.Join(s.logs.dir, fmt.Sprintf("%06d.vlog", sp.fid))
			if f, err = os.Open(path); err != nil {
				spans = spans[:i]
				break
			}
			files[sp.fid] = f
		}
		key := ids[i][:]
		if sp.hlen+len(key)+8 > len(head) {
			spans = spans[:i]
			break
		}
		h := head[:sp.hlen+len(key)+8]
		if k, err := f.ReadAt(h, sp.entry); k != len(h) || err != nil || !entryIs(h, key, sp.hlen, sp.vlen) {
			spans = spans[:i]
			break
		}
	}
	rf, ok := w.(io.ReaderFrom)
	if !ok {
		rf = readerFromWriter{w}
	}
	var written int64
	var start int64 // offset of the span's first byte in the frames
	for i, sp := range spans {
		end := start + int64(sp.vlen)
		from, to := max(start, skip), min(end, skip+n)
		start = end
		if from >= to {
			if from >= skip+n {
				break
			}
			continue
		}
		f := files[sp.fid]
		off := sp.entry + int64(sp.hlen+len(ids[i])+8) + (from - (end - int64(sp.vlen)))
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return written, fmt.Errorf("send chunk %s: %w", ids[i], err)
		}
		k, err := rf.ReadFrom(&io.LimitedReader{R: f, N: to - from})
		written += k
		if err != nil {
			return written, fmt.Errorf("send chunk %s: %w", ids[i], err)
		}
		if k != to-from {
			return written, fmt.Errorf("send chunk %s: %w", ids[i], io.ErrUnexpectedEOF)
		}
	}
	return written, nil
}

// readerFromWriter gives any writer a ReadFrom.
type readerFromWriter struct{ io.Writer }

func (w readerFromWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(w.Writer, r)
}
