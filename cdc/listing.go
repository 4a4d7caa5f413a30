package cdc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrBadNAR is wrapped by every error about a malformed or incomplete NAR.
var ErrBadNAR = errors.New("bad NAR")

// ErrBadListing is wrapped by every error about a malformed `.ls` document.
var ErrBadListing = errors.New("bad NAR listing")

// EntryType is the kind of a NAR entry.
type EntryType uint8

// The kinds of NAR entries. The zero EntryType is not a valid kind.
const (
	TypeRegular EntryType = iota + 1
	TypeDirectory
	TypeSymlink
)

// String returns the name Nix uses for the type in listings.
func (t EntryType) String() string {
	switch t {
	case TypeRegular:
		return "regular"
	case TypeDirectory:
		return "directory"
	case TypeSymlink:
		return "symlink"
	}
	return "EntryType(" + strconv.Itoa(int(t)) + ")"
}

// Entry is one node of a NAR as recorded by the listing parser.
type Entry struct {
	Path       string // "" for the root, otherwise slash-separated relative path, e.g. "bin/go"
	Type       EntryType
	Size       uint64 // regular files: content length
	Executable bool
	Target     string // symlinks
	NAROffset  uint64 // regular files: byte offset in the NAR of the first content byte
}

// Limits enforced on NARs and listings.
const (
	lpMaxName   = 255  // longest file name
	lpMaxTarget = 4095 // longest symlink target
	lpMaxDepth  = 256  // most path components of any entry
	// lpMaxPath bounds an entry's whole relative path (PATH_MAX less the
	// NUL), so memory stays proportional to the NAR even for hostile input.
	lpMaxPath = 4095
)

// lpMode is what the byte-level lexer is in the middle of.
type lpMode uint8

const (
	lpmLen      lpMode = iota // the 8-byte little-endian length of a string, or a contents size
	lpmStr                    // the bytes of a string
	lpmPad                    // the zero padding after a string
	lpmContents               // file contents, skipped by counting
	lpmCPad                   // the zero padding after file contents
	lpmEnd                    // after the root node: nothing more may come
)

// lpWant is the grammar state: which token the parser expects next.
type lpWant uint8

const (
	lpgMagic      lpWant = iota // "nix-archive-1"
	lpgOpen                     // "(" opening a node
	lpgType                     // "type"
	lpgTypeVal                  // "regular" | "symlink" | "directory"
	lpgRegular                  // "executable" | "contents"
	lpgExecVal                  // "" after "executable"
	lpgContents                 // "contents" after the executable marker
	lpgSize                     // the raw uint64 contents size
	lpgTarget                   // "target"
	lpgTargetVal                // the symlink target
	lpgClose                    // ")" closing a regular or symlink node
	lpgDir                      // "entry" | ")" in a directory
	lpgEntryOpen                // "(" after "entry"
	lpgName                     // "name"
	lpgNameVal                  // the entry's name
	lpgNode                     // "node"
	lpgEntryClose               // ")" closing a directory entry
	lpgEnd                      // nothing: the root node is complete
)

// lpExpect lists the tokens each keyword state accepts.
var lpExpect = [...][]string{
	lpgMagic:      {"nix-archive-1"},
	lpgOpen:       {"("},
	lpgType:       {"type"},
	lpgTypeVal:    {"regular", "symlink", "directory"},
	lpgRegular:    {"executable", "contents"},
	lpgExecVal:    {""},
	lpgContents:   {"contents"},
	lpgTarget:     {"target"},
	lpgClose:      {")"},
	lpgDir:        {"entry", ")"},
	lpgEntryOpen:  {"("},
	lpgName:       {"name"},
	lpgNode:       {"node"},
	lpgEntryClose: {")"},
	lpgEnd:        nil,
}

// lpDir is a directory whose entries are being parsed.
type lpDir struct {
	path    string // the directory's own path
	last    string // the name of its previous entry
	hasLast bool
}

// ListingParser records the listing of a NAR fed to it in pieces through Write.
type ListingParser struct {
	off    uint64 // bytes consumed
	err    error
	closed bool

	// lexer
	mode   lpMode
	num    [8]byte // a length being collected across writes
	numN   int
	strLen int    // length of the string being collected
	buf    []byte // string bytes collected across writes
	pad    int    // padding bytes still to check
	remain uint64 // content bytes still to skip
	tokOff uint64 // offset of the current token's length field

	// grammar
	want    lpWant
	dirs    []lpDir
	cur     string // path of the node being parsed
	exec    bool
	entries []Entry
}

