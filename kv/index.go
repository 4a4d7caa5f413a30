// Package kv holds cairn's embedded storage: the Badger chunk store and the
// bbolt metadata index. It knows nothing about HTTP or Nix policy.
package kv

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"cairn/cdc"
)

// FormatVersion is the index layout this build reads and writes. Version 2
// added delta bases and sketches to chunk references; a version 1 index is
// upgraded when opened, and cannot be opened by a release that reads 1.
const FormatVersion = 2

var (
	// ErrNotFound reports a key that is not in the index.
	ErrNotFound = errors.New("not found")
	// ErrLocked reports a data directory opened by another process.
	ErrLocked = errors.New("data directory is in use by another process")
	// ErrFormat reports an index written with another format or chunker.
	ErrFormat = errors.New("index format mismatch")
)

var (
	bucketMeta     = []byte("meta")       // format, chunker, counters
	bucketNarInfo  = []byte("narinfo")    // store hash -> NarInfo
	bucketManifest = []byte("manifest")   // NarHash -> Manifest
	bucketRefs     = []byte("refs")       // chunk id -> count, size
	bucketAtime    = []byte("atime")      // store hash -> unix milliseconds
	bucketQueue    = []byte("recompress") // commit time (8 bytes BE) + NarHash -> ""
	bucketNarPaths = []byte("narpaths")   // NarHash + store hash -> "": the narinfos naming a NAR

	keyFormat  = []byte("format")
	keyChunker = []byte("chunker")
	keyStats   = []byte("stats")
)

// Stats are the index-wide counters, kept in the same transactions that
// change what they count.
type Stats struct {
	NarInfos      uint64 // store paths
	NARs          uint64 // manifests
	Chunks        uint64 // distinct referenced chunks
	LogicalBytes  uint64 // sum of NarSize over manifests
	PhysicalBytes uint64 // sum of stored frame sizes over distinct chunks
}

func (s *Stats) encode() []byte {
	b := make([]byte, 0, 40)
	for _, v := range []uint64{s.NarInfos, s.NARs, s.Chunks, s.LogicalBytes, s.PhysicalBytes} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func decodeStats(b []byte) (Stats, error) {
	d := decoder{b: b}
	s := Stats{d.uvarint("narinfos"), d.uvarint("nars"), d.uvarint("chunks"), d.uvarint("logical"), d.uvarint("physical")}
	return s, d.err
}

// Index is the bbolt metadata index.
type Index struct {
	db  *bolt.DB
	gen atomic.Uint64 // bumped after every counted update
}

// OpenIndex opens or creates the index at path for chunker parameters p. An
// existing index written with another format version or other parameters is
// refused with ErrFormat.
func OpenIndex(path string, p cdc.Params) (*Index, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open index %s: %w (stop the running cairn, or use its admin API)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	ix := &Index{db: db}
	if err := ix.init(p); err != nil {
		db.Close()
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	return ix, nil
}

func (ix *Index) init(p cdc.Params) error {
	want := []byte(strconv.Itoa(FormatVersion))
	return ix.db.Update(func(tx *bolt.Tx) error {
		fillNarPaths := tx.Bucket(bucketNarPaths) == nil && tx.Bucket(bucketNarInfo) != nil
		for _, b := range [][]byte{bucketMeta, bucketNarInfo, bucketManifest, bucketRefs, bucketAtime, bucketQueue, bucketNarPaths,
			bucketUploads, bucketLogs, bucketRealisations, bucketPins, bucketSketch} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if fillNarPaths {
			// An index from before the reverse bucket existed.
			paths := tx.Bucket(bucketNarPaths)
			if err := tx.Bucket(bucketNarInfo).ForEach(func(k, v []byte) error {
				var ni NarInfo
				if err := ni.UnmarshalBinary(v); err != nil {
					return err
				}
				return paths.Put(append(ni.NarHash[:], k...), nil)
			}); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		format, chunker := meta.Get(keyFormat), meta.Get(keyChunker)
		if format == nil {
			if err := meta.Put(keyFormat, want); err != nil {
				return err
			}
			return meta.Put(keyChunker, []byte(p.String()))
		}
		if string(format) == "1" {
			// Version 1 is version 2 with no deltas yet.
			if err := meta.Put(keyFormat, want); err != nil {
				return err
			}
			format = want
		}
		if !bytes.Equal(format, want) {
			return fmt.Errorf("%w: the data directory has index format %s but this cairn reads format %s; "+
				"run the cairn release that created it, or export its paths with `cairn seed export` and import them into a new data directory",
				ErrFormat, format, want)
		}
		if string(chunker) != p.String() {
			return fmt.Errorf("%w: the data directory was chunked with %q but this cairn is configured for %q; "+
				"chunker parameters are permanent: use the parameters the store was created with, or start a new data directory",
				ErrFormat, chunker, p.String())
		}
		return nil
	})
}

// Close closes the index.
func (ix *Index) Close() error { return ix.db.Close() }

// Backup writes a consistent copy of the whole index to w while it is in use.
func (ix *Index) Backup(w io.Writer) (int64, error) {
	var n int64
	err := ix.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

func stats(tx *bolt.Tx) (Stats, error) {
	b := tx.Bucket(bucketMeta).Get(keyStats)
	if b == nil {
		return Stats{}, nil
	}
	return decodeStats(b)
}

// update runs fn in one write transaction with the counters loaded, and
// stores them back in the same transaction.
func (ix *Index) update(fn func(tx *bolt.Tx, st *Stats) error) error {
	defer ix.gen.Add(1)
	return ix.db.Update(func(tx *bolt.Tx) error {
		st, err := stats(tx)
		if err != nil {
			return err
		}
		if err := fn(tx, &st); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyStats, st.encode())
	})
}

// Generation changes whenever a narinfo, manifest or reference may have
// changed, so a cache of what they render to knows when to drop it.
func (ix *Index) Generation() uint64 { return ix.gen.Load() }

// LookupNarInfo is NarInfo for hot paths: a miss is (nil, nil), with no
// error to build.
func (ix *Index) LookupNarInfo(storeHash string) (*NarInfo, error) {
	var n *NarInfo
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNarInfo).Get([]byte(storeHash))
		if v == nil {
			return nil
		}
		n = new(NarInfo)
		return n.UnmarshalBinary(v)
	})
	if err != nil {
		return nil, fmt.Errorf("narinfo %s: %w", storeHash, err)
	}
	return n, nil
}

