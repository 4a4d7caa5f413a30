package kv

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketPins = []byte("pins") // pinned store path basename -> unix seconds of the pin

// Pin is one pinned root.
type Pin struct {
	Path string // store path basename
	At   time.Time
}

// PutPin records a pinned root.
func (ix *Index) PutPin(base string, at time.Time) error {
	err := ix.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).Put([]byte(base), binary.BigEndian.AppendUint64(nil, uint64(at.Unix())))
	})
	if err != nil {
		return fmt.Errorf("pin %s: %w", base, err)
	}
	return nil
}

// DeletePin removes a pinned root; ErrNotFound when it was not pinned.
func (ix *Index) DeletePin(base string) error {
	err := ix.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPins)
		if b.Get([]byte(base)) == nil {
			return ErrNotFound
		}
		return b.Delete([]byte(base))
	})
	if err != nil {
		return fmt.Errorf("unpin %s: %w", base, err)
	}
	return nil
}

// Pins returns the pinned roots in name order.
func (ix *Index) Pins() ([]Pin, error) {
	var out []Pin
	err := ix.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).ForEach(func(k, v []byte) error {
			p := Pin{Path: string(k)}
			if len(v) == 8 {
				p.At = time.Unix(int64(binary.BigEndian.Uint64(v)), 0)
			}
			out = append(out, p)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	return out, nil
}

// Candidate is a stored path as eviction sees it.
type Candidate struct {
	StoreHash  string
	Base       string // store path basename
	NarHash    [32]byte
	NarSize    uint64
	References []string
	Used       int64 // last access, unix milliseconds; the commit time when never read
}

// Candidates returns every stored path, least recently used first.
func (ix *Index) Candidates() ([]Candidate, error) {
	var out []Candidate
	err := ix.db.View(func(tx *bolt.Tx) error {
		atimes := tx.Bucket(bucketAtime)
		return tx.Bucket(bucketNarInfo).ForEach(func(k, v []byte) error {
			var n NarInfo
			if err := n.UnmarshalBinary(v); err != nil {
				return fmt.Errorf("narinfo %s: %w", k, err)
			}
			c := Candidate{StoreHash: string(k), Base: strings.TrimPrefix(n.StorePath, "/nix/store/"),
				NarHash: n.NarHash, NarSize: n.NarSize, References: n.References, Used: n.Added * 1000}
			if t := atimes.Get(k); len(t) == 8 {
				c.Used = max(c.Used, int64(binary.BigEndian.Uint64(t)))
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("eviction candidates: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Used < out[j].Used })
	return out, nil
}

// TouchNARs records access times for every store path whose narinfo names
// one of the NARs, in one transaction.
func (ix *Index) TouchNARs(times map[[32]byte]int64) error {
	if len(times) == 0 {
		return nil
	}
	return ix.db.Update(func(tx *bolt.Tx) error {
		at := tx.Bucket(bucketAtime)
		c := tx.Bucket(bucketNarPaths).Cursor()
		for h, t := range times {
			for k, _ := c.Seek(h[:]); len(k) > 32 && [32]byte(k[:32]) == h; k, _ = c.Next() {
				if err := at.Put(k[32:], binary.BigEndian.AppendUint64(nil, uint64(t))); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// NarPaths returns the store paths whose narinfo names a NAR.
func (ix *Index) NarPaths(narHash [32]byte) ([]string, error) {
	var out []string
	err := ix.db.View(func(tx *bolt.Tx) error {
		infos := tx.Bucket(bucketNarInfo)
		c := tx.Bucket(bucketNarPaths).Cursor()
		for k, _ := c.Seek(narHash[:]); len(k) > 32 && [32]byte(k[:32]) == narHash; k, _ = c.Next() {
			var n NarInfo
			if v := infos.Get(k[32:]); v != nil && n.UnmarshalBinary(v) == nil {
				out = append(out, n.StorePath)
			}
		}
		return nil
	})
	return out, err
}
