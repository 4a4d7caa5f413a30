package narinfo

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// Fingerprint returns the string Nix signs: store path, NAR hash and size, sorted full reference paths.
func (i *Info) Fingerprint() string {
	refs := make([]string, len(i.References))
	for j, r := range i.References {
		refs[j] = storeDir + r
	}
	slices.Sort(refs)
	refs = slices.Compact(refs) // Nix holds references in a set
	return "1;" + i.StorePath + ";" + FormatNarHash(i.NarHash) + ";" +
		strconv.FormatUint(i.NarSize, 10) + ";" + strings.Join(refs, ",")
}

// Verify returns the key name of the first Sig that validates against any of keys.
func (i *Info) Verify(keys []signature.PublicKey) (keyName string, ok bool) {
	fp := i.Fingerprint()
	for _, s := range i.Sigs {
		sig, err := signature.ParseSignature(s)
		if err != nil {
			continue
		}
		for _, k := range keys {
			if len(k.Data) == ed25519.PublicKeySize && k.Verify(fp, sig) {
				return sig.Name, true
			}
		}
	}
	return "", false
}

// Sign adds k's signature, replacing any earlier Sig by the same key name.
func (i *Info) Sign(k signature.SecretKey) {
	sig, err := k.Sign(nil, i.Fingerprint())
	if err != nil {
		panic(fmt.Sprintf("narinfo: ed25519 sign: %v", err)) // only fails for prehashed options
	}
	sigs := make([]string, 0, len(i.Sigs)+1)
	for _, s := range i.Sigs {
		if name, _, _ := strings.Cut(s, ":"); name != sig.Name {
			sigs = append(sigs, s)
		}
	}
	i.Sigs = append(sigs, sig.String())
}

// ParsePublicKeys parses Nix public keys written as "name:base64".
func ParsePublicKeys(keys []string) ([]signature.PublicKey, error) {
	out := make([]signature.PublicKey, 0, len(keys))
	for _, k := range keys {
		pk, err := signature.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("parse public key %s: %v: %w", quote(k), err, ErrBad)
		}
		out = append(out, pk)
	}
	return out, nil
}

// PublicKey returns the public half of sk.
func PublicKey(sk signature.SecretKey) signature.PublicKey {
	return sk.ToPublicKey()
}
