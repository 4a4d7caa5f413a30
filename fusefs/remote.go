package fusefs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"cairn/appliance/narinfo"
)

// ErrUnauthorized reports a remote cairn that refused the token.
var ErrUnauthorized = errors.New("remote refused the request: check --token")

// ErrNoRange reports a remote that answered a range request with something
// other than exactly that range; the mount never falls back to
// downloading whole NARs.
var ErrNoRange = errors.New("remote did not answer with the requested range")

// RemoteConfig is how to reach a remote cairn.
type RemoteConfig struct {
	URL   string // e.g. http://box:8501
	Token string // sent as the HTTP Basic password of user "cairn"; "" sends none
	// BlockSize is the size of the byte ranges fetched and cached.
	BlockSize int
	// Timeout bounds each request.
	Timeout time.Duration
	// NarInfos bounds how many narinfos are kept.
	NarInfos int
	// Client makes the requests; nil means one tuned for a LAN.
	Client *http.Client
}

// Defaults for RemoteConfig fields left zero.
const (
	DefaultBlockSize      = 256 << 10
	DefaultRequestTimeout = 60 * time.Second
	DefaultNarInfos       = 1 << 16
)

// Limits on what a remote may send.
const (
	maxPathsBytes   = 64 << 20
	maxListingBytes = 64 << 20
	// refreshEvery bounds how often a lookup of an unknown name refetches
	// the list of paths.
	refreshEvery = 500 * time.Millisecond
)

// Remote is the source over a running cairn's HTTP API: /_cairn/paths,
// narinfos, .ls listings and Range requests on nar/<narhash>.nar. It never
// asks for a path the remote does not list, so browsing never makes the
// remote fetch from its upstreams.
type Remote struct {
	cfg    RemoteConfig
	base   string
	client *http.Client
	infos  *cache[*PathInfo]

	mu      sync.Mutex
	known   map[string]bool // store hashes of the last path list
	knownAt time.Time
}

var _ Source = (*Remote)(nil)

// NewRemote returns the source for the cairn at cfg.URL.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("remote %q: want http://host:port or https://host", cfg.URL)
	}
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRequestTimeout
	}
	if cfg.NarInfos <= 0 {
		cfg.NarInfos = DefaultNarInfos
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // NARs are fetched as ranges of raw bytes
			ForceAttemptHTTP2:   true,
		}}
	}
	return &Remote{cfg: cfg, base: strings.TrimSuffix(u.String(), "/"), client: client,
		infos: newCache(int64(cfg.NarInfos), func(*PathInfo) int64 { return 1 })}, nil
}

// URL is the remote's base URL.
func (r *Remote) URL() string { return r.base }

// do sends a request and checks its status; the caller closes the body of
// a nil-error response.
func (r *Remote) do(ctx context.Context, method, path string, header http.Header, want ...int) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if r.cfg.Token != "" {
		req.SetBasicAuth("cairn", r.cfg.Token)
	}
	req.Header.Set("User-Agent", "cairn-mount")
	resp, err := r.client.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	reason, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusGone:
		return nil, fmt.Errorf("%s %s: %w", method, path, ErrNotFound)
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%s %s: %s: %w", method, path, resp.Status, ErrUnauthorized)
	}
	return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(reason)))
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// get fetches a small document, refusing more than limit bytes.
func (r *Remote) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	resp, err := r.do(ctx, http.MethodGet, path, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: more than %d bytes", path, limit)
	}
	return b, nil
}

// Paths fetches the remote's list of store paths.
func (r *Remote) Paths(ctx context.Context) ([]string, error) {
	b, err := r.get(ctx, "/_cairn/paths", maxPathsBytes)
	if err != nil {
		return nil, err
	}
	var out []string
	known := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 4096)
	for sc.Scan() {
		base := strings.TrimSpace(sc.Text())
		h, ok := splitBase(base)
		if !ok {
			continue
		}
		out = append(out, base)
		known[h] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("GET /_cairn/paths: %w", err)
	}
	r.mu.Lock()
	r.known, r.knownAt = known, time.Now()
	r.mu.Unlock()
	return out, nil
}

