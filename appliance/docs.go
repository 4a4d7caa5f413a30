package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"cairn/kv"
)

// drvName matches a derivation's store path basename.
var drvName = regexp.MustCompile(`^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]{1,207}\.drv$`)

// ValidDrv reports whether name is a derivation basename, as build log URLs
// carry.
func ValidDrv(name string) bool { return drvName.MatchString(name) }

// PutLog stores the build log of a derivation, as `nix store copy-log`
// uploads it.
func (s *Service) PutLog(ctx context.Context, drv string, body io.Reader, encoding string) error {
	if !ValidDrv(drv) {
		return badUpload("log name %q is not a derivation basename", drv)
	}
	b, err := s.readSmall(ctx, "build log", body, encoding, MaxLogSize)
	if err != nil {
		return err
	}
	return s.store.ix.PutBlob(kv.BlobLog, drv, s.store.codec.CompressFast(nil, b))
}

// Log returns the build log of a derivation.
func (s *Service) Log(drv string) ([]byte, error) {
	if !ValidDrv(drv) {
		return nil, badUpload("log name %q is not a derivation basename", drv)
	}
	frame, err := s.store.ix.GetBlob(kv.BlobLog, drv)
	if err != nil {
		return nil, err
	}
	return s.store.codec.Decompress(nil, frame, -1)
}

// realisationPath matches the two layouts of CA realisations: Nix 2.x's
// realisations/<drv hash>!<output>.doi, and the newer
// build-trace-v2/<drv basename>/<output>.doi.
var realisationPath = regexp.MustCompile(`^(realisations/sha256:[0-9a-z]{52,64}![A-Za-z0-9+\-._?=]{1,200}|build-trace-v2/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]{1,207}\.drv/[A-Za-z0-9+\-._?=]{1,200})\.doi$`)

// ValidRealisationPath reports whether p (below the cache root, without a
// leading slash) names a realisation.
func ValidRealisationPath(p string) bool { return realisationPath.MatchString(p) }

// PutRealisation stores an uploaded realisation with cairn's signature
// added. For the realisations/ layout its "id" must match the path.
func (s *Service) PutRealisation(ctx context.Context, path string, body io.Reader, encoding string) error {
	if !ValidRealisationPath(path) {
		return badUpload("%q is not a realisation path", path)
	}
	b, err := s.readSmall(ctx, "realisation", body, encoding, MaxRealisationSize)
	if err != nil {
		return err
	}
	doc, err := parseRealisation(b)
	if err != nil {
		return err
	}
	if id, ok := strings.CutPrefix(strings.TrimSuffix(path, ".doi"), "realisations/"); ok {
		if got, _ := doc["id"].(string); got != id {
			return badUpload("realisation id %q does not match its path %q", got, id)
		}
		if out, _ := doc["outPath"].(string); !validBasename(out) {
			return badUpload("realisation outPath %q is not a store path basename", out)
		}
	}
	signed, err := signRealisation(doc, s.cfg.Key)
	if err != nil {
		return err
	}
	return s.store.ix.PutBlob(kv.BlobRealisation, path, signed)
}

// Realisation returns a stored realisation document.
func (s *Service) Realisation(path string) ([]byte, error) {
	if !ValidRealisationPath(path) {
		return nil, badUpload("%q is not a realisation path", path)
	}
	return s.store.ix.GetBlob(kv.BlobRealisation, path)
}

func validBasename(b string) bool {
	return len(b) > 33 && b[32] == '-' && drvName.MatchString(b[:33]+"x.drv")
}

// parseRealisation reads a realisation document: one JSON object.
func parseRealisation(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, badUpload("realisation is not a JSON object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badUpload("realisation has data after its JSON object")
	}
	if sigs, ok := doc["signatures"]; ok {
		if _, isList := sigs.([]any); !isList {
			return nil, badUpload("realisation signatures is not a list")
		}
	}
	return doc, nil
}

// realisationFingerprint is what Nix signs for a realisation: the document
// without its signatures, as compact JSON with sorted keys.
func realisationFingerprint(doc map[string]any) (string, error) {
	rest := make(map[string]any, len(doc))
	for k, v := range doc {
		if k != "signatures" {
			rest[k] = v
		}
	}
	b, err := compactJSON(rest)
	return string(b), err
}

// compactJSON encodes v with sorted keys and no HTML escaping, as Nix's
// JSON library prints it.
func compactJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// signRealisation adds cairn's signature to a realisation, replacing an
// older one by the same key, and returns the document.
func signRealisation(doc map[string]any, key signature.SecretKey) ([]byte, error) {
	fp, err := realisationFingerprint(doc)
	if err != nil {
		return nil, fmt.Errorf("sign realisation: %w", err)
	}
	sig, err := key.Sign(nil, fp)
	if err != nil {
		return nil, fmt.Errorf("sign realisation: %w", err)
	}
	name := key.ToPublicKey().Name
	sigs := []any{}
	if old, ok := doc["signatures"].([]any); ok {
		for _, o := range old {
			if str, _ := o.(string); !strings.HasPrefix(str, name+":") {
				sigs = append(sigs, o)
			}
		}
	}
	doc["signatures"] = append(sigs, sig.String())
	return compactJSON(doc)
}