// Stats returns the index counters.
func (ix *Index) Stats() (Stats, error) {
	var s Stats
	err := ix.db.View(func(tx *bolt.Tx) error {
		var err error
		s, err = stats(tx)
		return err
	})
	return s, err
}

// Manifest returns the manifest of the NAR with the given sha256.
func (ix *Index) Manifest(narHash [32]byte) (*Manifest, error) {
	m := new(Manifest)
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketManifest).Get(narHash[:])
		if v == nil {
			return ErrNotFound
		}
		if err := m.UnmarshalBinary(v); err != nil {
			return err
		}
		return fillFrames(tx.Bucket(bucketRefs), m.Chunks)
	})
	if err != nil {
		return nil, fmt.Errorf("manifest %x: %w", narHash, err)
	}
	return m, nil
}

// fillFrames sets each chunk's frame size and level from its ref entry.
func fillFrames(refs *bolt.Bucket, chunks []cdc.ChunkRef) error {
	for i := range chunks {
		r, ok, err := getRef(refs, chunks[i].ID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("chunk %s: reference missing", chunks[i].ID)
		}
		chunks[i].Comp, chunks[i].Level = r.comp, r.level
	}
	return nil
}

// HasManifest reports whether the NAR with the given sha256 is committed.
func (ix *Index) HasManifest(narHash [32]byte) (bool, error) {
	var ok bool
	err := ix.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketManifest).Get(narHash[:]) != nil
		return nil
	})
	return ok, err
}

// NarInfo returns the narinfo record of a store hash.
func (ix *Index) NarInfo(storeHash string) (*NarInfo, error) {
	n := new(NarInfo)
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNarInfo).Get([]byte(storeHash))
		if v == nil {
			return ErrNotFound
		}
		return n.UnmarshalBinary(v)
	})
	if err != nil {
		return nil, fmt.Errorf("narinfo %s: %w", storeHash, err)
	}
	return n, nil
}