// listed reports whether the remote lists storeHash, refetching the list
// when it may be stale.
func (r *Remote) listed(ctx context.Context, storeHash string) (bool, error) {
	r.mu.Lock()
	ok, fresh := r.known[storeHash], time.Since(r.knownAt) < refreshEvery
	r.mu.Unlock()
	if ok || fresh {
		return ok, nil
	}
	if _, err := r.Paths(ctx); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.known[storeHash], nil
}

// Path fetches a listed path's narinfo; narinfos are kept, as they never
// change.
func (r *Remote) Path(ctx context.Context, storeHash string) (*PathInfo, error) {
	return r.infos.get(ctx, ctx, storeHash, func(ctx context.Context) (*PathInfo, error) {
		ok, err := r.listed(ctx, storeHash)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("path %s: %w", storeHash, ErrNotFound)
		}
		b, err := r.get(ctx, "/"+storeHash+".narinfo", narinfo.MaxSize)
		if err != nil {
			return nil, err
		}
		info, err := narinfo.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("narinfo %s: %w", storeHash, err)
		}
		if info.Hash() != storeHash {
			return nil, fmt.Errorf("narinfo %s: names %s", storeHash, info.StorePath)
		}
		return pathInfo(info)
	})
}

// Listing fetches a path's .ls listing.
func (r *Remote) Listing(ctx context.Context, p *PathInfo) ([]byte, error) {
	return r.get(ctx, "/"+p.Hash()+".ls", maxListingBytes)
}

// NARSize asks the remote for a NAR's length.
func (r *Remote) NARSize(ctx context.Context, narHash [32]byte) (int64, error) {
	resp, err := r.do(ctx, http.MethodHead, "/nar/"+narName(narHash), nil, http.StatusOK)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		return 0, fmt.Errorf("HEAD /nar/%s: no Content-Length", narName(narHash))
	}
	return resp.ContentLength, nil
}

// OpenNAR returns a remote NAR whose blocks are fixed-size byte ranges,
// each fetched with one Range request.
func (r *Remote) OpenNAR(ctx context.Context, narHash [32]byte, size int64) (NAR, error) {
	return &rangedNAR{r: r, hash: narHash, size: size, bs: int64(r.cfg.BlockSize)}, nil
}

// rangedNAR is a remote NAR as blocks of bs bytes.
type rangedNAR struct {
	r    *Remote
	hash [32]byte
	size int64
	bs   int64
}

func (n *rangedNAR) Size() int64 { return n.size }

func (n *rangedNAR) Blocks() int { return int((n.size + n.bs - 1) / n.bs) }

func (n *rangedNAR) Block(i int) Block {
	off := int64(i) * n.bs
	return Block{Key: string(n.hash[:]) + strconv.Itoa(i), Off: off, Size: int(min(n.bs, n.size-off))}
}

func (n *rangedNAR) Find(off int64) int { return int(off / n.bs) }

// Load fetches block i with a Range request.
func (n *rangedNAR) Load(ctx context.Context, i int) ([]byte, error) {
	blocks, err := n.LoadRun(ctx, i, 1)
	if err != nil {
		return nil, err
	}
	return blocks[0], nil
}

// LoadRun fetches blocks first to first+count-1 with one Range request.
// Anything but a 206 with exactly that range is refused before its body
// is read.
func (n *rangedNAR) LoadRun(ctx context.Context, first, count int) ([][]byte, error) {
	start := n.Block(first).Off
	lastBlock := n.Block(first + count - 1)
	last := lastBlock.Off + int64(lastBlock.Size) - 1
	path := "/nar/" + narName(n.hash)
	resp, err := n.r.do(ctx, http.MethodGet, path,
		http.Header{"Range": {"bytes=" + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(last, 10)}},
		http.StatusPartialContent, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	want := fmt.Sprintf("bytes %d-%d/%d", start, last, n.size)
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want || resp.ContentLength != last-start+1 {
		return nil, fmt.Errorf("GET %s %s: %w: got %s %q, %d bytes", path, want, ErrNoRange,
			resp.Status, resp.Header.Get("Content-Range"), resp.ContentLength)
	}
	out := make([][]byte, count)
	for k := range out {
		out[k] = make([]byte, n.Block(first+k).Size)
		if _, err := io.ReadFull(resp.Body, out[k]); err != nil {
			return nil, fmt.Errorf("GET %s %s: %w", path, want, err)
		}
	}
	return out, nil
}
