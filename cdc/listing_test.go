package cdc_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"go/build"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"cairn/cdc"
	"cairn/internal/nixtest"
)

// ltRaw is appended to a hand-built NAR verbatim, without length or padding.
type ltRaw []byte

// ltNAR builds NAR bytes from tokens: a string is written as a NAR string
// (length, bytes, zero padding), a uint64 as a bare little-endian number, an
// ltRaw verbatim, and a []any recursively.
func ltNAR(tokens ...any) []byte {
	var b []byte
	var add func(t any)
	add = func(t any) {
		switch t := t.(type) {
		case string:
			b = binary.LittleEndian.AppendUint64(b, uint64(len(t)))
			b = append(b, t...)
			b = append(b, make([]byte, -len(t)&7)...)
		case uint64:
			b = binary.LittleEndian.AppendUint64(b, t)
		case ltRaw:
			b = append(b, t...)
		case []any:
			for _, x := range t {
				add(x)
			}
		default:
			panic(fmt.Sprintf("ltNAR: bad token %T", t))
		}
	}
	for _, t := range tokens {
		add(t)
	}
	return b
}

// ltFile is the tokens of a regular file node.
func ltFile(contents string, exec bool) []any {
	t := []any{"(", "type", "regular"}
	if exec {
		t = append(t, "executable", "")
	}
	return append(t, "contents", contents, ")")
}

// ltLink is the tokens of a symlink node.
func ltLink(target string) []any {
	return []any{"(", "type", "symlink", "target", target, ")"}
}

// ltDir is the tokens of a directory node; kv alternates name and node tokens.
func ltDir(kv ...any) []any {
	t := []any{"(", "type", "directory"}
	for i := 0; i < len(kv); i += 2 {
		t = append(t, "entry", "(", "name", kv[i], "node", kv[i+1], ")")
	}
	return append(t, ")")
}

// ltArchive is a whole NAR with the given root node.
func ltArchive(root []any) []byte { return ltNAR("nix-archive-1", root) }

// ltSample is a hand-built NAR with every kind of node, and its entries.
func ltSample() ([]byte, []cdc.Entry) {
	nar := ltArchive(ltDir(
		"a", ltFile("hi\n", false),
		"b", ltDir(
			"c", ltFile(strings.Repeat("x", 13), true),
			"empty", ltDir(),
		),
		"e", ltFile("", false),
		"l", ltLink("../x"),
	))
	off := func(s string) uint64 { return uint64(bytes.Index(nar, []byte(s))) }
	return nar, []cdc.Entry{
		{Path: "", Type: cdc.TypeDirectory},
		{Path: "a", Type: cdc.TypeRegular, Size: 3, NAROffset: off("hi\n")},
		{Path: "b", Type: cdc.TypeDirectory},
		{Path: "b/c", Type: cdc.TypeRegular, Size: 13, Executable: true, NAROffset: off("xxxxxxxxxxxxx")},
		{Path: "b/empty", Type: cdc.TypeDirectory},
		// The name token of "e", then node ( type regular contents and the size: 16+5*16+8.
		{Path: "e", Type: cdc.TypeRegular, Size: 0, NAROffset: off("\x01\x00\x00\x00\x00\x00\x00\x00e\x00") + 104},
		{Path: "l", Type: cdc.TypeSymlink, Target: "../x"},
	}
}

// ltParse feeds nar to a new parser in pieces of the sizes next returns and
// returns the entries and the first error of Write or Close.
func ltParse(nar []byte, next func() int) ([]cdc.Entry, int64, error) {
	p := cdc.NewListingParser()
	for len(nar) > 0 {
		n := min(next(), len(nar))
		w, err := p.Write(nar[:n])
		if err != nil {
			return p.Entries(), p.Bytes(), err
		}
		if w != n {
			return p.Entries(), p.Bytes(), io.ErrShortWrite
		}
		nar = nar[n:]
	}
	return p.Entries(), p.Bytes(), p.Close()
}

func ltFixed(n int) func() int { return func() int { return n } }

