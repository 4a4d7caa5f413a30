package seed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/appliance"
	"cairn/appliance/narinfo"
)

// VerifyConfig is which drive to check, and whom to trust.
type VerifyConfig struct {
	Dir string
	// TrustedKeys are the keys a narinfo must be signed by. When empty,
	// the key recorded in the drive's manifest is used, which proves the
	// drive intact but not who made it.
	TrustedKeys []signature.PublicKey
	Progress    Progress
}

// Problem is one thing wrong with a drive file.
type Problem struct {
	File string // drive-relative path
	What string
}

// String renders the problem as "file: what".
func (p Problem) String() string { return p.File + ": " + p.What }

// VerifyReport is what a check of a drive found.
type VerifyReport struct {
	Files    int   // files read
	Bytes    int64 // bytes read
	NarInfos int
	NARs     int // NAR files decoded and checked against their NarHash
	// Keys are the keys signatures were checked against, NAME:BASE64.
	Keys []string
	// KeyFromDrive says the keys came from the drive's own manifest.
	KeyFromDrive bool
	Manifest     *Manifest // nil when the drive has none, or a bad one
	Problems     []Problem // sorted by file
}

// OK reports whether the drive passed every check.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// driveNarInfo is one narinfo file of a drive, parsed.
type driveNarInfo struct {
	rel  string
	info *narinfo.Info
	comp appliance.Compression
	url  string // the NAR file, drive-relative; "" when unusable
}

// trust picks the keys to check signatures against: the given ones, or
// the manifest's.
func trust(given []signature.PublicKey, m *Manifest) ([]signature.PublicKey, bool, error) {
	if len(given) > 0 {
		return given, false, nil
	}
	if m == nil {
		return nil, false, fmt.Errorf("%w: the drive has no usable %s; pass --trusted-key", ErrNoTrust, ManifestName)
	}
	keys, err := narinfo.ParsePublicKeys([]string{m.PublicKey})
	return keys, true, err
}

// readNarInfo reads and checks one narinfo file of a drive: it must parse,
// carry its file name's hash, be signed by one of keys, and name a NAR
// file on the drive in a known compression. A problem is returned with
// whatever could be parsed.
func (d *drive) readNarInfo(rel string, keys []signature.PublicKey) (*driveNarInfo, string) {
	ni := &driveNarInfo{rel: rel}
	b, err := d.readFile(rel, narinfo.MaxSize)
	if err != nil {
		return ni, err.Error()
	}
	info, err := narinfo.Parse(b)
	if err != nil {
		return ni, err.Error()
	}
	ni.info = info
	if want := strings.TrimSuffix(path.Base(rel), ".narinfo"); info.Hash() != want {
		return ni, fmt.Sprintf("StorePath %s does not match the file name", info.StorePath)
	}
	if _, ok := info.Verify(keys); !ok {
		return ni, fmt.Sprintf("%s carries no valid signature by %s", info.StorePath, keyNames(keys))
	}
	if ni.comp, err = appliance.ParseCompression(info.Compression); err != nil {
		return ni, err.Error()
	}
	if !validRel(info.URL) {
		return ni, fmt.Sprintf("URL %q is not a file on the drive", info.URL)
	}
	ni.url = info.URL
	return ni, ""
}

// keyNames lists keys' names for messages.
func keyNames(keys []signature.PublicKey) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return strings.Join(names, " or ")
}

