package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/appliance"
	"cairn/appliance/narinfo"
)

// Bounds on what a remote cairn may send.
const (
	maxPathsList = 256 << 20
	maxPinsList  = 64 << 20
	maxKey       = 4 << 10
)

// RemoteConfig is how to reach a running cairn.
type RemoteConfig struct {
	URL   string // e.g. http://box:8501
	Token string // sent as the HTTP Basic password of user "cairn"
	// Timeout bounds each request's wait for response headers; default 5m,
	// since a narinfo or NAR may first be fetched from an upstream.
	Timeout time.Duration
	// Client makes the requests; nil means a default client.
	Client *http.Client
}

// Remote is a running cairn reached over its HTTP API: the binary cache
// protocol and /_cairn/paths as an export's source, the push API (PUT
// nar/..., then PUT <hash>.narinfo) as an import's sink.
type Remote struct {
	base   string
	token  string
	client *http.Client

	mu       sync.Mutex
	canWrite bool // the token was accepted for writes
}

var (
	_ Source = (*Remote)(nil)
	_ Sink   = (*Remote)(nil)
)

// NewRemote returns the remote cairn at cfg.URL; it does no I/O.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("remote %q: want http://host:port or https://host", cfg.URL)
	}
	client := cfg.Client
	if client == nil {
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = 5 * time.Minute
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = timeout
		client = &http.Client{Transport: tr}
	}
	return &Remote{base: strings.TrimSuffix(cfg.URL, "/"), token: cfg.Token, client: client}, nil
}

// do sends a request and maps the answer's status: 404 and 410 to
// ErrNotFound, 401 and 403 to ErrUnauthorized, 400 to ErrRefused, other
// failures to an error with the server's one-line reason.
func (r *Remote) do(ctx context.Context, method, path string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.base+"/"+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.ContentLength = size
	}
	if r.token != "" {
		req.SetBasicAuth("cairn", r.token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	reason := strings.TrimSpace(string(msg))
	if reason == "" {
		reason = resp.Status
	}
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusGone:
		return nil, fmt.Errorf("%s %s: %w", method, path, ErrNotFound)
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%s %s: %w: %s", method, path, ErrUnauthorized, reason)
	case http.StatusBadRequest:
		return nil, fmt.Errorf("%s %s: %w: %s", method, path, ErrRefused, reason)
	}
	return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, reason)
}

// get fetches a small document of at most limit bytes.
func (r *Remote) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	resp, err := r.do(ctx, http.MethodGet, path, nil, 0)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: answer exceeds %d bytes", path, limit)
	}
	return b, nil
}

// PublicKey fetches the remote's public key.
func (r *Remote) PublicKey(ctx context.Context) (string, error) {
	b, err := r.get(ctx, "pubkey", maxKey)
	return strings.TrimSpace(string(b)), err
}

// Paths fetches the list of stored paths.
func (r *Remote) Paths(ctx context.Context) ([]string, error) {
	b, err := r.get(ctx, "_cairn/paths", maxPathsList)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// Pins fetches the pinned roots (an admin token is needed).
func (r *Remote) Pins(ctx context.Context) ([]string, error) {
	b, err := r.get(ctx, "_cairn/pins", maxPinsList)
	if err != nil {
		return nil, err
	}
	var pins []struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(b, &pins); err != nil {
		return nil, fmt.Errorf("GET _cairn/pins: %w", err)
	}
	out := make([]string, len(pins))
	for i, p := range pins {
		out[i] = p.Path
	}
	return out, nil
}

// NarInfo fetches the narinfo the remote serves for a store hash. A path
// the remote does not hold yet is looked up at its upstreams, as for any
// client.
func (r *Remote) NarInfo(ctx context.Context, hash string) (*narinfo.Info, error) {
	b, err := r.get(ctx, hash+".narinfo", narinfo.MaxSize)
	if err != nil {
		return nil, err
	}
	info, err := narinfo.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("GET %s.narinfo: %w", hash, err)
	}
	return info, nil
}

// narPath is the remote's URL of a NAR's .nar.zst stream.
func narPath(narHash [32]byte) string {
	return "nar/" + nixbase32.EncodeToString(narHash[:]) + ".nar.zst"
}

// NARSize asks for the length of a NAR's .nar.zst stream.
func (r *Remote) NARSize(ctx context.Context, narHash [32]byte) (int64, error) {
	resp, err := r.do(ctx, http.MethodHead, narPath(narHash), nil, 0)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		// Still arriving from an upstream: its NarSize is close enough
		// for the free-space check.
		return 0, nil
	}
	return resp.ContentLength, nil
}