// ltSplits are the ways the tests cut a NAR into writes.
func ltSplits() map[string]func() int {
	r := rand.New(rand.NewPCG(1, 2))
	return map[string]func() int{
		"whole":  ltFixed(1 << 40),
		"1-byte": ltFixed(1),
		"7-byte": ltFixed(7),
		"random": func() int { return 1 + r.IntN(100) },
		"random-large": func() int {
			if r.IntN(2) == 0 {
				return 1 + r.IntN(8)
			}
			return 1 + r.IntN(70000)
		},
	}
}

func TestListingParserSample(t *testing.T) {
	nar, want := ltSample()
	for name, next := range ltSplits() {
		t.Run(name, func(t *testing.T) {
			got, n, err := ltParse(nar, next)
			require.NoError(t, err)
			require.Equal(t, want, got)
			require.Equal(t, int64(len(nar)), n)
		})
	}
}

func TestListingJSONSample(t *testing.T) {
	_, entries := ltSample()
	js := cdc.ListingJSON(entries)
	require.Equal(t, `{"version":1,"root":{"type":"directory","entries":{`+
		`"a":{"type":"regular","size":3,"narOffset":232},`+
		`"b":{"type":"directory","entries":{"c":{"type":"regular","size":13,"executable":true,"narOffset":`+
		fmt.Sprint(entries[3].NAROffset)+`},"empty":{"type":"directory","entries":{}}}},`+
		`"e":{"type":"regular","size":0,"narOffset":`+fmt.Sprint(entries[5].NAROffset)+`},`+
		`"l":{"type":"symlink","target":"../x"}}}}`, string(js))
	back, err := cdc.ParseListingJSON(js)
	require.NoError(t, err)
	require.Equal(t, entries, back)
}

// ltTree is a fixture for the comparison with Nix: it creates something
// under dir and returns its path.
type ltTree func(t *testing.T, dir string) string

func TestListingMatchesNix(t *testing.T) {
	nixtest.RequireNix(t)
	tests := []struct {
		name string
		make ltTree
	}{
		{"sample tree", func(t *testing.T, dir string) string { return nixtest.SampleTree(t, dir) }},
		{"regular file root", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "file")
			require.NoError(t, os.WriteFile(p, []byte("just a file\n"), 0o644))
			return p
		}},
		{"executable file root", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "tool")
			require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755))
			return p
		}},
		{"empty file root", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "nothing")
			require.NoError(t, os.WriteFile(p, nil, 0o644))
			return p
		}},
		{"symlink root", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "link")
			require.NoError(t, os.Symlink("/nix/store/00000000000000000000000000000000-x/bin/y", p))
			return p
		}},
		{"empty directory root", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "empty")
			require.NoError(t, os.Mkdir(p, 0o755))
			return p
		}},
		{"names needing escapes", func(t *testing.T, dir string) string {
			root := filepath.Join(dir, "odd")
			require.NoError(t, os.MkdirAll(filepath.Join(root, "d\x01ir"), 0o755))
			for _, n := range []string{"c\x01\x1f\x7f\x80\xff\"\\\n\r\t", "\xe2\x82", "ünï", "\b\f", "d\x01ir/x\x1b[0m"} {
				require.NoError(t, os.WriteFile(filepath.Join(root, n), []byte(n), 0o644))
			}
			require.NoError(t, os.Symlink("t\x02\"\\\xfe", filepath.Join(root, "ln")))
			return root
		}},
		{"go src/cmd", func(t *testing.T, dir string) string {
			return filepath.Join(build.Default.GOROOT, "src", "cmd")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src := tt.make(t, dir)
			pub := nixtest.Publish(t, dir, src, "none")
			sp, cache, ls, nar := pub.StorePath, pub.Cache, pub.Listing, pub.Body
			require.Equal(t, fmt.Sprint(len(nar)), nixtest.NarInfoField(t, cache, sp, "NarSize"))
			if len(nar) < 1<<20 {
				require.Equal(t, nar, nixtest.DumpNAR(t, src), "the cache's NAR is nix-store --dump's")
			}

			entries, n, err := ltParse(nar, ltFixed(32<<10))
			require.NoError(t, err)
			require.Equal(t, int64(len(nar)), n)
			require.Equal(t, string(ls), string(cdc.ListingJSON(entries)), "byte-identical to Nix's .ls")

			fromNix, err := cdc.ParseListingJSON(ls)
			require.NoError(t, err)
			require.Equal(t, entries, fromNix)

			back, err := cdc.ParseListingJSON(cdc.ListingJSON(entries))
			require.NoError(t, err)
			require.Equal(t, entries, back)

			for name, next := range ltSplits() {
				if len(nar) > 1<<20 && (name == "1-byte" || name == "7-byte") {
					continue // the small trees cover these; keep -race fast
				}
				got, _, err := ltParse(nar, next)
				require.NoError(t, err, name)
				require.Equal(t, entries, got, name)
			}

			// Every offset points at the file's bytes, and the tree matches the disk.
			files := 0
			for _, e := range entries {
				full := filepath.Join(src, filepath.FromSlash(e.Path))
				fi, err := os.Lstat(full)
				require.NoError(t, err)
				switch e.Type {
				case cdc.TypeRegular:
					files++
					want, err := os.ReadFile(full)
					require.NoError(t, err)
					require.Equal(t, uint64(len(want)), e.Size, e.Path)
					require.Equal(t, want, nar[e.NAROffset:e.NAROffset+e.Size], e.Path)
					require.Equal(t, fi.Mode()&0o100 != 0, e.Executable, e.Path)
				case cdc.TypeSymlink:
					target, err := os.Readlink(full)
					require.NoError(t, err)
					require.Equal(t, target, e.Target, e.Path)
				case cdc.TypeDirectory:
					require.True(t, fi.IsDir(), e.Path)
				}
			}
			if tt.name == "go src/cmd" {
				require.Greater(t, files, 3000)
			}
		})
	}
}