// Verify checks a drive: every file against the manifest's size and
// sha256, every narinfo's signature against the trusted keys and its
// references against the drive, and every NAR against its NarHash and
// NarSize. Problems with the drive are in the report; the error is for a
// check that could not run.
func Verify(ctx context.Context, cfg VerifyConfig) (*VerifyReport, error) {
	p := progressOr(cfg.Progress)
	d, err := openDrive(cfg.Dir, false)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer d.Close()
	rep := &VerifyReport{}
	problem := func(file, format string, args ...any) {
		rep.Problems = append(rep.Problems, Problem{File: file, What: fmt.Sprintf(format, args...)})
	}
	m, err := d.readManifest()
	switch {
	case err != nil:
		problem(ManifestName, "%v", err)
	case m == nil:
		problem(ManifestName, "missing: this drive was not written by cairn seed export, or the export did not finish")
	}
	rep.Manifest = m
	keys, fromDrive, err := trust(cfg.TrustedKeys, m)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", cfg.Dir, err)
	}
	rep.KeyFromDrive = fromDrive
	for _, k := range keys {
		rep.Keys = append(rep.Keys, k.String())
	}

	onDrive, err := d.files()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	listed := map[string]File{}
	if m != nil {
		listed = m.byPath()
	}
	// Narinfos first: they say what each NAR file must decode to.
	var infoFiles []string
	byHash := map[string]bool{}
	for _, f := range onDrive {
		if strings.HasSuffix(f, ".narinfo") && !strings.Contains(f, "/") {
			infoFiles = append(infoFiles, f)
			byHash[strings.TrimSuffix(f, ".narinfo")] = true
		}
	}
	nars := map[string][]*driveNarInfo{} // NAR file -> the narinfos naming it
	for _, f := range infoFiles {
		rep.NarInfos++
		ni, why := d.readNarInfo(f, keys)
		if why != "" {
			problem(f, "%s", why)
		}
		if ni.info != nil {
			for _, r := range ni.info.References {
				if !byHash[r[:32]] {
					problem(f, "references %s, which is not on the drive", r)
				}
			}
		}
		if ni.url != "" {
			nars[ni.url] = append(nars[ni.url], ni)
		}
	}

	// Then every file: the manifest's and the drive's.
	all := map[string]bool{}
	for _, f := range onDrive {
		if f != ManifestName && cacheFile(f) {
			all[f] = true
		}
	}
	for f := range listed {
		all[f] = true
	}
	for f := range nars {
		all[f] = true
	}
	files := make([]string, 0, len(all))
	var total int64
	for f := range all {
		files = append(files, f)
		if size, err := d.stat(f); err == nil {
			total += size
		}
	}
	slices.Sort(files)
	p.Phase("verify", total)
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if isTemp(f) {
			problem(f, "left by an interrupted export: run the export again")
			continue
		}
		want, isListed := listed[f]
		if m != nil && !isListed {
			problem(f, "not listed in %s", ManifestName)
		}
		sum, size, why := checkDriveFile(ctx, d, f, nars[f], p)
		if errors.Is(why, fs.ErrNotExist) {
			if names := nars[f]; len(names) > 0 {
				problem(f, "missing, though %s names it", names[0].rel)
			} else {
				problem(f, "missing")
			}
			continue
		}
		rep.Files++
		rep.Bytes += size
		if len(nars[f]) > 0 {
			rep.NARs++
		}
		if why != nil {
			problem(f, "%v", why)
		}
		switch {
		case !isListed:
		case size != want.Size:
			problem(f, "%d bytes, but %s lists %d", size, ManifestName, want.Size)
		case hex.EncodeToString(sum[:]) != want.SHA256:
			problem(f, "sha256 %x, but %s lists %s", sum, ManifestName, want.SHA256)
		}
		for _, ni := range nars[f] {
			if msg := fileFields(ni.info, sum, size); msg != "" {
				problem(ni.rel, "%s", msg)
			}
		}
	}
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int { return strings.Compare(a.File, b.File) })
	return rep, nil
}

// cacheFile reports whether a drive file is one a binary cache or an
// export writes; others (a README, a file manager's litter) are ignored.
func cacheFile(f string) bool {
	return f == CacheInfoName || strings.HasPrefix(f, narDir+"/") || isTemp(f) ||
		strings.HasSuffix(f, ".narinfo") || strings.HasSuffix(f, ".ls")
}

// checkDriveFile reads a drive file, hashing it; a NAR file that narinfos
// name is also decoded and checked against their NarHash and NarSize.
func checkDriveFile(ctx context.Context, d *drive, rel string, names []*driveNarInfo, p Progress) ([32]byte, int64, error) {
	f, _, err := d.open(rel)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	if len(names) == 0 {
		h := sha256.New()
		n, err := io.CopyBuffer(io.MultiWriter(h, counter{p}), ctxReader{ctx, f}, make([]byte, 256<<10))
		var sum [32]byte
		h.Sum(sum[:0])
		return sum, n, err
	}
	first := names[0].info
	for _, ni := range names[1:] {
		if ni.info.NarHash != first.NarHash || ni.info.NarSize != first.NarSize || ni.comp != names[0].comp {
			return [32]byte{}, 0, fmt.Errorf("%s and %s name this file with different NarHash, NarSize or Compression", names[0].rel, ni.rel)
		}
	}
	sum, size, err := checkNARFile(ctx, f, names[0].comp, first.NarHash, first.NarSize, p)
	if err != nil {
		err = fmt.Errorf("NAR of %s: %w", first.StorePath, err)
	}
	return sum, size, err
}

// fileFields checks a narinfo's optional FileHash and FileSize against
// the NAR file; it returns what differs, or "".
func fileFields(info *narinfo.Info, sum [32]byte, size int64) string {
	if info.FileSize != 0 && info.FileSize != uint64(size) {
		return fmt.Sprintf("FileSize %d, but %s has %d bytes", info.FileSize, info.URL, size)
	}
	if info.FileHash != "" {
		h, err := narinfo.ParseNarHash(info.FileHash)
		if err != nil || h != sum {
			return fmt.Sprintf("FileHash %s does not match %s", info.FileHash, info.URL)
		}
	}
	return ""
}
