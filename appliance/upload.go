package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"cairn/appliance/narinfo"
	"cairn/kv"
)

// ErrBadUpload reports an upload cairn refuses; its message is one line,
// fit for a 400 response.
var ErrBadUpload = errors.New("upload refused")

// Limits on uploaded documents.
const (
	MaxLogSize         = 64 << 20 // a build log, uncompressed
	MaxRealisationSize = 64 << 10 // a realisation document
	MaxSmallUpload     = 1 << 20  // a .ls listing
)

// badUpload wraps a reason as ErrBadUpload.
func badUpload(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadUpload, fmt.Sprintf(format, args...))
}

// UploadNAR ingests a NAR uploaded under the cache-relative name (for
// example nar/<filehash>.nar.xz), compressed as the name's extension says
// and encoded as contentEncoding says (a request's Content-Encoding, or
// ""). The name is remembered, so a HEAD of it answers 200 afterwards.
func (s *Service) UploadNAR(ctx context.Context, name string, body io.Reader, contentEncoding string) (*Result, error) {
	comp := compressionOfName(name)
	want := Want{Upload: name}
	if ab, ok := body.(Aborter); ok {
		want.Abort = ab.Abort
	}
	body, closeBody, err := s.contentDecoder(ctx, body, contentEncoding, want.Abort)
	if err != nil {
		return nil, err
	}
	defer closeBody()
	res, err := s.store.Ingest(ctx, want, body, comp)
	if err != nil {
		if errors.Is(err, ErrBadNAR) || errors.Is(err, ErrBadBody) || errors.Is(err, ErrSizeMismatch) {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadUpload, name, err)
		}
		return nil, err
	}
	s.kickEvict()
	s.log.Info("uploaded nar", "name", name, "nar", FormatHash(res.NarHash), "size", res.NarSize, "new_chunks", res.NewChunks)
	return res, nil
}

// Aborter is an upload body whose blocked reads can be ended: UploadNAR
// aborts it when the NAR turns out bad before the body is all read.
type Aborter interface{ Abort() }

// compressionOfName is the compression an upload's extension names.
func compressionOfName(name string) Compression {
	switch {
	case strings.HasSuffix(name, ".xz"):
		return CompressionXZ
	case strings.HasSuffix(name, ".zst"):
		return CompressionZstd
	case strings.HasSuffix(name, ".bz2"):
		return CompressionBzip2
	}
	return CompressionNone
}

// contentDecoder undoes a request's Content-Encoding. abort, when set,
// ends a blocked read of body (see decompress).
func (s *Service) contentDecoder(ctx context.Context, body io.Reader, encoding string, abort func()) (io.Reader, func(), error) {
	var comp Compression
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return body, func() {}, nil
	case "xz":
		comp = CompressionXZ
	case "zstd", "zst":
		comp = CompressionZstd
	case "bzip2", "bz2":
		comp = CompressionBzip2
	default:
		return nil, nil, badUpload("Content-Encoding %q is not supported (xz, zstd, bzip2)", encoding)
	}
	r, err := decompress(ctx, comp, body, s.store.cfg.XZ, abort)
	if err != nil {
		return nil, nil, badUpload("Content-Encoding %s: %v", encoding, err)
	}
	return r, func() { r.Close() }, nil
}

// readSmall reads an uploaded document of at most limit bytes after its
// Content-Encoding is undone.
func (s *Service) readSmall(ctx context.Context, what string, body io.Reader, encoding string, limit int64) ([]byte, error) {
	r, closeBody, err := s.contentDecoder(ctx, body, encoding, nil)
	if err != nil {
		return nil, err
	}
	defer closeBody()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, badUpload("%s: %v", what, err)
	}
	if int64(len(b)) > limit {
		return nil, badUpload("%s is larger than %d bytes", what, limit)
	}
	return b, nil
}

// Uploaded reports whether a NAR was uploaded under name.
func (s *Service) Uploaded(name string) bool {
	_, err := s.store.ix.Upload(name)
	return err == nil
}

