package appliance

import (
	"context"
	"io"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance/narinfo"
)

// NarURL is the URL and Compression cairn's narinfos give for a NAR:
// nar/<NarHash>.nar.zst, or nar/<NarHash>.nar with plain set.
func NarURL(narHash [32]byte, plain bool) (url, compression string) {
	if plain {
		return "nar/" + nixbase32.EncodeToString(narHash[:]) + ".nar", string(CompressionNone)
	}
	return "nar/" + nixbase32.EncodeToString(narHash[:]) + ".nar.zst", string(CompressionZstd)
}

// SignedNarInfo is the narinfo cairn serves for a stored record: its
// NarHash-named URL, the signatures the record keeps, and key's signature,
// added when the record carries none by key's name.
func SignedNarInfo(r *NarInfo, key signature.SecretKey, plain bool) *narinfo.Info {
	info := &narinfo.Info{StorePath: r.StorePath, NarHash: r.NarHash, NarSize: r.NarSize,
		References: r.References, Deriver: r.Deriver, Sigs: r.Sigs, CA: r.CA}
	info.URL, info.Compression = NarURL(r.NarHash, plain)
	if !hasSig(info.Sigs, key.ToPublicKey().Name) {
		info.Sigs = append([]string(nil), info.Sigs...)
		info.Sign(key) // a record from before a key change
	}
	return info
}

// NewRecord is the store record of a verified narinfo: its signatures
// plus key's, which replaces any other by the same key name, from source.
func NewRecord(info *narinfo.Info, key signature.SecretKey, source string) *NarInfo {
	signed := *info
	signed.Sigs = append([]string(nil), info.Sigs...)
	signed.Sign(key)
	return &NarInfo{StorePath: info.StorePath, NarHash: info.NarHash, NarSize: info.NarSize,
		References: info.References, Deriver: info.Deriver, CA: info.CA,
		Sigs: signed.Sigs, Source: source, Added: time.Now().Unix()}
}

// Decompress returns a reader of body's plaintext in compression c, decoding
// xz the fastest way this build and PATH offer.
func Decompress(ctx context.Context, c Compression, body io.Reader) (io.ReadCloser, error) {
	xzPath := ""
	if c == CompressionXZ {
		xzPath = defaultXZ()
	}
	return decompress(ctx, c, body, xzPath, nil)
}