func TestListingParserRejects(t *testing.T) {
	deep := func(levels int) []any {
		node := ltFile("x", false)
		for range levels {
			node = ltDir("d", node)
		}
		return node
	}
	valid, _ := ltSample()
	tests := []struct {
		name string
		nar  []byte
		msg  string // part of the error message
	}{
		{"empty input", nil, "at byte 0: truncated"},
		{"wrong magic", ltNAR("nix-archive-2"), `at byte 0: expected "nix-archive-1", got "nix-archive-2"`},
		{"magic too long", ltNAR("nix-archive-1x"), "at byte 0: expected \"nix-archive-1\", got a string of length 14"},
		{"huge token length", ltNAR(uint64(1 << 62)), "at byte 0: expected \"nix-archive-1\", got a string of length 4611686018427387904"},
		{"magic padding nonzero", ltNAR(uint64(13), ltRaw("nix-archive-1\x00\x00\x01")), "at byte 23: nonzero padding"},
		{"missing open paren", ltNAR("nix-archive-1", "type"), `at byte 24: expected "(", got a string of length 4`},
		{"missing type", ltNAR("nix-archive-1", "(", "kind"), `at byte 40: expected "type", got "kind"`},
		{"unknown type of other length", ltNAR("nix-archive-1", "(", "type", "fifo"), `at byte 56: expected "regular" or "symlink" or "directory", got a string of length 4`},
		{"unknown type of same length", ltNAR("nix-archive-1", "(", "type", "regulax"), `got "regulax"`},
		{"token with trailing NUL", ltNAR("nix-archive-1", "(\x00"), `got a string of length 2`},
		{"executable marker not empty", ltArchive([]any{"(", "type", "regular", "executable", "x"}), `at byte 96: expected "", got a string of length 1`},
		{"executable after contents", ltArchive([]any{"(", "type", "regular", "contents", "ab", "executable", "", ")"}), `expected ")"`},
		{"contents padding nonzero", ltArchive([]any{"(", "type", "regular", "contents", uint64(3), ltRaw("abc\x00\x00\x00\x00\x07"), ")"}), "at byte 103: nonzero padding"},
		{"regular without contents", ltArchive([]any{"(", "type", "regular", ")"}), `expected "executable" or "contents"`},
		{"target on a regular file", ltArchive([]any{"(", "type", "regular", "target", "x", ")"}), `got a string of length 6`},
		{"symlink without target", ltArchive([]any{"(", "type", "symlink", ")"}), `expected "target"`},
		{"empty symlink target", ltArchive(ltLink("")), "at byte 88: empty symlink target"},
		{"symlink target too long", ltArchive(ltLink(strings.Repeat("t", 4096))), "symlink target of 4096 bytes is longer than 4095"},
		{"symlink target huge", ltArchive([]any{"(", "type", "symlink", "target", uint64(1 << 50)}), "longer than 4095"},
		{"symlink with two targets", ltArchive([]any{"(", "type", "symlink", "target", "a", "target", "b", ")"}), `expected ")"`},
		{"empty name", ltArchive(ltDir("", ltFile("", false))), "at byte 128: empty file name"},
		{"name dot", ltArchive(ltDir(".", ltFile("", false))), `invalid file name "."`},
		{"name dotdot", ltArchive(ltDir("..", ltFile("", false))), `invalid file name ".."`},
		{"name with slash", ltArchive(ltDir("a/b", ltFile("", false))), `file name with '/' or NUL "a/b"`},
		{"name with NUL", ltArchive(ltDir("a\x00b", ltFile("", false))), `file name with '/' or NUL "a\x00b"`},
		{"name too long", ltArchive(ltDir(strings.Repeat("n", 256), ltFile("", false))), "file name of 256 bytes is longer than 255"},
		{"entries descending", ltArchive(ltDir("b", ltFile("", false), "a", ltFile("", false))), `entry "a" does not sort after "b"`},
		{"entries duplicate", ltArchive(ltDir("a", ltFile("", false), "a", ltLink("x"))), `entry "a" does not sort after "a"`},
		{"entries by byte order", ltArchive(ltDir("a", ltFile("", false), "B", ltFile("", false))), `entry "B" does not sort after "a"`},
		{"nested order is per directory", ltArchive(ltDir("z", ltDir("b", ltFile("", false), "a", ltFile("", false)))), `entry "a" does not sort after "b"`},
		{"entry without node", ltArchive([]any{"(", "type", "directory", "entry", "(", "name", "a", ")"}), `expected "node"`},
		{"entry not closed", ltArchive([]any{"(", "type", "directory", "entry", "(", "name", "a", "node", ltFile("", false), "entry"}), `expected ")"`},
		{"directory not closed", ltArchive([]any{"(", "type", "directory", "entry", "(", "name", "a", "node", ltFile("", false), ")"}), `truncated, expecting "entry" or ")"`},
		{"nesting too deep", ltArchive(deep(257)), "nesting deeper than 256"},
		{"path longer than PATH_MAX", ltArchive(longPath(17)), "path longer than 4095 bytes"},
		{"trailing zero bytes", append(ltClone(valid), make([]byte, 8)...), fmt.Sprintf("at byte %d: trailing data after the root node", len(valid))},
		{"trailing byte", append(ltClone(valid), 'x'), "trailing data"},
		{"trailing second archive", append(ltClone(valid), valid...), "trailing data"},
		{"truncated token", valid[:len(valid)-3], "truncated"},
		{"truncated length", valid[:len(valid)-12], "truncated"},
		{"truncated contents", ltArchive(ltFile("abcdefghij", false))[:100], "at byte 100: truncated, expecting file contents"},
		{"truncated contents padding", ltArchive(ltFile("abcdefghij", false))[:108], "expecting file contents"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, next := range ltSplits() {
				_, _, err := ltParse(tt.nar, next)
				require.Error(t, err, name)
				require.True(t, errors.Is(err, cdc.ErrBadNAR), "%s: %v", name, err)
				require.Contains(t, err.Error(), tt.msg, name)
			}
		})
	}
}