// Unreferenced returns those of ids that no manifest references (no entry,
// or a dormant one), looked up in one read transaction.
func (ix *Index) Unreferenced(ids []cdc.ID) ([]cdc.ID, error) {
	var out []cdc.ID
	err := ix.db.View(func(tx *bolt.Tx) error {
		refs := tx.Bucket(bucketRefs)
		for _, id := range ids {
			r, _, err := getRef(refs, id)
			if err != nil {
				return err
			}
			if r.count == 0 { // no entry, or a dormant one
				out = append(out, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up %d chunk references: %w", len(ids), err)
	}
	return out, nil
}

// storeHash is the 32-character hash part of a store path.
func storeHash(storePath string) (string, error) {
	const prefix = "/nix/store/"
	if len(storePath) < len(prefix)+33 || storePath[:len(prefix)] != prefix || storePath[len(prefix)+32] != '-' {
		return "", fmt.Errorf("%w: bad store path %q", ErrBadRecord, storePath)
	}
	return storePath[len(prefix) : len(prefix)+32], nil
}

// CommitNAR records a NAR whose chunks are all durable in the chunk store,
// together with its narinfo when ni is not nil and its upload name when up
// is not nil, in one transaction. It
// reports whether the manifest was new; an existing manifest is kept as is.
func (ix *Index) CommitNAR(m *Manifest, ni *NarInfo, up *Upload) (bool, error) {
	var created bool
	err := ix.update(func(tx *bolt.Tx, st *Stats) error {
		mb := tx.Bucket(bucketManifest)
		if mb.Get(m.NarHash[:]) == nil {
			created = true
			rec, _ := m.MarshalBinary()
			if err := mb.Put(m.NarHash[:], rec); err != nil {
				return err
			}
			stored, err := addRefs(tx.Bucket(bucketRefs), m.Chunks, st)
			if err != nil {
				return err
			}
			if stored {
				key := binary.BigEndian.AppendUint64(make([]byte, 0, 40), uint64(time.Now().UnixNano()))
				if err := tx.Bucket(bucketQueue).Put(append(key, m.NarHash[:]...), nil); err != nil {
					return err
				}
			}
			st.NARs++
			st.LogicalBytes += m.NarSize
		}
		if ni != nil {
			if ni.NarHash != m.NarHash {
				return fmt.Errorf("narinfo %s: NarHash %x does not name manifest %x", ni.StorePath, ni.NarHash, m.NarHash)
			}
			if err := putNarInfo(tx, ni, st); err != nil {
				return err
			}
		}
		if up != nil {
			// In the same transaction: a NAR committed without its upload
			// entry would be named by nothing, and kept for ever.
			return putUpload(tx, up.Name, m.NarHash, up.At)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("commit nar %x: %w", m.NarHash, err)
	}
	return created, nil
}

// PutNarInfo stores a narinfo for a NAR that is already committed.
func (ix *Index) PutNarInfo(ni *NarInfo) error {
	err := ix.update(func(tx *bolt.Tx, st *Stats) error {
		if tx.Bucket(bucketManifest).Get(ni.NarHash[:]) == nil {
			return fmt.Errorf("nar %x: %w", ni.NarHash, ErrNotFound)
		}
		return putNarInfo(tx, ni, st)
	})
	if err != nil {
		return fmt.Errorf("put narinfo %s: %w", ni.StorePath, err)
	}
	return nil
}

func putNarInfo(tx *bolt.Tx, ni *NarInfo, st *Stats) error {
	h, err := storeHash(ni.StorePath)
	if err != nil {
		return err
	}
	b := tx.Bucket(bucketNarInfo)
	paths := tx.Bucket(bucketNarPaths)
	if old := b.Get([]byte(h)); old == nil {
		st.NarInfos++
	} else {
		var prev NarInfo
		if err := prev.UnmarshalBinary(old); err != nil {
			return err
		}
		if err := paths.Delete(append(prev.NarHash[:], h...)); err != nil {
			return err
		}
		if prev.NarHash != ni.NarHash && !named(paths, prev.NarHash) {
			// Nothing names the old NAR now: leave it to the upload sweep.
			name := replacedPrefix + hex.EncodeToString(prev.NarHash[:])
			if err := putUpload(tx, name, prev.NarHash, time.Now()); err != nil {
				return err
			}
		}
	}
	if err := paths.Put(append(ni.NarHash[:], h...), nil); err != nil {
		return err
	}
	rec, _ := ni.MarshalBinary()
	return b.Put([]byte(h), rec)
}

// deleteNarInfo removes a narinfo and what hangs off it.
func deleteNarInfo(tx *bolt.Tx, storeHash string, st *Stats) error {
	b := tx.Bucket(bucketNarInfo)
	v := b.Get([]byte(storeHash))
	if v == nil {
		return ErrNotFound
	}
	var ni NarInfo
	if err := ni.UnmarshalBinary(v); err != nil {
		return err
	}
	st.NarInfos--
	for _, del := range []struct {
		b []byte
		k []byte
	}{{bucketNarInfo, []byte(storeHash)}, {bucketAtime, []byte(storeHash)}, {bucketNarPaths, append(ni.NarHash[:], storeHash...)}} {
		if err := tx.Bucket(del.b).Delete(del.k); err != nil {
			return err
		}
	}
	return nil
}

// addRefs takes one reference on each distinct chunk of a manifest; a new
// entry records the frame size and level the ingest wrote. It reports
// whether any of the chunks is held in stored-block frames.
func addRefs(refs *bolt.Bucket, chunks []cdc.ChunkRef, st *Stats) (bool, error) {
	seen := make(map[cdc.ID]struct{}, len(chunks))
	stored := false
	for _, c := range chunks {
		if _, dup := seen[c.ID]; dup {
			continue
		}
		seen[c.ID] = struct{}{}
		r, _, err := getRef(refs, c.ID)
		if err != nil {
			return false, err
		}
		if r.count == 0 {
			// New, or dormant: the frame is the one this ingest wrote or
			// found; a dormant entry's delta base stays counted.
			r.comp, r.level = c.Comp, c.Level
			st.Chunks++
			st.PhysicalBytes += uint64(r.stored())
		}
		r.count++
		stored = stored || r.level == cdc.StoredLevel
		if err := refs.Put(c.ID[:], r.encode()); err != nil {
			return false, err
		}
	}
	return stored, nil
}

// DeleteNarInfo removes the narinfo of a store hash. The NAR stays.
func (ix *Index) DeleteNarInfo(storeHash string) error {
	err := ix.update(func(tx *bolt.Tx, st *Stats) error {
		return deleteNarInfo(tx, storeHash, st)
	})
	if err != nil {
		return fmt.Errorf("delete narinfo %s: %w", storeHash, err)
	}
	return nil
}

// DeleteNAR drops a manifest, its chunk references and every narinfo that
// names it, in one transaction, so no narinfo outlives its NAR. It returns
// the chunks whose last reference it dropped; the caller deletes those from
// the chunk store only after this returns, never before.
func (ix *Index) DeleteNAR(narHash [32]byte) ([]cdc.ID, error) {
	var freed []cdc.ID
	err := ix.update(func(tx *bolt.Tx, st *Stats) error {
		var err error
		freed, err = deleteNAR(tx, narHash, st)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("delete nar %x: %w", narHash, err)
	}
	return freed, nil
}

// DeleteUnnamedNAR drops a NAR, as DeleteNAR does, only if no narinfo
// names it, checked in the same transaction. It reports whether it did.
func (ix *Index) DeleteUnnamedNAR(narHash [32]byte) (bool, []cdc.ID, error) {
	var freed []cdc.ID
	deleted := false
	err := ix.update(func(tx *bolt.Tx, st *Stats) error {
		if named(tx.Bucket(bucketNarPaths), narHash) || tx.Bucket(bucketManifest).Get(narHash[:]) == nil {
			return nil
		}
		var err error
		freed, err = deleteNAR(tx, narHash, st)
		deleted = err == nil
		return err
	})
	if err != nil {
		return false, nil, fmt.Errorf("delete unnamed nar %x: %w", narHash, err)
	}
	return deleted, freed, nil
}

// DeletePaths removes store paths' narinfos and, for each NAR no other
// narinfo names any more, the NAR too, all in one transaction. Hashes
// with no narinfo are skipped. It returns how many paths and NARs went and
// the chunks whose last reference went, for the caller to delete
// afterwards.
func (ix *Index) DeletePaths(storeHashes []string) (paths, nars int, freed []cdc.ID, err error) {
	err = ix.update(func(tx *bolt.Tx, st *Stats) error {
		paths, nars, freed = 0, 0, freed[:0]
		for _, h := range storeHashes {
			v := tx.Bucket(bucketNarInfo).Get([]byte(h))
			if v == nil {
				continue
			}
			var ni NarInfo
			if err := ni.UnmarshalBinary(v); err != nil {
				return fmt.Errorf("narinfo %s: %w", h, err)
			}
			if err := deleteNarInfo(tx, h, st); err != nil {
				return err
			}
			paths++
			if named(tx.Bucket(bucketNarPaths), ni.NarHash) || tx.Bucket(bucketManifest).Get(ni.NarHash[:]) == nil {
				continue
			}
			f, err := deleteNAR(tx, ni.NarHash, st)
			if err != nil {
				return err
			}
			nars++
			freed = append(freed, f...)
		}
		return nil
	})
	if err != nil {
		return 0, 0, nil, fmt.Errorf("delete %d paths: %w", len(storeHashes), err)
	}
	return paths, nars, freed, nil
}

// deleteNAR drops a manifest, its chunk references and the narinfos naming
// it inside tx, returning the chunks whose last reference went.
func deleteNAR(tx *bolt.Tx, narHash [32]byte, st *Stats) ([]cdc.ID, error) {
	var freed []cdc.ID
	mb := tx.Bucket(bucketManifest)
	v := mb.Get(narHash[:])
	if v == nil {
		return nil, ErrNotFound
	}
	var m Manifest
	if err := m.UnmarshalBinary(v); err != nil {
		return nil, err
	}
	seen := make(map[cdc.ID]struct{}, len(m.Chunks))
	for _, c := range m.Chunks {
		if _, dup := seen[c.ID]; dup {
			continue
		}
		seen[c.ID] = struct{}{}
		var err error
		if freed, err = dropRef(tx, c.ID, st, freed); err != nil {
			return nil, err
		}
	}
	st.NARs--
	st.LogicalBytes -= m.NarSize
	if err := mb.Delete(narHash[:]); err != nil {
		return nil, err
	}
	var named []string
	c := tx.Bucket(bucketNarPaths).Cursor()
	for k, _ := c.Seek(narHash[:]); k != nil && bytes.HasPrefix(k, narHash[:]); k, _ = c.Next() {
		named = append(named, string(k[32:]))
	}
	infos, paths := tx.Bucket(bucketNarInfo), tx.Bucket(bucketNarPaths)
	for _, h := range named {
		var ni NarInfo
		v := infos.Get([]byte(h))
		if v != nil {
			if err := ni.UnmarshalBinary(v); err != nil {
				return nil, fmt.Errorf("narinfo %s: %w", h, err)
			}
		}
		if v == nil || ni.NarHash != narHash {
			// A stale reverse entry: drop it and go on.
			if err := paths.Delete(append(narHash[:], h...)); err != nil {
				return nil, err
			}
			continue
		}
		if err := deleteNarInfo(tx, h, st); err != nil {
			return nil, fmt.Errorf("narinfo %s: %w", h, err)
		}
	}
	return freed, nil
}

// ForEachManifest calls fn with every committed manifest, in NarHash order.
// fn runs inside a read transaction and must not write to the index.
func (ix *Index) ForEachManifest(fn func(*Manifest) error) error {
	return ix.db.View(func(tx *bolt.Tx) error {
		refs := tx.Bucket(bucketRefs)
		return tx.Bucket(bucketManifest).ForEach(func(_, v []byte) error {
			var m Manifest
			if err := m.UnmarshalBinary(v); err != nil {
				return err
			}
			if err := fillFrames(refs, m.Chunks); err != nil {
				return err
			}
			return fn(&m)
		})
	})
}

// ForEachNarInfo calls fn with every narinfo record, in store hash order.
// fn runs inside a read transaction and must not write to the index.
func (ix *Index) ForEachNarInfo(fn func(*NarInfo) error) error {
	return ix.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNarInfo).ForEach(func(_, v []byte) error {
			var n NarInfo
			if err := n.UnmarshalBinary(v); err != nil {
				return err
			}
			return fn(&n)
		})
	})
}

// Touch records access times, one transaction for the whole batch, for the
// store paths that still have a narinfo.
func (ix *Index) Touch(times map[string]int64) error {
	if len(times) == 0 {
		return nil
	}
	return ix.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAtime)
		infos := tx.Bucket(bucketNarInfo)
		for h, t := range times {
			if infos.Get([]byte(h)) == nil {
				continue
			}
			if err := b.Put([]byte(h), binary.BigEndian.AppendUint64(nil, uint64(t))); err != nil {
				return err
			}
		}
		return nil
	})
}

// Atime returns the recorded access time of a store hash in Unix
// milliseconds, or 0.
func (ix *Index) Atime(storeHash string) (int64, error) {
	var t int64
	err := ix.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketAtime).Get([]byte(storeHash)); len(v) == 8 {
			t = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return t, err
}

// ChunkFrame returns the stored frame size and level of a referenced
// chunk, and false when no manifest references it: a dormant chunk's frame
// may be deleted any moment, so an ingest writes it again.
func (ix *Index) ChunkFrame(id cdc.ID) (comp uint32, level uint8, ok bool, err error) {
	err = ix.db.View(func(tx *bolt.Tx) error {
		r, _, err := getRef(tx.Bucket(bucketRefs), id)
		comp, level, ok = r.comp, r.level, err == nil && r.count > 0
		return err
	})
	if err != nil {
		return 0, 0, false, err
	}
	return comp, level, ok, nil
}

// QueueItem is a committed NAR waiting for its stored-block frames to be
// recompressed.
type QueueItem struct {
	Key     []byte
	NarHash [32]byte
	Queued  time.Time
}

// DueRecompress returns up to limit queued NARs committed before cutoff,
// oldest first, starting after the key after (nil: from the start).
func (ix *Index) DueRecompress(cutoff time.Time, after []byte, limit int) ([]QueueItem, error) {
	var out []QueueItem
	err := ix.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQueue).Cursor()
		k, _ := c.First()
		if after != nil {
			if k, _ = c.Seek(after); bytes.Equal(k, after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && len(out) < limit; k, _ = c.Next() {
			if len(k) != 40 {
				continue
			}
			at := time.Unix(0, int64(binary.BigEndian.Uint64(k)))
			if !at.Before(cutoff) {
				break
			}
			out = append(out, QueueItem{Key: bytes.Clone(k), NarHash: [32]byte(k[8:]), Queued: at})
		}
		return nil
	})
	return out, err
}

