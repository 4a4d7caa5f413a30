//go:build cgo && linux

package appliance

/*
#cgo LDFLAGS: -l:liblzma.so.5
#include <stdint.h>
#include <stdlib.h>

// The part of liblzma's API that cairn calls (lzma.h; the ABI is stable
// since liblzma 5.0), declared here so that a build needs only the runtime
// library, which every Debian and NixOS system has, and not its headers.
typedef struct {
	const uint8_t *next_in;
	size_t avail_in;
	uint64_t total_in;
	uint8_t *next_out;
	size_t avail_out;
	uint64_t total_out;
	void *allocator;
	void *internal;
	void *reserved_ptr1;
	void *reserved_ptr2;
	void *reserved_ptr3;
	void *reserved_ptr4;
	uint64_t reserved_int1;
	uint64_t reserved_int2;
	size_t reserved_int3;
	size_t reserved_int4;
	int reserved_enum1;
	int reserved_enum2;
} cairn_lzma_stream;

extern int lzma_stream_decoder(cairn_lzma_stream *strm, uint64_t memlimit, uint32_t flags);
extern int lzma_code(cairn_lzma_stream *strm, int action);
extern void lzma_end(cairn_lzma_stream *strm);

// cairn_lzma_new returns a single-stream .xz decoder, or NULL with *ret set.
static cairn_lzma_stream *cairn_lzma_new(uint64_t memlimit, int *ret) {
	cairn_lzma_stream *s = calloc(1, sizeof(cairn_lzma_stream));
	if (s == NULL) {
		*ret = 5; // LZMA_MEM_ERROR
		return NULL;
	}
	*ret = lzma_stream_decoder(s, memlimit, 0);
	if (*ret != 0) {
		lzma_end(s);
		free(s);
		return NULL;
	}
	return s;
}

// cairn_lzma_step decodes from in to out. The buffers are Go memory, so
// the stream forgets them before it returns.
static int cairn_lzma_step(cairn_lzma_stream *s, const uint8_t *in, size_t in_len,
		uint8_t *out, size_t out_len, int finish, size_t *consumed, size_t *produced) {
	s->next_in = in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	int ret = lzma_code(s, finish ? 3 : 0); // LZMA_FINISH : LZMA_RUN
	*consumed = in_len - s->avail_in;
	*produced = out_len - s->avail_out;
	s->next_in = NULL;
	s->avail_in = 0;
	s->next_out = NULL;
	s->avail_out = 0;
	return ret;
}

static void cairn_lzma_free(cairn_lzma_stream *s) {
	lzma_end(s);
	free(s);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"unsafe"
)

// xzLibBuiltIn says whether this build decodes xz with liblzma in-process.
const xzLibBuiltIn = true

// xzMemLimit bounds the memory one xz stream may make liblzma allocate.
// Nix writes xz at its default preset (an 8 MiB dictionary); xz -9 needs
// 65 MiB.
const xzMemLimit = 1 << 30

// liblzma's return codes that cairn tells apart (lzma_ret).
const (
	lzmaOK        = 0
	lzmaStreamEnd = 1
	lzmaMemError  = 5
	lzmaMemLimit  = 6
	lzmaFormat    = 7
	lzmaOptions   = 8
	lzmaData      = 9
	lzmaBuf       = 10
)

// xzLib decodes one .xz stream with liblzma in the reading goroutine, which
// saves an xz process and its pipe (README, on xz bodies).
type xzLib struct {
	mu    sync.Mutex // held by Read and Close: Close frees the decoder
	dec   *lzmaDecoder
	body  io.Reader
	in    []byte
	inPos int
	eof   bool  // body ended
	err   error // sticky: io.EOF after the stream's end
	abort func()
}

// newXZLib returns a reader of the .xz stream in body. abort, when set,
// ends a read of body that blocks, for a Close during a Read.
func newXZLib(body io.Reader, abort func()) (io.ReadCloser, error) {
	var ret C.int
	strm := C.cairn_lzma_new(C.uint64_t(xzMemLimit), &ret)
	if strm == nil {
		return nil, lzmaError(int(ret))
	}
	x := &xzLib{dec: &lzmaDecoder{strm}, body: body, in: make([]byte, 0, 64<<10), abort: abort}
	// A reader dropped without Close would keep liblzma's ~9 MiB forever.
	runtime.AddCleanup(x, (*lzmaDecoder).free, x.dec)
	return x, nil
}

// lzmaDecoder holds a liblzma stream in C memory until free.
type lzmaDecoder struct{ strm *C.cairn_lzma_stream }

func (d *lzmaDecoder) free() {
	if d.strm != nil {
		C.cairn_lzma_free(d.strm)
		d.strm = nil
	}
}

func (x *xzLib) Read(p []byte) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err != nil {
		return 0, x.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if x.inPos == len(x.in) && !x.eof {
			n, err := x.body.Read(x.in[:cap(x.in)])
			x.in, x.inPos = x.in[:n], 0
			if err == io.EOF {
				x.eof = true
			} else if err != nil {
				x.fail(err)
				return 0, x.err
			}
			if n == 0 && !x.eof {
				continue
			}
		}
		var inPtr *C.uint8_t
		if x.inPos < len(x.in) {
			inPtr = (*C.uint8_t)(unsafe.Pointer(&x.in[x.inPos]))
		}
		var consumed, produced C.size_t
		ret := C.cairn_lzma_step(x.dec.strm, inPtr, C.size_t(len(x.in)-x.inPos),
			(*C.uint8_t)(unsafe.Pointer(&p[0])), C.size_t(len(p)), boolInt(x.eof), &consumed, &produced)
		x.inPos += int(consumed)
		switch int(ret) {
		case lzmaOK:
			if produced > 0 {
				return int(produced), nil
			}
		case lzmaStreamEnd:
			// Whatever follows the first stream is ignored, as with
			// xz --single-stream.
			x.err = io.EOF
			x.dec.free()
			return int(produced), nil
		default:
			x.fail(lzmaError(int(ret)))
			return int(produced), x.err
		}
	}
}

// fail makes err the reader's error and frees the decoder.
func (x *xzLib) fail(err error) {
	x.err = fmt.Errorf("xz: %w", err)
	x.dec.free()
}

// Close frees the decoder. A Read blocked on the body is ended with abort
// first, when there is one, and waited for.
func (x *xzLib) Close() error {
	if !x.mu.TryLock() {
		if x.abort != nil {
			x.abort()
		}
		x.mu.Lock()
	}
	defer x.mu.Unlock()
	x.dec.free()
	if x.err == nil {
		x.err = errors.New("xz: read after Close")
	}
	return nil
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// lzmaError says what a liblzma return code means, in xz's words.
func lzmaError(ret int) error {
	switch ret {
	case lzmaMemError:
		return errors.New("out of memory")
	case lzmaMemLimit:
		return fmt.Errorf("the stream needs more than %d MiB of memory to decode", xzMemLimit>>20)
	case lzmaFormat:
		return errors.New("file format not recognized")
	case lzmaOptions:
		return errors.New("unsupported options")
	case lzmaData:
		return errors.New("compressed data is corrupt")
	case lzmaBuf:
		return errors.New("unexpected end of input")
	}
	return fmt.Errorf("liblzma error %d", ret)
}
