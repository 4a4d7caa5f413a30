package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"cairn/cdc"
)

// ErrBadRecord reports an index record that cannot be decoded.
var ErrBadRecord = errors.New("malformed index record")

// recordVersion prefixes every encoded record, so a later format can still
// read older records.
const recordVersion = 1

// NarInfo is the stored metadata of one store path. Per-response fields
// (URL, Compression, FileHash, FileSize) are derived from the manifest.
type NarInfo struct {
	StorePath  string   // full path, /nix/store/<hash>-<name>
	NarHash    [32]byte // sha256 of the NAR
	NarSize    uint64
	References []string // basenames, as in a narinfo
	Deriver    string   // basename of the .drv, or ""
	CA         string
	Sigs       []string // "name:base64", upstream's and cairn's
	Source     string   // where it came from: an upstream URL, "upload", "seed"
	Added      int64    // unix seconds of the commit
}

// Manifest is the stored description of one NAR: its chunks and listing.
// A chunk's frame size and level are not part of the record: they live in
// the chunk's reference entry, the one place background recompression
// changes, and Index.Manifest fills them in.
type Manifest struct {
	NarHash [32]byte
	NarSize uint64
	Chunks  []cdc.ChunkRef
	Listing []byte // the NAR listing, Nix .ls JSON compressed as one zstd frame
}

// FileSize is the length of the NAR's .nar.zst stream: its frames' sizes.
func (m *Manifest) FileSize() uint64 {
	var n uint64
	for _, c := range m.Chunks {
		n += uint64(c.Comp)
	}
	return n
}

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) bytes(b []byte)   { e.uvarint(uint64(len(b))); e.b = append(e.b, b...) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) strs(s []string) {
	e.uvarint(uint64(len(s)))
	for _, x := range s {
		e.str(x)
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated at %s", ErrBadRecord, what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) raw(n uint64, what string) []byte {
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// bytes returns a copy: a record's bytes come from bbolt's memory map,
// which is only valid during its transaction and moves when the file grows.
func (d *decoder) bytes(what string) []byte { return bytes.Clone(d.raw(d.uvarint(what), what)) }
func (d *decoder) str(what string) string   { return string(d.raw(d.uvarint(what), what)) }
func (d *decoder) hash(what string) (h [32]byte) {
	copy(h[:], d.raw(32, what))
	return h
}

func (d *decoder) strs(what string) []string {
	n := d.uvarint(what)
	if n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	var out []string
	for i := uint64(0); i < n && d.err == nil; i++ {
		out = append(out, d.str(what))
	}
	return out
}

func (d *decoder) version(what string) {
	if v := d.uvarint(what); d.err == nil && v != recordVersion {
		d.err = fmt.Errorf("%w: %s record version %d, want %d", ErrBadRecord, what, v, recordVersion)
	}
}

// MarshalBinary encodes the narinfo record.
func (n *NarInfo) MarshalBinary() ([]byte, error) {
	e := encoder{b: make([]byte, 0, 256)}
	e.uvarint(recordVersion)
	e.str(n.StorePath)
	e.b = append(e.b, n.NarHash[:]...)
	e.uvarint(n.NarSize)
	e.strs(n.References)
	e.str(n.Deriver)
	e.str(n.CA)
	e.strs(n.Sigs)
	e.str(n.Source)
	e.uvarint(uint64(n.Added))
	return e.b, nil
}

// UnmarshalBinary decodes a narinfo record.
func (n *NarInfo) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	d.version("narinfo")
	*n = NarInfo{
		StorePath:  d.str("store path"),
		NarHash:    d.hash("nar hash"),
		NarSize:    d.uvarint("nar size"),
		References: d.strs("references"),
		Deriver:    d.str("deriver"),
		CA:         d.str("ca"),
		Sigs:       d.strs("sigs"),
		Source:     d.str("source"),
		Added:      int64(d.uvarint("added")),
	}
	return d.err
}

// MarshalBinary encodes the manifest record.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	e := encoder{b: make([]byte, 0, 64+len(m.Chunks)*36+len(m.Listing))}
	e.uvarint(recordVersion)
	e.b = append(e.b, m.NarHash[:]...)
	e.uvarint(m.NarSize)
	e.uvarint(uint64(len(m.Chunks)))
	for _, c := range m.Chunks {
		e.b = append(e.b, c.ID[:]...)
		e.uvarint(uint64(c.Raw))
	}
	e.bytes(m.Listing)
	return e.b, nil
}

// UnmarshalBinary decodes a manifest record.
func (m *Manifest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	d.version("manifest")
	m.NarHash = d.hash("nar hash")
	m.NarSize = d.uvarint("nar size")
	n := d.uvarint("chunk count")
	if n > uint64(len(d.b))/33 {
		d.fail("chunk list")
	}
	m.Chunks = make([]cdc.ChunkRef, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		var c cdc.ChunkRef
		c.ID = d.hash("chunk id")
		c.Raw = uint32(d.uvarint("chunk raw size"))
		m.Chunks = append(m.Chunks, c)
	}
	m.Listing = d.bytes("listing")
	return d.err
}

// ref is a chunk's entry in the refs bucket: how many manifests (and
// deltas) reference it, the size and level of its frame as served, and,
// when it has them, its delta base and its sketch.
type ref struct {
	count uint64
	comp  uint32
	level uint8
	// base is the chunk a delta of this one is compressed against. It is
	// set, and counted as a reference of base, before the delta is
	// written, so no stored delta ever outlives its base.
	base    cdc.ID
	hasBase bool
	phys    uint32 // bytes of the stored delta, once level is DeltaLevel
	// sketch makes the chunk a candidate base; only chunks stored as
	// independent frames have one.
	sketch    cdc.Sketch
	hasSketch bool
}

// Flags of a ref's optional part.
const (
	refHasBase   = 1
	refHasSketch = 2
)

// stored is how many bytes the chunk takes in the chunk store.
func (r ref) stored() uint32 {
	if r.level == cdc.DeltaLevel {
		return r.phys
	}
	return r.comp
}

func (r ref) encode() []byte {
	b := binary.AppendUvarint(make([]byte, 0, 16), r.count)
	b = binary.AppendUvarint(b, uint64(r.comp))
	b = append(b, r.level)
	var flags byte
	if r.hasBase {
		flags |= refHasBase
	}
	if r.hasSketch {
		flags |= refHasSketch
	}
	if flags == 0 {
		return b
	}
	b = append(b, flags)
	if r.hasBase {
		b = append(b, r.base[:]...)
		b = binary.AppendUvarint(b, uint64(r.phys))
	}
	if r.hasSketch {
		for _, v := range r.sketch {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return b
}

func decodeRef(b []byte) (ref, error) {
	d := decoder{b: b}
	r := ref{count: d.uvarint("ref count"), comp: uint32(d.uvarint("ref size"))}
	if lv := d.raw(1, "ref level"); d.err == nil {
		r.level = lv[0]
	}
	if d.err != nil || len(d.b) == 0 {
		return r, d.err
	}
	flags := d.raw(1, "ref flags")[0]
	if flags&^(refHasBase|refHasSketch) != 0 {
		d.fail("ref flags")
	}
	if flags&refHasBase != 0 {
		r.hasBase = true
		r.base = d.hash("ref base")
		r.phys = uint32(d.uvarint("ref delta size"))
	}
	if flags&refHasSketch != 0 {
		r.hasSketch = true
		for i := range r.sketch {
			if v := d.raw(8, "ref sketch"); d.err == nil {
				r.sketch[i] = binary.LittleEndian.Uint64(v)
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("ref trailing bytes")
	}
	return r, d.err
}