// FrameUpdate replaces a chunk's stored-block frame with the frame that now
// holds it: its size and level, or, at cdc.DeltaLevel, the size of the
// stored delta, while the chunk keeps From as its size as served.
type FrameUpdate struct {
	ID     cdc.ID
	From   uint32 // the stored-block frame's size, as recorded
	Comp   uint32
	Level  uint8
	Sketch *cdc.Sketch // if set, the chunk becomes a candidate delta base
}

// FinishRecompress records recompressed frames, already durable in the
// chunk store, and removes the queue entry, in one transaction. An update
// whose chunk is gone or no longer recorded as From is skipped.
func (ix *Index) FinishRecompress(key []byte, updates []FrameUpdate) error {
	return ix.recordFrames(key, updates)
}

// RecordFrames records recompressed frames as FinishRecompress does, for
// part of a NAR whose recompression goes on: its queue entry stays.
func (ix *Index) RecordFrames(updates []FrameUpdate) error {
	return ix.recordFrames(nil, updates)
}

// recordFrames records updates and, unless key is nil, removes queue entry
// key, in one transaction.
func (ix *Index) recordFrames(key []byte, updates []FrameUpdate) error {
	err := ix.update(func(tx *bolt.Tx, st *Stats) error {
		refs := tx.Bucket(bucketRefs)
		for _, u := range updates {
			r, ok, err := getRef(refs, u.ID)
			if err != nil {
				return err
			}
			if !ok || r.count == 0 || r.level != cdc.StoredLevel || r.comp != u.From {
				continue
			}
			before := r.stored()
			switch {
			case u.Level == cdc.DeltaLevel && !r.hasBase:
				return fmt.Errorf("chunk %s: %w: a delta recorded without a reserved base", u.ID, ErrBadRecord)
			case u.Level == cdc.DeltaLevel:
				r.level, r.phys = u.Level, u.Comp
			default:
				// A chunk whose reserved base went unused keeps it
				// counted until the chunk goes.
				r.comp, r.level = u.Comp, u.Level
				if u.Sketch != nil && !r.hasBase && baseEligible(r) {
					if err := setSketch(tx, u.ID, &r, *u.Sketch); err != nil {
						return err
					}
				}
			}
			st.PhysicalBytes = st.PhysicalBytes - uint64(before) + uint64(r.stored())
			if err := refs.Put(u.ID[:], r.encode()); err != nil {
				return err
			}
		}
		if key == nil {
			return nil
		}
		return tx.Bucket(bucketQueue).Delete(key)
	})
	if err != nil {
		return fmt.Errorf("record recompressed frames: %w", err)
	}
	return nil
}