// NewListingParser returns a parser that expects a NAR from its first byte.
func NewListingParser() *ListingParser {
	return &ListingParser{buf: make([]byte, 0, 64)}
}

// Entries returns the entries recorded so far in NAR order (pre-order, directory entries ascending).
func (p *ListingParser) Entries() []Entry { return p.entries[:len(p.entries):len(p.entries)] }

// Bytes returns the number of bytes consumed so far.
func (p *ListingParser) Bytes() int64 { return int64(p.off) }

// Close checks that the NAR is complete and returns an ErrBadNAR-wrapped error if it is not.
func (p *ListingParser) Close() error {
	if p.closed || p.err != nil {
		return p.err
	}
	p.closed = true
	if p.mode != lpmEnd {
		what := lpWhat(p.want)
		if p.mode == lpmContents || p.mode == lpmCPad {
			what = "file contents"
		}
		p.err = fmt.Errorf("nar listing: %w at byte %d: truncated, expecting %s", ErrBadNAR, p.off, what)
		return p.err
	}
	return nil
}

// Write feeds the next bytes of the NAR. After an error every later Write returns the same error.
func (p *ListingParser) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.closed {
		return 0, errors.New("nar listing: write after Close")
	}
	total := len(b)
	for len(b) > 0 {
		switch p.mode {
		case lpmContents:
			k := p.remain
			if uint64(len(b)) < k {
				k = uint64(len(b))
			}
			p.remain -= k
			p.off += k
			b = b[k:]
			if p.remain == 0 {
				p.mode = lpmCPad
				if p.pad == 0 {
					p.mode, p.want = lpmLen, lpgClose
				}
			}

		case lpmLen:
			var v uint64
			if p.numN == 0 && len(b) >= 8 {
				v = binary.LittleEndian.Uint64(b)
				b = b[8:]
				p.tokOff = p.off
				p.off += 8
			} else {
				if p.numN == 0 {
					p.tokOff = p.off
				}
				k := copy(p.num[p.numN:], b)
				p.numN += k
				p.off += uint64(k)
				b = b[k:]
				if p.numN < 8 {
					continue
				}
				p.numN = 0
				v = binary.LittleEndian.Uint64(p.num[:])
			}
			if err := p.length(v); err != nil {
				return p.fail(total-len(b), err)
			}

		case lpmStr:
			need := p.strLen - len(p.buf)
			if len(p.buf) == 0 && len(b) >= need+p.pad {
				// Fast path: the whole string and its padding are here.
				s := b[:need]
				if p.pad > 0 && binary.LittleEndian.Uint64(b[need+p.pad-8:])>>(64-8*p.pad) != 0 {
					// The padding is the top bytes of the string's last word.
					i := lpNonZero(b[need : need+p.pad])
					p.off += uint64(need + i)
					return p.fail(total-len(b)+need+i, p.errPad())
				}
				p.off += uint64(need + p.pad)
				b = b[need+p.pad:]
				p.pad = 0
				p.mode = lpmLen
				if err := p.token(s); err != nil {
					return p.fail(total-len(b), err)
				}
				continue
			}
			k := min(need, len(b))
			p.buf = append(p.buf, b[:k]...)
			p.off += uint64(k)
			b = b[k:]
			if len(p.buf) == p.strLen {
				p.mode = lpmPad
				if p.pad == 0 {
					if err := p.finishStr(); err != nil {
						return p.fail(total-len(b), err)
					}
				}
			}

		case lpmPad, lpmCPad:
			k := min(p.pad, len(b))
			if len(b) >= 8 {
				if binary.LittleEndian.Uint64(b)&(1<<(8*k)-1) != 0 {
					i := lpNonZero(b[:k])
					p.off += uint64(i)
					return p.fail(total-len(b)+i, p.errPad())
				}
			} else if i := lpNonZero(b[:k]); i >= 0 {
				p.off += uint64(i)
				return p.fail(total-len(b)+i, p.errPad())
			}
			p.pad -= k
			p.off += uint64(k)
			b = b[k:]
			if p.pad == 0 {
				if p.mode == lpmCPad {
					p.mode, p.want = lpmLen, lpgClose
				} else if err := p.finishStr(); err != nil {
					return p.fail(total-len(b), err)
				}
			}

		case lpmEnd:
			return p.fail(total-len(b), fmt.Errorf("nar listing: %w at byte %d: trailing data after the root node", ErrBadNAR, p.off))
		}
	}
	return total, nil
}

