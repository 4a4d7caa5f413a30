package seed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance"
	"cairn/appliance/narinfo"
)

// CacheInfo is the drive's nix-cache-info. Priority 40 ranks the drive
// with cache.nixos.org when both are substituters.
const CacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"

// Limits on what a source may send for one path.
const maxListing = 256 << 20

// ExportConfig is what to export, from where, to which drive.
type ExportConfig struct {
	Dir    string // the drive's directory; created when missing
	Source Source
	Roots  []string // store paths, basenames or store hashes whose closures to export
	Pinned bool     // also the closures of the source's pinned roots
	All    bool     // every stored path whose closure the source holds
	Tool   string   // recorded in the manifest, e.g. "cairn 1.0"
	// Progress is told about the check of files already on the drive and
	// about the bytes written.
	Progress Progress
	// FreeSpace returns the bytes still writable below a directory; nil
	// asks statfs.
	FreeSpace func(dir string) (uint64, error)
	// Now is the clock for the manifest's times; nil means time.Now.
	Now func() time.Time
}

// ExportReport says what an export did.
type ExportReport struct {
	PublicKey    string   // the key the drive's narinfos are signed with
	Paths        int      // store paths this export put on the drive
	Written      []string // files written, drive-relative
	WrittenBytes int64
	Kept         int   // files already on the drive with the right content
	KeptBytes    int64 // their bytes, read to check them
	// Left lists, with All, the paths left out because the source lacks
	// part of their closure, each with what it lacks.
	Left    []string
	Removed int       // temporary files of an interrupted export, removed
	Drive   *Manifest // the manifest as written
}

// exportNAR is one NAR to put on the drive.
type exportNAR struct {
	rel     string
	hash    [32]byte
	narSize uint64
	size    int64    // bytes of the .nar.zst; the source's size until written
	sum     [32]byte // sha256 of the file, once on the drive
	onDrive bool     // the file on the drive is right
}

// exportPath is one store path to put on the drive.
type exportPath struct {
	info    *narinfo.Info
	nar     *exportNAR
	lsSize  int64 // bytes of the listing, to write unless kept
	lsKept  bool
	lsRel   string
	infoRel string
}

// exporter is one running export.
type exporter struct {
	cfg    ExportConfig
	d      *drive
	p      Progress
	rep    *ExportReport
	files  map[string]File // the manifest's entries, old and new
	buf    []byte
	paths  []*exportPath
	nars   map[[32]byte]*exportNAR
	narSeq []*exportNAR
}