// ltClone returns a copy of b that append cannot alias.
// longPath nests n directories with 250-byte names around an empty file.
func longPath(n int) []any {
	node := ltFile("", false)
	for i := range n {
		node = ltDir(strings.Repeat(string(rune('a'+i)), 250), node)
	}
	return node
}

func ltClone(b []byte) []byte { return append([]byte(nil), b...) }

func TestListingParserLimitsAccepted(t *testing.T) {
	deep := ltFile("x", true)
	for range 255 {
		deep = ltDir("d", deep)
	}
	deepEmpty := ltDir()
	for range 256 {
		deepEmpty = ltDir("e", deepEmpty)
	}
	tests := []struct {
		name string
		nar  []byte
		n    int
	}{
		{"file at depth 256", ltArchive(ltDir("d", deep)), 257},
		{"empty directory at depth 256", ltArchive(deepEmpty), 257},
		{"name of 255 bytes", ltArchive(ltDir(strings.Repeat("n", 255), ltFile("", false))), 2},
		{"target of 4095 bytes", ltArchive(ltLink(strings.Repeat("t", 4095))), 1},
		{"names with any byte but slash and NUL", ltArchive(ltDir("\x01", ltFile("", false), "...", ltDir(), "\xff\xfe", ltLink("\x00"))), 4},
		{"symlink root", ltArchive(ltLink("a")), 1},
		{"file root", ltArchive(ltFile("abc", false)), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, _, err := ltParse(tt.nar, ltFixed(5))
			require.NoError(t, err)
			require.Len(t, entries, tt.n)
			back, err := cdc.ParseListingJSON(cdc.ListingJSON(entries))
			require.NoError(t, err)
			require.Equal(t, entries, back)
		})
	}
}