// NAR opens a NAR's .nar.zst stream: the stored frames as they are.
func (r *Remote) NAR(ctx context.Context, narHash [32]byte) (io.ReadCloser, error) {
	resp, err := r.do(ctx, http.MethodGet, narPath(narHash), nil, 0)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Listing fetches a store path's .ls listing.
func (r *Remote) Listing(ctx context.Context, hash string) ([]byte, error) {
	return r.get(ctx, hash+".ls", maxListing)
}

// Stored fetches the list of stored paths.
func (r *Remote) Stored(ctx context.Context) ([]string, error) { return r.Paths(ctx) }

// uploadExt is the extension Nix gives a NAR file in each compression.
var uploadExt = map[appliance.Compression]string{
	appliance.CompressionNone: ".nar", appliance.CompressionZstd: ".nar.zst",
	appliance.CompressionXZ: ".nar.xz", appliance.CompressionBzip2: ".nar.bz2",
}

// Add uploads a path with the push API: the NAR, checked on the way so
// that its last bytes go out only once it matched NarHash and NarSize
// (otherwise the upload is cut and the remote commits nothing), then its
// narinfo, which the remote accepts only once its references are there.
func (r *Remote) Add(ctx context.Context, info *narinfo.Info, body io.Reader, size int64, comp appliance.Compression) error {
	ext, ok := uploadExt[comp]
	if !ok {
		return fmt.Errorf("%s: %w: compression %q", info.StorePath, ErrRefused, comp)
	}
	if err := r.checkWrite(ctx); err != nil {
		return err
	}
	held := newHeldBody(ctx, body, comp, info.NarHash, info.NarSize)
	defer held.Close()
	resp, err := r.do(ctx, http.MethodPut, "nar/"+nixbase32.EncodeToString(info.NarHash[:])+ext, held, size)
	if herr := held.refusal(); herr != nil {
		return fmt.Errorf("%s: %w", info.StorePath, herr)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", info.StorePath, err)
	}
	resp.Body.Close()
	text := info.Marshal()
	resp, err = r.do(ctx, http.MethodPut, info.Hash()+".narinfo", bytes.NewReader(text), int64(len(text)))
	if err != nil {
		return fmt.Errorf("%s: %w", info.StorePath, err)
	}
	resp.Body.Close()
	return nil
}

// checkWrite makes sure, once, that the remote takes the token for
// writes before a NAR is sent: a server that refuses a request answers
// before it reads the body and drops the connection, so a client still
// sending a large body sees a reset connection, not the refusal. The probe
// is a PUT of nix-cache-info, which cairn authorizes like any upload and
// then never accepts.
func (r *Remote) checkWrite(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.canWrite {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.base+"/nix-cache-info", http.NoBody)
	if err != nil {
		return err
	}
	if r.token != "" {
		req.SetBasicAuth("cairn", r.token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("check the token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%w: %s", ErrUnauthorized, strings.TrimSpace(string(msg)))
	}
	r.canWrite = true
	return nil
}

// heldBody is an upload body that feeds a NAR check as it is read and
// holds back its last block until the check passed, so a NAR that does not
// match is never delivered whole. The HTTP client may close it from
// another goroutine, so every method locks.
type heldBody struct {
	mu       sync.Mutex
	src      io.Reader
	chk      *narCheck
	bufs     [2][]byte
	cur      int    // the buffer to fill next
	held     []byte // checked input not yet released
	out      []byte // released, not yet read
	verified bool
	err      error // sticky: the failure, or io.EOF once all is released
	refused  error // the check's failure
}

// heldBlock is how much of the input is read, checked and held at a time.
const heldBlock = 1 << 20

func newHeldBody(ctx context.Context, src io.Reader, comp appliance.Compression, narHash [32]byte, narSize uint64) *heldBody {
	return &heldBody{src: src, chk: newNARCheck(ctx, comp, narHash, narSize),
		bufs: [2][]byte{make([]byte, heldBlock), make([]byte, heldBlock)}}
}

// Read returns checked input, the last block only once the check passed.
func (h *heldBody) Read(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.out) == 0 {
		switch {
		case h.err != nil:
			return 0, h.err
		case h.verified:
			h.out, h.held, h.err = h.held, nil, io.EOF
		default:
			h.advance()
		}
	}
	n := copy(p, h.out)
	h.out = h.out[n:]
	return n, nil
}

// advance reads the next block into the check and releases the one held.
// At the end of the input it releases nothing until the check passed.
func (h *heldBody) advance() {
	buf := h.bufs[h.cur]
	n, err := io.ReadFull(h.src, buf)
	h.chk.Write(buf[:n])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		if verr := h.chk.Close(); verr != nil {
			h.refused = fmt.Errorf("%w: %w", ErrRefused, verr)
			h.out, h.held, h.err = nil, nil, h.refused
			return
		}
		h.out, h.held, h.verified = h.held, buf[:n], true
	case err != nil:
		h.out, h.held, h.err = nil, nil, err
		return
	default:
		h.out, h.held = h.held, buf[:n]
	}
	h.cur ^= 1
}

// refusal is the check's failure, when the whole input was read.
func (h *heldBody) refusal() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

// Close ends the check; later reads fail.
func (h *heldBody) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.chk.Close()
	if h.err == nil {
		h.err = io.ErrClosedPipe
	}
	return nil
}