// fail records err as the parser's sticky error.
func (p *ListingParser) fail(n int, err error) (int, error) {
	p.err = err
	return n, err
}

func (p *ListingParser) errPad() error {
	return fmt.Errorf("nar listing: %w at byte %d: nonzero padding", ErrBadNAR, p.off)
}

// finishStr hands the string collected in buf to the grammar.
func (p *ListingParser) finishStr() error {
	p.mode = lpmLen
	err := p.token(p.buf)
	p.buf = p.buf[:0]
	return err
}

// length handles a complete length field.
func (p *ListingParser) length(v uint64) error {
	maxLen := 0
	switch p.want {
	case lpgSize:
		p.entries = append(p.entries, Entry{Path: p.cur, Type: TypeRegular, Size: v, Executable: p.exec, NAROffset: p.off})
		p.remain = v
		p.pad = int(-v & 7)
		p.mode = lpmContents
		if v == 0 {
			p.mode = lpmCPad
			if p.pad == 0 {
				p.want = lpgClose
				p.mode = lpmLen
			}
		}
		return nil
	case lpgNameVal:
		if v == 0 {
			return p.errAt("empty file name")
		}
		maxLen = lpMaxName
	case lpgTargetVal:
		if v == 0 {
			return p.errAt("empty symlink target")
		}
		maxLen = lpMaxTarget
	default:
		ok := false
		for _, t := range lpExpect[p.want] {
			if uint64(len(t)) == v {
				ok = true
				break
			}
		}
		if !ok {
			return p.errAt("expected %s, got a string of length %d", lpWhat(p.want), v)
		}
	}
	if maxLen > 0 && v > uint64(maxLen) {
		what := "file name"
		if p.want == lpgTargetVal {
			what = "symlink target"
		}
		return p.errAt("%s of %d bytes is longer than %d", what, v, maxLen)
	}
	p.strLen = int(v)
	p.pad = int(-v & 7)
	p.mode = lpmStr
	if v == 0 {
		// Only the executable marker is empty; it has no padding.
		return p.finishStr()
	}
	return nil
}

// token handles a complete string; s is only valid during the call.
func (p *ListingParser) token(s []byte) error {
	switch p.want {
	case lpgTypeVal:
		switch string(s) {
		case "regular":
			p.want, p.exec = lpgRegular, false
			return nil
		case "symlink":
			p.want = lpgTarget
			return nil
		case "directory":
			p.entries = append(p.entries, Entry{Path: p.cur, Type: TypeDirectory})
			p.dirs = append(p.dirs, lpDir{path: p.cur})
			p.want = lpgDir
			return nil
		}
	case lpgRegular:
		switch string(s) {
		case "executable":
			p.want = lpgExecVal
			return nil
		case "contents":
			p.want = lpgSize
			return nil
		}
	case lpgTargetVal:
		p.entries = append(p.entries, Entry{Path: p.cur, Type: TypeSymlink, Target: string(s)})
		p.want = lpgClose
		return nil
	case lpgDir:
		switch string(s) {
		case "entry":
			p.want = lpgEntryOpen
			return nil
		case ")":
			d := p.dirs[len(p.dirs)-1]
			p.dirs = p.dirs[:len(p.dirs)-1]
			p.cur = d.path
			p.nodeDone()
			return nil
		}
	case lpgNameVal:
		return p.name(s)
	default:
		if string(s) == lpExpect[p.want][0] {
			switch p.want {
			case lpgMagic, lpgNode:
				p.want = lpgOpen
			case lpgOpen:
				p.want = lpgType
			case lpgType:
				p.want = lpgTypeVal
			case lpgExecVal:
				p.exec, p.want = true, lpgContents
			case lpgContents:
				p.want = lpgSize
			case lpgTarget:
				p.want = lpgTargetVal
			case lpgClose:
				p.nodeDone()
			case lpgEntryOpen:
				p.want = lpgName
			case lpgName:
				p.want = lpgNameVal
			case lpgEntryClose:
				p.want = lpgDir
			}
			return nil
		}
	}
	return p.errAt("expected %s, got %s", lpWhat(p.want), lpQuote(s))
}