func TestListingParserStickyError(t *testing.T) {
	p := cdc.NewListingParser()
	bad := ltNAR("nix-archive-1", "(", "tipe")
	n, err := p.Write(bad)
	require.ErrorIs(t, err, cdc.ErrBadNAR)
	require.Equal(t, 56, n, "bytes up to and including the bad token")
	n2, err2 := p.Write([]byte("more"))
	require.Equal(t, 0, n2)
	require.Equal(t, err, err2)
	require.Equal(t, err, p.Close())
	require.Equal(t, err, p.Close())

	// A huge length is rejected as soon as its 8 bytes arrive, without buffering.
	p = cdc.NewListingParser()
	_, err = p.Write(binary.LittleEndian.AppendUint64(nil, 1<<63))
	require.ErrorIs(t, err, cdc.ErrBadNAR)

	// Close of a complete NAR, twice; Write after Close fails.
	p = cdc.NewListingParser()
	nar, _ := ltSample()
	_, err = p.Write(nar)
	require.NoError(t, err)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close())
	_, err = p.Write([]byte{0})
	require.Error(t, err)
}

func TestListingParserSkipsContents(t *testing.T) {
	const size = 256 << 20
	header := ltNAR("nix-archive-1", "(", "type", "regular", "contents", uint64(size))
	zeros := make([]byte, 1<<20)
	p := cdc.NewListingParser()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := p.Write(header)
	require.NoError(t, err)
	for range size / len(zeros) {
		_, err := p.Write(zeros)
		require.NoError(t, err)
	}
	_, err = p.Write(ltNAR(")"))
	require.NoError(t, err)
	require.NoError(t, p.Close())
	runtime.ReadMemStats(&after)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10), "contents must not be copied")
	require.Equal(t, []cdc.Entry{{Type: cdc.TypeRegular, Size: size, NAROffset: uint64(len(header))}}, p.Entries())
	require.Equal(t, int64(len(header)+size+16), p.Bytes())
}

