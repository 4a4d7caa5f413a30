package cdc

import "math/bits"

// SketchSize is how many super-features a Sketch holds. Over five Go
// toolchain releases, a delta against the candidate sharing the most of 4,
// 8 or 16 super-features stored the new chunks of releases 2 to 5 in 28.2,
// 23.6 and 21.6 MB (66.8 MB as independent frames); 8 keeps the index
// small for most of that gain.
const SketchSize = 8

// Sketch is a resemblance sketch of a chunk: chunks that share a
// super-feature are likely to share much of their content, so one is a
// good base to compress the other against.
type Sketch [SketchSize]uint64

// sketchTables are the gear table and the feature transforms, fixed for
// good: sketches are stored in the index.
var sketchTables = func() (t struct {
	gear     [256]uint64
	mul, add [SketchSize]uint64
}) {
	s := uint64(42)
	next := func() uint64 {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		return z ^ (z >> 31)
	}
	for i := range t.gear {
		t.gear[i] = next()
	}
	for i := range t.mul {
		t.mul[i] = next() | 1
		t.add[i] = next()
	}
	return t
}()

// SketchOf returns the sketch of a chunk's plaintext. Each super-feature is
// the hashed maximum, over every position, of a distinct linear transform
// of an 8-byte gear hash of the bytes before it (Broder's min-wise idea, as
// delta-compressing stores use it).
func SketchOf(raw []byte) Sketch {
	t := &sketchTables
	var feat [SketchSize]uint64
	var h uint64
	for i, b := range raw {
		h = h<<8 + t.gear[b]
		if i < 7 {
			continue
		}
		for k := range feat {
			if v := h*t.mul[k] + t.add[k]; v > feat[k] {
				feat[k] = v
			}
		}
	}
	var sk Sketch
	for k := range sk {
		hi, lo := bits.Mul64((0x51ed270b27271a5d+uint64(k))^feat[k], 0x9fb21c651e98df25)
		sk[k] = hi ^ lo
	}
	return sk
}
