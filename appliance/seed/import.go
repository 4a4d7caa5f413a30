package seed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/appliance/narinfo"
)

// ImportConfig is which drive to import, into what, trusting whom.
type ImportConfig struct {
	Dir  string
	Sink Sink
	// TrustedKeys are the keys a narinfo must be signed by. When empty,
	// the key recorded in the drive's manifest is used, which proves the
	// drive intact but not who made it.
	TrustedKeys []signature.PublicKey
	Progress    Progress
}

// ImportReport says what an import did.
type ImportReport struct {
	Imported []string // basenames of the paths added
	NARBytes int64    // bytes of the NAR files read for them
	Present  []string // basenames of paths the sink held already
	Refused  []Problem
	// Keys are the keys signatures were checked against, NAME:BASE64.
	Keys []string
	// KeyFromDrive says the keys came from the drive's own manifest.
	KeyFromDrive bool
}

// Import adds a drive's paths to sink, references first. A path is
// imported only when its narinfo carries a valid signature by a trusted
// key, matches the drive's manifest (when there is one), its NAR matches
// its NarHash and NarSize, and each of its references is imported or
// present; a path that fails is refused with its reason and the rest go
// on. Paths the sink holds already are skipped. The error is for an
// import that could not go on, such as an unreachable sink.
func Import(ctx context.Context, cfg ImportConfig) (*ImportReport, error) {
	if cfg.Dir == "" || cfg.Sink == nil {
		return nil, errors.New("import: no drive directory or no sink")
	}
	p := progressOr(cfg.Progress)
	d, err := openDrive(cfg.Dir, false)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer d.Close()
	m, err := d.readManifest()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	keys, fromDrive, err := trust(cfg.TrustedKeys, m)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", cfg.Dir, err)
	}
	rep := &ImportReport{KeyFromDrive: fromDrive}
	for _, k := range keys {
		rep.Keys = append(rep.Keys, k.String())
	}
	refuse := func(what, format string, args ...any) {
		rep.Refused = append(rep.Refused, Problem{File: what, What: fmt.Sprintf(format, args...)})
	}

	stored, err := cfg.Sink.Stored(ctx)
	if err != nil {
		return nil, fmt.Errorf("import: paths present: %w", err)
	}
	have := make(map[string]bool, len(stored))
	for _, b := range stored {
		have[b] = true
	}
	files, err := d.files()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var listed map[string]File
	if m != nil {
		listed = m.byPath()
	}
	good := map[string]*driveNarInfo{}
	refused := map[string]bool{} // store hashes
	for _, f := range files {
		if !strings.HasSuffix(f, ".narinfo") || strings.Contains(f, "/") {
			continue
		}
		ni, why := d.readNarInfo(f, keys)
		if ni.info != nil && have[basename(ni.info)] {
			rep.Present = append(rep.Present, basename(ni.info))
			continue
		}
		if why == "" && listed != nil {
			why = matchesManifest(d, f, listed)
		}
		if why != "" {
			name := f
			if ni.info != nil {
				name = basename(ni.info)
			}
			refuse(name, "%s", why)
			refused[strings.TrimSuffix(f, ".narinfo")] = true
			continue
		}
		good[ni.info.Hash()] = ni
	}

	infos := make(map[string]*narinfo.Info, len(good))
	var total int64
	for h, ni := range good {
		infos[h] = ni.info
		if size, err := d.stat(ni.url); err == nil {
			total += size
		}
	}
	p.Phase("import", total)
	added := map[string]bool{}
	for _, info := range topo(infos) {
		base := basename(info)
		if lack := missingRefs(info, have, added, refused); lack != "" {
			refuse(base, "%s", lack)
			refused[info.Hash()] = true
			continue
		}
		size, err := addPath(ctx, d, cfg.Sink, good[info.Hash()], p)
		if errors.Is(err, ErrRefused) {
			refuse(base, "%v", err)
			refused[info.Hash()] = true
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("import %s: %w", base, err)
		}
		added[base] = true
		rep.Imported = append(rep.Imported, base)
		rep.NARBytes += size
	}
	slices.SortStableFunc(rep.Refused, func(a, b Problem) int { return strings.Compare(a.File, b.File) })
	slices.Sort(rep.Present)
	return rep, nil
}

// matchesManifest compares a drive file with its manifest entry; it
// returns what differs, or "".
func matchesManifest(d *drive, rel string, listed map[string]File) string {
	want, ok := listed[rel]
	if !ok {
		return "not listed in " + ManifestName
	}
	b, err := d.readFile(rel, narinfo.MaxSize)
	if err != nil {
		return err.Error()
	}
	if sum := sha256.Sum256(b); int64(len(b)) != want.Size || hex.EncodeToString(sum[:]) != want.SHA256 {
		return "differs from its entry in " + ManifestName
	}
	return ""
}

// missingRefs says which references of info are neither held by the sink
// nor imported, and why; "" when none.
func missingRefs(info *narinfo.Info, have, added, refused map[string]bool) string {
	var lack []string
	for _, r := range info.References {
		if r == basename(info) || have[r] || added[r] {
			continue
		}
		why := "not on the drive"
		if refused[r[:32]] {
			why = "refused"
		}
		lack = append(lack, r+" ("+why+")")
	}
	if len(lack) == 0 {
		return ""
	}
	return "needs " + strings.Join(lack, ", ")
}

// addPath hands one path's NAR file to the sink.
func addPath(ctx context.Context, d *drive, sink Sink, ni *driveNarInfo, p Progress) (int64, error) {
	f, size, err := d.open(ni.url)
	if err != nil {
		return 0, fmt.Errorf("%w: NAR file %s: %w", ErrRefused, ni.url, err)
	}
	defer f.Close()
	body := io.TeeReader(ctxReader{ctx, f}, counter{p})
	return size, sink.Add(ctx, ni.info, body, size, ni.comp)
}