// Export writes the closures cfg names to the drive: every path's NAR as
// the source stores it (nar/<NarHash>.nar.zst, no recompression), its
// .ls listing and its narinfo, signed by the source's key and keeping
// every upstream signature; then nix-cache-info and cairn-seed.json.
// Files already on the drive with the right content are kept, so an export
// adds to a drive and an interrupted one resumes. Each file is written
// under a temporary name and renamed; the export ends with a sync of the
// drive, and only then is the manifest updated.
func Export(ctx context.Context, cfg ExportConfig) (*ExportReport, error) {
	if cfg.Dir == "" || cfg.Source == nil {
		return nil, errors.New("export: no drive directory or no source")
	}
	if len(cfg.Roots) == 0 && !cfg.Pinned && !cfg.All {
		return nil, errors.New("export: nothing to export: name store paths, the pinned set or all")
	}
	if cfg.FreeSpace == nil {
		cfg.FreeSpace = statfsFree
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pubText, err := cfg.Source.PublicKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("export: source key: %w", err)
	}
	keys, err := narinfo.ParsePublicKeys([]string{pubText})
	if err != nil {
		return nil, fmt.Errorf("export: source key: %w", err)
	}
	d, err := openDrive(cfg.Dir, true)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	defer d.Close()
	old, err := d.readManifest()
	if err != nil {
		return nil, fmt.Errorf("export: %w: remove it to start the drive afresh", err)
	}
	if old != nil && old.PublicKey != pubText {
		return nil, fmt.Errorf("export to %s: %w: its narinfos are signed by %s, this source signs with %s; use an empty drive",
			cfg.Dir, ErrOtherKey, old.PublicKey, pubText)
	}
	e := &exporter{cfg: cfg, d: d, p: progressOr(cfg.Progress),
		rep: &ExportReport{PublicKey: pubText}, files: map[string]File{},
		buf: make([]byte, 1<<20), nars: map[[32]byte]*exportNAR{}}
	if old != nil {
		e.files = old.byPath()
	}
	if e.rep.Removed, err = d.removeTemps(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := e.plan(ctx, keys[0]); err != nil {
		return nil, fmt.Errorf("export to %s: %w", cfg.Dir, err)
	}
	if err := e.checkDrive(ctx); err != nil {
		return nil, fmt.Errorf("export to %s: %w", cfg.Dir, err)
	}
	if err := e.checkSpace(); err != nil {
		return nil, fmt.Errorf("export to %s: %w", cfg.Dir, err)
	}
	if err := e.write(ctx); err != nil {
		return nil, fmt.Errorf("export to %s: %w", cfg.Dir, err)
	}
	now := cfg.Now().UTC().Truncate(time.Second)
	m := &Manifest{Format: ManifestFormat, Created: now, Updated: now, Tool: cfg.Tool, PublicKey: pubText}
	if old != nil {
		m.Created = old.Created
	}
	for _, f := range e.files {
		m.Files = append(m.Files, f)
	}
	if err := e.finish(m); err != nil {
		return nil, fmt.Errorf("export to %s: %w", cfg.Dir, err)
	}
	e.rep.Paths, e.rep.Drive = len(e.paths), m
	return e.rep, nil
}

// plan resolves the roots to closures and decides the files to write.
func (e *exporter) plan(ctx context.Context, key signature.PublicKey) error {
	roots := map[string]string{}
	add := func(list []string, what string) error {
		for _, r := range list {
			h, base, err := parseRoot(r)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if roots[h] == "" {
				roots[h] = base
			}
		}
		return nil
	}
	if err := add(e.cfg.Roots, "closure"); err != nil {
		return err
	}
	if e.cfg.Pinned {
		pins, err := e.cfg.Source.Pins(ctx)
		if err != nil {
			return fmt.Errorf("pinned roots: %w", err)
		}
		if err := add(pins, "pinned root"); err != nil {
			return err
		}
	}
	explicit := keySet(roots)
	if e.cfg.All {
		all, err := e.cfg.Source.Paths(ctx)
		if err != nil {
			return fmt.Errorf("stored paths: %w", err)
		}
		if err := add(all, "stored path"); err != nil {
			return err
		}
	}
	if len(roots) == 0 && !e.cfg.All {
		return errors.New("nothing to export: the source has no pinned roots")
	}
	cs, err := collect(ctx, e.cfg.Source, roots, key)
	if err != nil {
		return err
	}
	// A requested closure must be complete; with All, paths whose
	// closure is not are left out.
	memo := map[string][]string{}
	var incomplete []string
	for h := range roots {
		lack := cs.lacking(h, memo)
		if len(lack) == 0 {
			continue
		}
		name := cmpOr(roots[h], h)
		if info := cs.infos[h]; info != nil {
			name = basename(info)
		}
		msg := name + " lacks " + strings.Join(lack, ", ")
		if _, gone := cs.missing[h]; gone {
			msg = name + " is not stored"
		}
		if explicit[h] {
			incomplete = append(incomplete, msg)
		} else {
			e.rep.Left = append(e.rep.Left, msg)
		}
	}
	if len(incomplete) > 0 {
		slices.Sort(incomplete)
		return fmt.Errorf("%w: %s", ErrIncomplete, strings.Join(incomplete, "; "))
	}
	slices.Sort(e.rep.Left)
	keep := map[string]*narinfo.Info{}
	for h, info := range cs.infos {
		if len(cs.lacking(h, memo)) == 0 {
			keep[h] = info
		}
	}
	for _, info := range topo(keep) {
		n := e.nars[info.NarHash]
		if n == nil {
			n = &exportNAR{rel: narRel(info.NarHash), hash: info.NarHash, narSize: info.NarSize}
			e.nars[info.NarHash] = n
			e.narSeq = append(e.narSeq, n)
		}
		e.paths = append(e.paths, &exportPath{info: info, nar: n, lsRel: info.Hash() + ".ls", infoRel: info.Hash() + ".narinfo"})
	}
	return nil
}

// keySet is the set of a map's keys.
func keySet(m map[string]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// narRel is the drive file of a NAR.
func narRel(h [32]byte) string { return narDir + "/" + nixbase32.EncodeToString(h[:]) + ".nar.zst" }

// checkDrive finds which files are on the drive already with the right
// content: a NAR file must decode to its NarHash, a listing must equal
// the source's. Everything else is written.
func (e *exporter) checkDrive(ctx context.Context) error {
	var total int64
	for _, n := range e.narSeq {
		if size, err := e.d.stat(n.rel); err == nil {
			n.size = size
			total += size
		}
	}
	e.p.Phase("check drive", total)
	for _, n := range e.narSeq {
		if n.size == 0 {
			continue
		}
		f, _, err := e.d.open(n.rel)
		if err != nil {
			return err
		}
		n.sum, n.size, err = checkNARFile(ctx, f, appliance.CompressionZstd, n.hash, n.narSize, e.p)
		f.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n.onDrive = err == nil
		if n.onDrive {
			e.keep(n.rel, n.size, n.sum)
		}
	}
	for _, n := range e.narSeq {
		if !n.onDrive {
			size, err := e.cfg.Source.NARSize(ctx, n.hash)
			if err != nil {
				return fmt.Errorf("nar %s: %w", appliance.FormatHash(n.hash), err)
			}
			n.size = size
		}
	}
	for _, p := range e.paths {
		ls, err := e.cfg.Source.Listing(ctx, p.info.Hash())
		if err != nil {
			return fmt.Errorf("listing of %s: %w", p.info.StorePath, err)
		}
		p.lsSize = int64(len(ls))
		if have, err := e.d.readFile(p.lsRel, maxListing); err == nil && bytes.Equal(have, ls) {
			p.lsKept = true
			e.keep(p.lsRel, p.lsSize, sha256.Sum256(ls))
		}
	}
	return nil
}

// keep records a file already on the drive with the right content.
func (e *exporter) keep(rel string, size int64, sum [32]byte) {
	e.files[rel] = File{Path: rel, Size: size, SHA256: hex.EncodeToString(sum[:])}
	e.rep.Kept++
	e.rep.KeptBytes += size
}

// narinfoText is a path's narinfo as the drive holds it.
func narinfoText(p *exportPath) []byte {
	info := *p.info
	info.URL, info.Compression = p.nar.rel, string(appliance.CompressionZstd)
	info.FileHash = "sha256:" + nixbase32.EncodeToString(p.nar.sum[:])
	info.FileSize = uint64(p.nar.size)
	info.System = ""
	return info.Marshal()
}

// toWrite is how many bytes the export still writes, and how many files.
func (e *exporter) toWrite() (bytes int64, files int) {
	for _, n := range e.narSeq {
		if !n.onDrive {
			bytes, files = bytes+n.size, files+1
		}
	}
	for _, p := range e.paths {
		if !p.lsKept {
			bytes, files = bytes+p.lsSize, files+1
		}
		bytes, files = bytes+int64(len(narinfoText(p))), files+1
	}
	return bytes, files
}

// checkSpace refuses an export the drive has no room for.
func (e *exporter) checkSpace() error {
	n, files := e.toWrite()
	// Each file may take one more block than its bytes; the manifest
	// takes about 150 bytes a file.
	need := n + int64(files)*4096 + int64(len(e.files)+files+1)*150 + 4096
	free, err := e.cfg.FreeSpace(e.cfg.Dir)
	if err != nil {
		return err
	}
	if uint64(need) > free {
		return fmt.Errorf("%w: %s has %s free, this export needs %s more for %d files; "+
			"use a larger drive, free space on it, or export less", ErrNoSpace, e.cfg.Dir, sizeText(int64(free)), sizeText(need), files)
	}
	return nil
}

// write writes what the drive lacks, references first.
func (e *exporter) write(ctx context.Context) error {
	total, _ := e.toWrite()
	e.p.Phase("export", total+int64(len(CacheInfo)))
	if err := e.small(CacheInfoName, []byte(CacheInfo)); err != nil {
		return err
	}
	for _, p := range e.paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !p.nar.onDrive {
			if err := e.writeNAR(ctx, p.nar); err != nil {
				return fmt.Errorf("%s: %w", p.info.StorePath, err)
			}
		}
		if !p.lsKept {
			ls, err := e.cfg.Source.Listing(ctx, p.info.Hash())
			if err != nil {
				return fmt.Errorf("listing of %s: %w", p.info.StorePath, err)
			}
			if err := e.small(p.lsRel, ls); err != nil {
				return err
			}
		}
		if err := e.small(p.infoRel, narinfoText(p)); err != nil {
			return err
		}
	}
	return nil
}

// CacheInfoName is the binary cache's description file.
const CacheInfoName = "nix-cache-info"

// small writes a small file unless the drive holds the same bytes.
func (e *exporter) small(rel string, b []byte) error {
	defer e.p.Add(int64(len(b)))
	sum := sha256.Sum256(b)
	if have, err := e.d.readFile(rel, int64(len(b))); err == nil && bytes.Equal(have, b) {
		e.keep(rel, int64(len(b)), sum)
		return nil
	}
	if err := e.d.writeFile(rel, b, false); err != nil {
		return err
	}
	e.wrote(rel, int64(len(b)), sum)
	return nil
}

// wrote records a file written.
func (e *exporter) wrote(rel string, size int64, sum [32]byte) {
	e.files[rel] = File{Path: rel, Size: size, SHA256: hex.EncodeToString(sum[:])}
	e.rep.Written = append(e.rep.Written, rel)
	e.rep.WrittenBytes += size
}

// writeNAR copies a NAR's stored frames from the source to the drive,
// checking on the way that they decode to its NarHash.
func (e *exporter) writeNAR(ctx context.Context, n *exportNAR) error {
	body, err := e.cfg.Source.NAR(ctx, n.hash)
	if err != nil {
		return fmt.Errorf("nar %s: %w", appliance.FormatHash(n.hash), err)
	}
	defer body.Close()
	f, err := e.d.create(n.rel)
	if err != nil {
		return err
	}
	c := newNARCheck(ctx, appliance.CompressionZstd, n.hash, n.narSize)
	_, err = io.CopyBuffer(io.MultiWriter(f, c, counter{e.p}), ctxReader{ctx, body}, e.buf)
	if cerr := c.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%w: %w", ErrSource, cerr)
	}
	if err != nil {
		f.abort()
		return fmt.Errorf("nar %s: %w", appliance.FormatHash(n.hash), err)
	}
	if err := f.commit(false); err != nil {
		return err
	}
	n.sum, n.size, n.onDrive = c.sum(), c.written, true
	e.wrote(n.rel, n.size, n.sum)
	return nil
}

// finish syncs the drive, then writes the manifest.
func (e *exporter) finish(m *Manifest) error {
	if err := e.d.sync(); err != nil {
		return err
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := e.d.writeFile(ManifestName, b, true); err != nil {
		return err
	}
	return e.d.syncDir()
}