// nodeDone moves on after a node's closing ")".
func (p *ListingParser) nodeDone() {
	if len(p.dirs) == 0 {
		p.want, p.mode = lpgEnd, lpmEnd
		return
	}
	p.cur = p.dirs[len(p.dirs)-1].path
	p.want = lpgEntryClose
}

// name handles a directory entry's name.
func (p *ListingParser) name(s []byte) error {
	if err := lpCheckName(s); err != "" {
		return p.errAt("%s %s", err, lpQuote(s))
	}
	if len(p.dirs) > lpMaxDepth {
		return p.errAt("nesting deeper than %d", lpMaxDepth)
	}
	d := &p.dirs[len(p.dirs)-1]
	if d.hasLast && string(s) <= d.last {
		return p.errAt("entry %s does not sort after %s", lpQuote(s), lpQuote([]byte(d.last)))
	}
	if len(d.path)+1+len(s) > lpMaxPath {
		return p.errAt("path longer than %d bytes under %s", lpMaxPath, lpQuote([]byte(d.path)))
	}
	if d.path == "" {
		d.last = string(s)
		p.cur = d.last
	} else {
		p.cur = d.path + "/" + string(s)
		d.last = p.cur[len(d.path)+1:]
	}
	d.hasLast = true
	p.want = lpgNode
	return nil
}

// lpCheckName returns why name is not a valid file name, or "".
func lpCheckName[S ~string | ~[]byte](name S) string {
	switch {
	case len(name) == 0:
		return "empty file name"
	case len(name) > lpMaxName:
		return "file name longer than 255 bytes"
	case string(name) == "." || string(name) == "..":
		return "invalid file name"
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return "file name with '/' or NUL"
		}
	}
	return ""
}

// errAt returns an ErrBadNAR error about the current token.
func (p *ListingParser) errAt(format string, args ...any) error {
	return fmt.Errorf("nar listing: %w at byte %d: %s", ErrBadNAR, p.tokOff, fmt.Sprintf(format, args...))
}

// lpWhat describes what the grammar state expects.
func lpWhat(w lpWant) string {
	switch w {
	case lpgSize:
		return "a contents size"
	case lpgTargetVal:
		return "a symlink target"
	case lpgNameVal:
		return "a file name"
	case lpgEnd:
		return "nothing"
	}
	var sb strings.Builder
	for i, t := range lpExpect[w] {
		if i > 0 {
			sb.WriteString(" or ")
		}
		sb.WriteString(strconv.Quote(t))
	}
	return sb.String()
}

// lpQuote quotes at most 64 bytes of s for an error message.
func lpQuote(s []byte) string {
	if len(s) > 64 {
		return strconv.Quote(string(s[:64])) + "..."
	}
	return strconv.Quote(string(s))
}

// lpNonZero returns the index of the first nonzero byte of b, or -1.
func lpNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