func TestListingJSONOrderAndMisfits(t *testing.T) {
	_, sorted := ltSample()
	shuffled := append([]cdc.Entry(nil), sorted...)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	require.Equal(t, string(cdc.ListingJSON(sorted)), string(cdc.ListingJSON(shuffled)))

	tests := []struct {
		name    string
		entries []cdc.Entry
		want    string
	}{
		{"no entries", nil, ""},
		{"no root", []cdc.Entry{{Path: "a", Type: cdc.TypeRegular}}, ""},
		{"root of unknown type", []cdc.Entry{{Path: ""}}, ""},
		{"missing parent", []cdc.Entry{{Type: cdc.TypeDirectory}, {Path: "x/y", Type: cdc.TypeSymlink, Target: "t"}, {Path: "z", Type: cdc.TypeSymlink, Target: "u"}},
			`{"version":1,"root":{"type":"directory","entries":{"z":{"type":"symlink","target":"u"}}}}`},
		{"child of a file", []cdc.Entry{{Type: cdc.TypeDirectory}, {Path: "f", Type: cdc.TypeRegular, Size: 1, NAROffset: 9}, {Path: "f/g", Type: cdc.TypeDirectory}},
			`{"version":1,"root":{"type":"directory","entries":{"f":{"type":"regular","size":1,"narOffset":9}}}}`},
		{"duplicate", []cdc.Entry{{Type: cdc.TypeDirectory}, {Path: "a", Type: cdc.TypeDirectory}, {Path: "a", Type: cdc.TypeSymlink, Target: "t"}},
			`{"version":1,"root":{"type":"directory","entries":{"a":{"type":"directory","entries":{}}}}}`},
		{"absolute path", []cdc.Entry{{Type: cdc.TypeDirectory}, {Path: "/a", Type: cdc.TypeDirectory}},
			`{"version":1,"root":{"type":"directory","entries":{}}}`},
		{"zero offset omitted", []cdc.Entry{{Type: cdc.TypeRegular, Size: 2, Executable: true}},
			`{"version":1,"root":{"type":"regular","size":2,"executable":true}}`},
		{"component order, not byte order", []cdc.Entry{{Type: cdc.TypeDirectory}, {Path: "a-b", Type: cdc.TypeDirectory}, {Path: "a", Type: cdc.TypeDirectory}, {Path: "a/x", Type: cdc.TypeSymlink, Target: "t"}},
			`{"version":1,"root":{"type":"directory","entries":{"a":{"type":"directory","entries":{"x":{"type":"symlink","target":"t"}}},"a-b":{"type":"directory","entries":{}}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, string(cdc.ListingJSON(tt.entries)))
		})
	}
}

func TestParseListingJSON(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []cdc.Entry
		err  string
	}{
		{"white space, key order, unknown keys and unsorted entries",
			` { "root" : { "entries" : { "b" : { "target" : "t" , "type" : "symlink" } , "a" : { "narOffset" : 5 , "x" : [1, {"y": null}, -2.5e3, "s"], "size" : 1 , "executable" : false, "type" : "regular" } } , "type" : "directory" } , "version" : 1 , "extra": true } `,
			[]cdc.Entry{{Type: cdc.TypeDirectory}, {Path: "a", Type: cdc.TypeRegular, Size: 1, NAROffset: 5}, {Path: "b", Type: cdc.TypeSymlink, Target: "t"}}, ""},
		{"unsorted subtrees move whole",
			`{"version":1,"root":{"type":"directory","entries":{"z":{"type":"directory","entries":{"q":{"type":"symlink","target":"t"}}},"c":{"type":"directory","entries":{"d":{"type":"regular","size":0}}}}}}`,
			[]cdc.Entry{{Type: cdc.TypeDirectory}, {Path: "c", Type: cdc.TypeDirectory}, {Path: "c/d", Type: cdc.TypeRegular}, {Path: "z", Type: cdc.TypeDirectory}, {Path: "z/q", Type: cdc.TypeSymlink, Target: "t"}}, ""},
		{"escapes", `{"version":1,"root":{"type":"symlink","target":"\u00e9\ud83d\ude00\/\b\f\u001F\"\\\n\r\t` + "\xff" + `"}}`,
			[]cdc.Entry{{Type: cdc.TypeSymlink, Target: "é😀/\b\f\x1f\"\\\n\r\t\xff"}}, ""},
		{"max uint64", `{"version":1,"root":{"type":"regular","size":18446744073709551615}}`,
			[]cdc.Entry{{Type: cdc.TypeRegular, Size: 1<<64 - 1}}, ""},
		{"empty", ``, nil, "expected '{'"},
		{"no root", `{"version":1}`, nil, "missing"},
		{"wrong version", `{"version":2,"root":{"type":"symlink","target":"t"}}`, nil, "unsupported version 2"},
		{"trailing data", `{"version":1,"root":{"type":"symlink","target":"t"}}x`, nil, "trailing data"},
		{"duplicate entry", `{"version":1,"root":{"type":"directory","entries":{"b":{"type":"symlink","target":"t"},"a":{"type":"symlink","target":"t"},"b":{"type":"symlink","target":"t"}}}}`, nil, `duplicate entry "b"`},
		{"duplicate key", `{"version":1,"root":{"type":"regular","size":1,"size":2}}`, nil, `duplicate key "size"`},
		{"bad name", `{"version":1,"root":{"type":"directory","entries":{"a/b":{"type":"symlink","target":"t"}}}}`, nil, "file name with '/'"},
		{"escaped slash in name", `{"version":1,"root":{"type":"directory","entries":{"a\/b":{"type":"symlink","target":"t"}}}}`, nil, "file name with '/'"},
		{"dot name", `{"version":1,"root":{"type":"directory","entries":{".":{"type":"symlink","target":"t"}}}}`, nil, "invalid file name"},
		{"empty target", `{"version":1,"root":{"type":"symlink","target":""}}`, nil, "empty target"},
		{"no type", `{"version":1,"root":{}}`, nil, "unknown type"},
		{"unknown type", `{"version":1,"root":{"type":"fifo"}}`, nil, `unknown type "fifo"`},
		{"size on a directory", `{"version":1,"root":{"type":"directory","size":1,"entries":{}}}`, nil, "directory"},
		{"entries on a file", `{"version":1,"root":{"type":"regular","size":1,"entries":{}}}`, nil, "regular file"},
		{"negative size", `{"version":1,"root":{"type":"regular","size":-1}}`, nil, "non-negative integer"},
		{"fractional size", `{"version":1,"root":{"type":"regular","size":1.5}}`, nil, "expected an integer"},
		{"leading zero", `{"version":1,"root":{"type":"regular","size":01}}`, nil, "leading zero"},
		{"size overflow", `{"version":1,"root":{"type":"regular","size":18446744073709551616}}`, nil, "out of range"},
		{"lone surrogate", `{"version":1,"root":{"type":"symlink","target":"\ud800"}}`, nil, "surrogate"},
		{"raw control character", "{\"version\":1,\"root\":{\"type\":\"symlink\",\"target\":\"a\nb\"}}", nil, "control character"},
		{"unterminated", `{"version":1,"root":{"type":"symlink","target":"ab`, nil, "unterminated"},
		{"deep unknown value", `{"version":1,"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"root":{"type":"symlink","target":"t"}}`, nil, "nested too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cdc.ParseListingJSON([]byte(tt.doc))
			if tt.err != "" {
				require.ErrorIs(t, err, cdc.ErrBadListing)
				require.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}

	// Nesting: 256 levels of directories parse, 257 do not.
	doc := func(levels int) string {
		return `{"version":1,"root":` + strings.Repeat(`{"type":"directory","entries":{"d":`, levels) +
			`{"type":"directory","entries":{}}` + strings.Repeat(`}}`, levels) + `}`
	}
	got, err := cdc.ParseListingJSON([]byte(doc(256)))
	require.NoError(t, err)
	require.Len(t, got, 257)
	_, err = cdc.ParseListingJSON([]byte(doc(257)))
	require.ErrorIs(t, err, cdc.ErrBadListing)
	require.Contains(t, err.Error(), "nesting deeper than 256")
}

func BenchmarkListingParser(b *testing.B) {
	b.Run("large-file", func(b *testing.B) {
		const size = 1 << 30
		header := ltNAR("nix-archive-1", "(", "type", "regular", "contents", uint64(size))
		trailer := ltNAR(")")
		chunk := make([]byte, 128<<10)
		b.SetBytes(int64(len(header) + size + len(trailer)))
		b.ReportAllocs()
		for b.Loop() {
			p := cdc.NewListingParser()
			_, _ = p.Write(header)
			for range size / len(chunk) {
				_, _ = p.Write(chunk)
			}
			_, _ = p.Write(trailer)
			if err := p.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("small-files", func(b *testing.B) {
		// 20000 files of 0-2 KiB in 200 directories: mostly tokens.
		r := rand.New(rand.NewPCG(5, 6))
		var dirs []any
		for d := range 200 {
			var files []any
			for f := range 100 {
				files = append(files, fmt.Sprintf("file-%03d.go", f), ltFile(strings.Repeat("x", r.IntN(2048)), f%7 == 0))
			}
			dirs = append(dirs, fmt.Sprintf("dir-%03d", d), ltDir(files...))
		}
		nar := ltArchive(ltDir(dirs...))
		benchFeed(b, nar, 32<<10)
	})
	b.Run("go-src", func(b *testing.B) {
		nar := nixtest.DumpNAR(b, filepath.Join(build.Default.GOROOT, "src"))
		benchFeed(b, nar, 32<<10)
	})
}

// benchFeed measures parsing nar in writes of size n.
func benchFeed(b *testing.B, nar []byte, n int) {
	b.SetBytes(int64(len(nar)))
	b.ReportAllocs()
	for b.Loop() {
		p := cdc.NewListingParser()
		for off := 0; off < len(nar); off += n {
			_, _ = p.Write(nar[off:min(off+n, len(nar))])
		}
		if err := p.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