// PutNarInfo stores an uploaded narinfo for store hash, signed by cairn.
// It is refused unless its StorePath has that hash, an ingested NAR has
// its NarHash and NarSize, every reference is cached (or is the path
// itself), and, when upload keys are set, a trusted key signed it. Uploads
// never consult upstreams.
func (s *Service) PutNarInfo(ctx context.Context, hash string, body io.Reader, encoding string) error {
	b, err := s.readSmall(ctx, "narinfo", body, encoding, narinfo.MaxSize)
	if err != nil {
		return err
	}
	info, err := narinfo.Parse(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpload, err)
	}
	if info.Hash() != hash {
		return badUpload("narinfo URL names %s but its StorePath is %s", hash, info.StorePath)
	}
	m, err := s.store.ix.Manifest(info.NarHash)
	if errors.Is(err, kv.ErrNotFound) {
		return badUpload("no uploaded NAR has NarHash %s; upload the NAR first", FormatHash(info.NarHash))
	}
	if err != nil {
		return err
	}
	if m.NarSize != info.NarSize {
		return badUpload("NarSize %d, but the NAR with that NarHash has %d bytes", info.NarSize, m.NarSize)
	}
	self := strings.TrimPrefix(info.StorePath, "/nix/store/")
	for _, ref := range info.References {
		if ref == self || s.cached(ref) {
			continue
		}
		return badUpload("reference %s is not in the cache; upload it first", ref)
	}
	if len(s.cfg.UploadKeys) > 0 {
		if _, ok := info.Verify(s.cfg.UploadKeys); !ok {
			return badUpload("%s carries no valid signature from a --trusted-upload-key", info.StorePath)
		}
	}
	if err := s.store.Record(s.record(info, "upload")); err != nil {
		return err
	}
	s.log.Info("uploaded narinfo", "path", info.StorePath, "nar", FormatHash(info.NarHash))
	return nil
}

// cached reports whether a store path basename has a narinfo here, stored
// or served from an upstream and not fetched yet.
func (s *Service) cached(base string) bool {
	if len(base) < 34 || !narinfo.ValidHash(base[:32]) {
		return false
	}
	if r, err := s.store.ix.NarInfo(base[:32]); err == nil {
		return strings.TrimPrefix(r.StorePath, "/nix/store/") == base
	}
	info := s.pendingPath(base[:32])
	return info != nil && strings.TrimPrefix(info.StorePath, "/nix/store/") == base
}

// DeleteNarInfo removes a store path's narinfo, and its NAR when no other
// narinfo names it.
func (s *Service) DeleteNarInfo(ctx context.Context, hash string) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	paths, _, _, err := s.store.DeletePaths(ctx, hash)
	if err != nil {
		return err
	}
	if paths == 0 {
		return fmt.Errorf("delete %s: %w", hash, ErrNotFound)
	}
	s.log.Info("deleted path", "hash", hash)
	return nil
}

// SweepUploads forgets uploads older than grace and deletes their NARs
// when no narinfo ever named them. It returns how many NARs it deleted.
func (s *Service) SweepUploads(ctx context.Context, grace time.Duration) (int, error) {
	ups, err := s.store.ix.Uploads()
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-grace)
	deleted := 0
	for _, u := range ups {
		if u.At.After(cutoff) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		if !u.Named {
			// Checked again in the deleting transaction: a narinfo may
			// have arrived since the listing.
			gone, err := s.store.DeleteUnnamedNAR(ctx, u.NarHash)
			if err != nil {
				return deleted, err
			}
			if gone {
				deleted++
				s.log.Info("dropped an uploaded NAR no narinfo named", "name", u.Name, "nar", FormatHash(u.NarHash))
			}
		}
		if err := s.store.ix.DeleteUpload(u.Name); err != nil {
			return deleted, err
		}
	}
	return deleted, nil
}

func (s *Service) sweepUploadsLoop() {
	defer s.wg.Done()
	every := min(max(s.cfg.UploadGrace/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.lifeMu.Lock() // not alongside a GC's own sweep
			_, err := s.SweepUploads(s.ctx, s.cfg.UploadGrace)
			s.lifeMu.Unlock()
			if err != nil && s.ctx.Err() == nil {
				s.log.Warn("sweep uploads", "err", err)
			}
		}
	}
}