// ListingJSON renders entries exactly as Nix's `.ls` file (byte-identical).
//
// Entries are expected in NAR order, as Entries and ParseListingJSON return
// them; other orders are sorted first. It returns nil when there is no root
// entry (Path ""), and leaves out entries that do not fit the tree: those
// whose parent directory is missing and duplicates.
func ListingJSON(entries []Entry) []byte {
	if !slices.IsSortedFunc(entries, lpCompare) {
		entries = slices.Clone(entries)
		slices.SortStableFunc(entries, lpCompare)
	}
	if len(entries) == 0 || entries[0].Path != "" || !lpKnownType(entries[0].Type) {
		return nil
	}
	size := 32
	for i := range entries {
		size += len(entries[i].Path)/2 + len(entries[i].Target) + 56
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"version":1,"root":`...)
	buf = lpAppendNode(buf, &entries[0])
	type open struct {
		path  string
		last  string
		first bool
	}
	var stack []open
	if entries[0].Type == TypeDirectory {
		stack = append(stack, open{first: true})
	}
	for i := 1; i < len(entries); i++ {
		e := &entries[i]
		if !lpKnownType(e.Type) || e.Path == "" {
			continue
		}
		parent, name := "", e.Path
		if j := strings.LastIndexByte(e.Path, '/'); j == 0 {
			continue
		} else if j > 0 {
			parent, name = e.Path[:j], e.Path[j+1:]
		}
		if lpCheckName(name) != "" {
			continue
		}
		k := len(stack) - 1
		for k >= 0 && stack[k].path != parent {
			k--
		}
		if k < 0 || (!stack[k].first && name <= stack[k].last) {
			continue
		}
		for len(stack)-1 > k {
			buf = append(buf, "}}"...)
			stack = stack[:len(stack)-1]
		}
		top := &stack[k]
		if !top.first {
			buf = append(buf, ',')
		}
		top.first, top.last = false, name
		buf = lpAppendString(buf, name)
		buf = append(buf, ':')
		buf = lpAppendNode(buf, e)
		if e.Type == TypeDirectory {
			stack = append(stack, open{path: e.Path, first: true})
		}
	}
	for range stack {
		buf = append(buf, "}}"...)
	}
	return append(buf, '}')
}

func lpKnownType(t EntryType) bool { return t >= TypeRegular && t <= TypeSymlink }

// lpAppendNode appends an entry's JSON object; a directory's is left open
// after `"entries":{`.
func lpAppendNode(buf []byte, e *Entry) []byte {
	switch e.Type {
	case TypeRegular:
		buf = append(buf, `{"type":"regular","size":`...)
		buf = strconv.AppendUint(buf, e.Size, 10)
		if e.Executable {
			buf = append(buf, `,"executable":true`...)
		}
		if e.NAROffset != 0 {
			buf = append(buf, `,"narOffset":`...)
			buf = strconv.AppendUint(buf, e.NAROffset, 10)
		}
		return append(buf, '}')
	case TypeSymlink:
		buf = append(buf, `{"type":"symlink","target":`...)
		buf = lpAppendString(buf, e.Target)
		return append(buf, '}')
	default:
		return append(buf, `{"type":"directory","entries":{`...)
	}
}

// lpAppendString appends s as a JSON string escaped exactly like Nix 2.8's
// toJSON: bytes >= 0x80 (and 0x7f) pass through raw, unvalidated.
func lpAppendString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		start = i + 1
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// lpCompare orders paths as a NAR does: pre-order, siblings by byte order.
// Comparing byte-wise with '/' below every other byte does exactly that,
// because names contain neither '/' nor NUL.
func lpCompare(a, b Entry) int {
	x, y := a.Path, b.Path
	n := min(len(x), len(y))
	for i := 0; i < n; i++ {
		cx, cy := x[i], y[i]
		if cx == cy {
			continue
		}
		if cx == '/' {
			return -1
		}
		if cy == '/' {
			return 1
		}
		if cx < cy {
			return -1
		}
		return 1
	}
	return len(x) - len(y)
}

// ParseListingJSON reads a `.ls` document (Nix's or ours) back into entries in NAR order.
func ParseListingJSON(b []byte) ([]Entry, error) {
	d := lpJSON{b: b}
	var out []Entry
	sawVersion, sawRoot := false, false
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "version":
			if sawVersion {
				return d.errf("duplicate key \"version\"")
			}
			sawVersion = true
			v, err := d.uint()
			if err != nil {
				return err
			}
			if v != 1 {
				return d.errf("unsupported version %d", v)
			}
			return nil
		case "root":
			if sawRoot {
				return d.errf("duplicate key \"root\"")
			}
			sawRoot = true
			var err error
			out, err = d.node(out, "", 0)
			return err
		}
		return d.skip(0)
	})
	if err != nil {
		return nil, err
	}
	d.space()
	if d.i != len(d.b) {
		return nil, d.errf("trailing data")
	}
	if !sawVersion || !sawRoot {
		return nil, fmt.Errorf("nar listing: %w: missing \"version\" or \"root\"", ErrBadListing)
	}
	return out, nil
}

// lpJSON is a small JSON decoder that keeps string bytes as they are: Nix
// writes file names raw, without validating them as UTF-8.
type lpJSON struct {
	b []byte
	i int
}

func (d *lpJSON) errf(format string, args ...any) error {
	return fmt.Errorf("nar listing: %w at byte %d: %s", ErrBadListing, d.i, fmt.Sprintf(format, args...))
}

func (d *lpJSON) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// consume skips white space and the byte c, if it comes next.
func (d *lpJSON) consume(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// object parses an object, calling member for each key with d positioned at its value.
func (d *lpJSON) object(member func(key []byte) error) error {
	if !d.consume('{') {
		return d.errf("expected '{'")
	}
	if d.consume('}') {
		return nil
	}
	for {
		key, err := d.str()
		if err != nil {
			return err
		}
		if !d.consume(':') {
			return d.errf("expected ':'")
		}
		if err := member(key); err != nil {
			return err
		}
		if d.consume(',') {
			continue
		}
		if d.consume('}') {
			return nil
		}
		return d.errf("expected ',' or '}'")
	}
}

// node parses one node object at path and appends its entries to out in NAR order.
func (d *lpJSON) node(out []Entry, path string, depth int) ([]Entry, error) {
	at := len(out)
	out = append(out, Entry{Path: path})
	var typ string
	var sawSize, sawExec, sawOffset, sawTarget, sawEntries bool
	var e Entry
	err := d.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "type":
			if typ != "" {
				return d.errf("duplicate key \"type\"")
			}
			var s []byte
			if s, err = d.str(); err == nil {
				typ = string(s)
			}
		case "size":
			if sawSize {
				return d.errf("duplicate key \"size\"")
			}
			sawSize = true
			e.Size, err = d.uint()
		case "narOffset":
			if sawOffset {
				return d.errf("duplicate key \"narOffset\"")
			}
			sawOffset = true
			e.NAROffset, err = d.uint()
		case "executable":
			if sawExec {
				return d.errf("duplicate key \"executable\"")
			}
			sawExec = true
			e.Executable, err = d.bool()
		case "target":
			if sawTarget {
				return d.errf("duplicate key \"target\"")
			}
			sawTarget = true
			var s []byte
			if s, err = d.str(); err == nil {
				e.Target = string(s)
			}
		case "entries":
			if sawEntries {
				return d.errf("duplicate key \"entries\"")
			}
			sawEntries = true
			out, err = d.entries(out, path, depth)
		default:
			err = d.skip(0)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	e.Path = path
	switch typ {
	case "regular":
		if !sawSize || sawTarget || sawEntries {
			return nil, d.errf("regular file %q needs \"size\" and has no \"target\" or \"entries\"", path)
		}
		e.Type = TypeRegular
	case "symlink":
		if sawSize || sawExec || sawOffset || sawEntries {
			return nil, d.errf("symlink %q has file or directory fields", path)
		}
		if e.Target == "" || len(e.Target) > lpMaxTarget {
			return nil, d.errf("symlink %q has an empty target or one longer than %d bytes", path, lpMaxTarget)
		}
		e.Type = TypeSymlink
	case "directory":
		if sawSize || sawExec || sawOffset || sawTarget {
			return nil, d.errf("directory %q has file or symlink fields", path)
		}
		e.Type = TypeDirectory
	default:
		return nil, d.errf("entry %q has unknown type %q", path, typ)
	}
	out[at] = e
	return out, nil
}

// entries parses a directory's "entries" object and appends the children's
// entries to out, sorted as in a NAR.
func (d *lpJSON) entries(out []Entry, dir string, depth int) ([]Entry, error) {
	type child struct {
		name       string
		start, end int
	}
	var kids []child
	sorted := true
	err := d.object(func(key []byte) error {
		if depth >= lpMaxDepth {
			return d.errf("nesting deeper than %d", lpMaxDepth)
		}
		if why := lpCheckName(key); why != "" {
			return d.errf("%s %s in %q", why, lpQuote(key), dir)
		}
		name := string(key)
		if n := len(kids); n > 0 && name <= kids[n-1].name {
			sorted = false
		}
		path := name
		if dir != "" {
			path = dir + "/" + name
		}
		if len(path) > lpMaxPath {
			return d.errf("path longer than %d bytes under %q", lpMaxPath, dir)
		}
		start := len(out)
		var err error
		out, err = d.node(out, path, depth+1)
		kids = append(kids, child{name, start, len(out)})
		return err
	})
	if err != nil {
		return nil, err
	}
	if sorted {
		return out, nil
	}
	slices.SortStableFunc(kids, func(a, b child) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(kids); i++ {
		if kids[i].name == kids[i-1].name {
			return nil, d.errf("duplicate entry %q in %q", kids[i].name, dir)
		}
	}
	if len(kids) == 0 {
		return out, nil
	}
	base := kids[0].start
	for _, k := range kids {
		base = min(base, k.start)
	}
	reordered := make([]Entry, 0, len(out)-base)
	for _, k := range kids {
		reordered = append(reordered, out[k.start:k.end]...)
	}
	copy(out[base:], reordered)
	return out, nil
}

// str parses a JSON string and returns its bytes.
func (d *lpJSON) str() ([]byte, error) {
	if !d.consume('"') {
		return nil, d.errf("expected a string")
	}
	start := d.i
	// Fast path: no escapes.
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c == '"' {
			d.i++
			return d.b[start : d.i-1], nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		d.i++
	}
	out := append([]byte(nil), d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		d.i++
		switch {
		case c == '"':
			return out, nil
		case c < 0x20:
			d.i--
			return nil, d.errf("control character in string")
		case c != '\\':
			out = append(out, c)
			continue
		}
		if d.i >= len(d.b) {
			break
		}
		c = d.b[d.i]
		d.i++
		switch c {
		case '"', '\\', '/':
			out = append(out, c)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return nil, d.errf("bad \\u escape")
			}
			if r >= 0xd800 && r < 0xdc00 {
				if d.i+2 > len(d.b) || d.b[d.i] != '\\' || d.b[d.i+1] != 'u' {
					return nil, d.errf("lone surrogate in \\u escape")
				}
				d.i += 2
				r2, ok := d.hex4()
				if !ok || r2 < 0xdc00 || r2 >= 0xe000 {
					return nil, d.errf("bad surrogate pair in \\u escape")
				}
				r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
			} else if r >= 0xdc00 && r < 0xe000 {
				return nil, d.errf("lone surrogate in \\u escape")
			}
			out = lpAppendRune(out, r)
		default:
			return nil, d.errf("bad escape \\%c", c)
		}
	}
	return nil, d.errf("unterminated string")
}

func (d *lpJSON) hex4() (rune, bool) {
	if d.i+4 > len(d.b) {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	d.i += 4
	return r, true
}

// lpAppendRune appends r as UTF-8 (r is a valid, non-surrogate code point).
func lpAppendRune(b []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(b, byte(r))
	case r < 0x800:
		return append(b, 0xc0|byte(r>>6), 0x80|byte(r)&0x3f)
	case r < 0x10000:
		return append(b, 0xe0|byte(r>>12), 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
	}
	return append(b, 0xf0|byte(r>>18), 0x80|byte(r>>12)&0x3f, 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
}

// uint parses a non-negative JSON integer that fits in a uint64.
func (d *lpJSON) uint() (uint64, error) {
	d.space()
	start := d.i
	var v uint64
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		c := uint64(d.b[d.i] - '0')
		if v > (1<<64-1-c)/10 {
			return 0, d.errf("number out of range")
		}
		v = v*10 + c
		d.i++
	}
	switch {
	case d.i == start:
		return 0, d.errf("expected a non-negative integer")
	case d.b[start] == '0' && d.i-start > 1:
		return 0, d.errf("number with a leading zero")
	case d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E'):
		return 0, d.errf("expected an integer")
	}
	return v, nil
}

func (d *lpJSON) bool() (bool, error) {
	d.space()
	switch {
	case bytes.HasPrefix(d.b[d.i:], []byte("true")):
		d.i += 4
		return true, nil
	case bytes.HasPrefix(d.b[d.i:], []byte("false")):
		d.i += 5
		return false, nil
	}
	return false, d.errf("expected true or false")
}

// skip skips any JSON value, for keys this parser does not know.
func (d *lpJSON) skip(depth int) error {
	if depth > 64 {
		return d.errf("unknown value nested too deeply")
	}
	d.space()
	if d.i >= len(d.b) {
		return d.errf("unexpected end")
	}
	switch c := d.b[d.i]; {
	case c == '{':
		return d.object(func([]byte) error { return d.skip(depth + 1) })
	case c == '[':
		d.i++
		if d.consume(']') {
			return nil
		}
		for {
			if err := d.skip(depth + 1); err != nil {
				return err
			}
			if d.consume(',') {
				continue
			}
			if d.consume(']') {
				return nil
			}
			return d.errf("expected ',' or ']'")
		}
	case c == '"':
		_, err := d.str()
		return err
	case c == 't' || c == 'f':
		_, err := d.bool()
		return err
	case c == 'n':
		if bytes.HasPrefix(d.b[d.i:], []byte("null")) {
			d.i += 4
			return nil
		}
	case c == '-' || (c >= '0' && c <= '9'):
		start := d.i
		d.i++
		for d.i < len(d.b) && strings.IndexByte("0123456789+-.eE", d.b[d.i]) >= 0 {
			d.i++
		}
		if _, err := strconv.ParseFloat(string(d.b[start:d.i]), 64); err != nil && !errors.Is(err, strconv.ErrRange) {
			return d.errf("bad number")
		}
		return nil
	}
	return d.errf("unexpected character %q", d.b[d.i])
}
