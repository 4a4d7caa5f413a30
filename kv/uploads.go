package kv

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketUploads      = []byte("uploads")      // upload URL path -> NarHash (32) + unix seconds (8)
	bucketLogs         = []byte("logs")         // derivation basename -> build log, one zstd frame
	bucketRealisations = []byte("realisations") // path below the cache root -> realisation JSON
)

// Blob names a bucket of small documents stored as given.
type Blob int

// The kinds of documents the index keeps for clients.
const (
	BlobLog         Blob = iota // build logs, by derivation basename
	BlobRealisation             // CA realisations, by their path in the cache
)

func (b Blob) bucket() []byte {
	if b == BlobLog {
		return bucketLogs
	}
	return bucketRealisations
}

// PutBlob stores a document.
func (ix *Index) PutBlob(kind Blob, key string, val []byte) error {
	err := ix.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(kind.bucket()).Put([]byte(key), val)
	})
	if err != nil {
		return fmt.Errorf("put %s %s: %w", kind.bucket(), key, err)
	}
	return nil
}

// GetBlob returns a document, or ErrNotFound.
func (ix *Index) GetBlob(kind Blob, key string) ([]byte, error) {
	var out []byte
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(kind.bucket()).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", kind.bucket(), key, err)
	}
	return out, nil
}

// Upload is the name a NAR was uploaded under, remembered with its commit
// so that a HEAD of the name answers, and so that GC drops the NAR after
// the upload grace if no narinfo comes to name it.
type Upload struct {
	Name string
	At   time.Time
}

func putUpload(tx *bolt.Tx, name string, narHash [32]byte, at time.Time) error {
	v := binary.BigEndian.AppendUint64(append([]byte(nil), narHash[:]...), uint64(at.Unix()))
	return tx.Bucket(bucketUploads).Put([]byte(name), v)
}

// replacedPrefix names the upload entries that stand for NARs a narinfo
// stopped naming when it was replaced: like an upload whose narinfo never
// came, such a NAR is dropped after the upload grace unless named again.
const replacedPrefix = "replaced:"

// Upload returns the NAR uploaded under name, or ErrNotFound.
func (ix *Index) Upload(name string) ([32]byte, error) {
	var h [32]byte
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUploads).Get([]byte(name))
		if len(v) != 40 {
			return ErrNotFound
		}
		copy(h[:], v)
		return nil
	})
	if err != nil {
		return h, fmt.Errorf("upload %s: %w", name, err)
	}
	return h, nil
}

// UploadEntry is one remembered upload.
type UploadEntry struct {
	Name    string
	NarHash [32]byte
	At      time.Time
	Named   bool // a narinfo names the NAR
}

// Uploads returns every remembered upload.
func (ix *Index) Uploads() ([]UploadEntry, error) {
	var out []UploadEntry
	err := ix.db.View(func(tx *bolt.Tx) error {
		paths := tx.Bucket(bucketNarPaths)
		return tx.Bucket(bucketUploads).ForEach(func(k, v []byte) error {
			if len(v) != 40 {
				return fmt.Errorf("upload %s: %w", k, ErrBadRecord)
			}
			e := UploadEntry{Name: string(k), At: time.Unix(int64(binary.BigEndian.Uint64(v[32:])), 0)}
			copy(e.NarHash[:], v)
			e.Named = named(paths, e.NarHash)
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list uploads: %w", err)
	}
	return out, nil
}

// DeleteUpload forgets an upload. The NAR stays.
func (ix *Index) DeleteUpload(name string) error {
	err := ix.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUploads).Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("delete upload %s: %w", name, err)
	}
	return nil
}

// Named reports whether any narinfo names the NAR.
func (ix *Index) Named(narHash [32]byte) (bool, error) {
	isNamed := false
	err := ix.db.View(func(tx *bolt.Tx) error {
		isNamed = named(tx.Bucket(bucketNarPaths), narHash)
		return nil
	})
	return isNamed, err
}

func named(paths *bolt.Bucket, narHash [32]byte) bool {
	k, _ := paths.Cursor().Seek(narHash[:])
	return len(k) >= 32 && [32]byte(k[:32]) == narHash
}
