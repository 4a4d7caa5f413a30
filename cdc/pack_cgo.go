//go:build cgo

package cdc

/*
// libzstd's advanced API, for delta frames: DataDog/zstd compiles the
// library into the binary but has no call that takes a raw-content prefix.
// These are its stable declarations (zstd.h, v1.4.0 and later), with the
// enums passed as the ints they are.
#include <stddef.h>
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
ZSTD_CCtx* ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx);
size_t ZSTD_CCtx_reset(ZSTD_CCtx* cctx, int reset);
size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, int param, int value);
size_t ZSTD_CCtx_refPrefix(ZSTD_CCtx* cctx, const void* prefix, size_t prefixSize);
size_t ZSTD_compress2(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
size_t ZSTD_compressBound(size_t srcSize);
unsigned ZSTD_isError(size_t code);
const char* ZSTD_getErrorName(size_t code);

// cairn_zstd_delta compresses src at level with prefix as a raw-content
// prefix, with a content checksum; the prefix applies to this frame only.
static size_t cairn_zstd_delta(ZSTD_CCtx* c, void* dst, size_t cap, const void* src, size_t n,
                               const void* prefix, size_t pn, int level) {
	size_t r = ZSTD_CCtx_reset(c, 3); // ZSTD_reset_session_and_parameters
	if (ZSTD_isError(r)) return r;
	r = ZSTD_CCtx_setParameter(c, 100, level); // ZSTD_c_compressionLevel
	if (ZSTD_isError(r)) return r;
	r = ZSTD_CCtx_setParameter(c, 201, 1); // ZSTD_c_checksumFlag
	if (ZSTD_isError(r)) return r;
	r = ZSTD_CCtx_refPrefix(c, prefix, pn);
	if (ZSTD_isError(r)) return r;
	return ZSTD_compress2(c, dst, cap, src, n);
}
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"unsafe"

	libzstd "github.com/DataDog/zstd"
	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

// packLevel is the libzstd level of best-level frames. On Go toolchain
// chunks, level 16 (btultra) makes frames 7.1% smaller than klauspost's
// best at 0.6 of its speed; level 19 gains 0.2% more at half that speed
// (README, "Chunking").
const packLevel = 16

// deltaPackLevel is the libzstd level of delta frames. Against a similar
// base most of a chunk is long matches, which level 12 finds nearly as well
// as 16: in make bench, five Go toolchain releases took 83.4 MB on disk at
// 12 against 82.0 at 16, and the later releases recompressed at 4.4–5.2
// MB/s per core against 2.7–2.9.
const deltaPackLevel = 12

// libzstdPacker compresses with the C reference library, whose optimal
// parser packs small frames tighter than klauspost's best level.
type libzstdPacker struct {
	ctx     libzstd.Ctx
	scratch []byte
	delta   *deltaCtx // made by the first packDelta
}

// deltaCtx owns a libzstd compression context for delta frames.
type deltaCtx struct {
	c       *C.ZSTD_CCtx
	cleanup runtime.Cleanup
}

// newPacker returns a libzstd packer, for the levels packerName names.
func newPacker(Level) packer { return &libzstdPacker{ctx: libzstd.NewCtx()} }

// packerName names what makes frames at level, or is empty where klauspost
// does.
func packerName(level Level) string {
	if level != zstd.SpeedBestCompression {
		return ""
	}
	return fmt.Sprintf("libzstd level %d", packLevel)
}

func (p *libzstdPacker) pack(dst, raw []byte) ([]byte, error) {
	out, err := p.ctx.CompressLevel(p.scratch[:0], raw, packLevel)
	if err != nil {
		return dst, fmt.Errorf("libzstd compress %d bytes: %w", len(raw), err)
	}
	p.scratch = out
	// libzstd leaves the checksum out of a one-shot frame. Every decode
	// checks one, so set the frame header's Content_Checksum_flag and append
	// the low 32 bits of the plaintext's XXH64, as the format defines.
	if len(out) < 6 || binary.LittleEndian.Uint32(out) != 0xFD2FB528 || out[4]&0x04 != 0 {
		return dst, fmt.Errorf("libzstd compress %d bytes: unexpected frame header % x", len(raw), out[:min(len(out), 6)])
	}
	start := len(dst)
	dst = append(dst, out...)
	dst[start+4] |= 0x04
	return binary.LittleEndian.AppendUint32(dst, uint32(xxhash.Sum64(raw))), nil
}

// packDelta appends a frame of raw compressed against base as a prefix.
func (p *libzstdPacker) packDelta(dst, raw, base []byte) ([]byte, error) {
	if p.delta == nil {
		c := C.ZSTD_createCCtx()
		if c == nil {
			return dst, fmt.Errorf("libzstd: cannot allocate a compression context")
		}
		d := &deltaCtx{c: c}
		d.cleanup = runtime.AddCleanup(d, func(c *C.ZSTD_CCtx) { C.ZSTD_freeCCtx(c) }, c)
		p.delta = d
	}
	if len(raw) == 0 || len(base) == 0 {
		return dst, fmt.Errorf("libzstd delta: empty chunk or base")
	}
	bound := int(C.ZSTD_compressBound(C.size_t(len(raw))))
	start := len(dst)
	dst = slices.Grow(dst, bound)
	out := dst[start : start+bound]
	r := C.cairn_zstd_delta(p.delta.c, unsafe.Pointer(&out[0]), C.size_t(bound),
		unsafe.Pointer(&raw[0]), C.size_t(len(raw)), unsafe.Pointer(&base[0]), C.size_t(len(base)), C.int(deltaPackLevel))
	runtime.KeepAlive(raw)
	runtime.KeepAlive(base)
	if C.ZSTD_isError(r) != 0 {
		return dst, fmt.Errorf("libzstd delta compress %d bytes: %s", len(raw), C.GoString(C.ZSTD_getErrorName(r)))
	}
	return dst[:start+int(r)], nil
}

// close lets the C contexts go: the delta one now, the other through its
// finalizer.
func (p *libzstdPacker) close() {
	if p.delta != nil {
		p.delta.cleanup.Stop()
		C.ZSTD_freeCCtx(p.delta.c)
		p.delta = nil
	}
	p.ctx, p.scratch = nil, nil
}
