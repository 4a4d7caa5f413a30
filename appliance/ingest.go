package appliance

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"cairn/cdc"
	"cairn/kv"
)

// Errors an ingest fails with, for callers to branch on.
var (
	// ErrHashMismatch: the NAR's sha256 differs from the expected NarHash.
	ErrHashMismatch = errors.New("NarHash mismatch")
	// ErrSizeMismatch: the NAR's length differs from the expected NarSize.
	ErrSizeMismatch = errors.New("NarSize mismatch")
	// ErrBadBody: the body could not be decompressed.
	ErrBadBody = errors.New("body does not decode")
	// ErrBadNAR: the plaintext is not a valid NAR.
	ErrBadNAR = cdc.ErrBadNAR
)

// Want is what an ingest must match.
type Want struct {
	NarHash [32]byte // the expected sha256; zero means unknown, as for an upload
	NarSize uint64   // the expected length; zero means unknown
	Info    *NarInfo // committed with the NAR when set; its NarHash and NarSize are expected
	Upload  string   // the name an upload arrived under, committed with the NAR when set
	// Abort, when set, ends a body read that blocks: it runs when the
	// ingest fails part-way, so that a stalled client is not waited for.
	Abort func()
}

// Result describes a finished ingest.
type Result struct {
	NarHash   [32]byte
	NarSize   uint64
	FileSize  uint64 // bytes of the .nar.zst stream at commit
	Chunks    int    // chunks in the NAR
	NewChunks int    // chunks this ingest wrote
	NewBytes  uint64 // frame bytes this ingest wrote
	Existed   bool   // the NAR was already stored; the body was not read
	Coalesced bool   // a concurrent ingest of the same NAR did the work
}

// flight is an ingest in progress, shared by every caller asking for the
// same NarHash.
type flight struct {
	live *Live
	done chan struct{}
	res  *Result
	err  error
}

// FormatHash renders a NAR hash as a narinfo does: sha256:<nix32>.
func FormatHash(h [32]byte) string { return "sha256:" + nixbase32.EncodeToString(h[:]) }

// Ingest reads a NAR body in the given compression, checks it against want,
// and stores it chunked and deduplicated, with want.Info when set. Nothing
// is committed unless the sha256 and length match. Concurrent ingests of the
// same NarHash are coalesced: one reads its body, the others wait for it.
func (s *Store) Ingest(ctx context.Context, want Want, body io.Reader, comp Compression) (*Result, error) {
	if want.Info != nil {
		want.NarHash, want.NarSize = want.Info.NarHash, want.Info.NarSize
	}
	if want.NarHash == ([32]byte{}) {
		ictx, cancel := context.WithCancelCause(ctx)
		res, err := s.ingest(ictx, cancel, want, body, comp, nil)
		if err != nil {
			return nil, fmt.Errorf("ingest upload: %w", err)
		}
		return res, nil
	}
	key := FormatHash(want.NarHash)
	coalesced := false
	for {
		res, err := s.existing(want)
		if err != nil || res != nil {
			if res != nil && coalesced {
				res.Existed, res.Coalesced = false, true
			}
			return res, err
		}
		s.flightMu.Lock()
		f := s.flights[want.NarHash]
		if f == nil {
			if stored, err := s.ix.HasManifest(want.NarHash); err != nil || stored {
				s.flightMu.Unlock()
				if err != nil {
					return nil, err
				}
				continue // committed since the look above
			}
			f = s.takeOff(want)
			s.flightMu.Unlock()
			ictx, cancel := context.WithCancelCause(ctx)
			res, err := s.ingest(ictx, cancel, want, body, comp, f.live)
			s.land(f, want, res, err)
			if f.err != nil {
				return nil, fmt.Errorf("ingest %s: %w", key, f.err)
			}
			return f.res, nil
		}
		s.flightMu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ingest %s: %w", key, ctx.Err())
		case <-f.done:
		}
		// On success the loop's next look finds the NAR and checks our
		// NarSize and records our narinfo; on failure, perhaps of the other
		// body, ours gets its own try.
		coalesced = f.err == nil
	}
}

// takeOff registers a new flight for want.NarHash; flightMu is held.
func (s *Store) takeOff(want Want) *flight {
	f := &flight{done: make(chan struct{}), live: newLive(s, want.NarHash, want.NarSize)}
	s.flights[want.NarHash] = f
	return f
}

// running counts an ingest starting (+1) or ending (-1) and tells
// Config.Running. Uploads count as well as flights.
func (s *Store) running(delta int) {
	if s.cfg.Running == nil {
		return
	}
	s.runMu.Lock()
	defer s.runMu.Unlock() // calls stay in order: no stale count wins
	s.runs += delta
	s.cfg.Running(s.runs)
}

// land records a flight's outcome and wakes everyone waiting on it.
func (s *Store) land(f *flight, want Want, res *Result, err error) {
	f.res, f.err = res, err
	f.live.finish(err)
	s.flightMu.Lock()
	delete(s.flights, want.NarHash)
	s.flightMu.Unlock()
	close(f.done)
}

// Opener opens a NAR body for Start, in its compression.
type Opener func(ctx context.Context) (io.ReadCloser, Compression, error)

// Start begins ingesting want in the background from the body open
// returns, unless an ingest of the same NarHash is already running, and
// returns the live view of whichever runs, and whether this call started
// it. It returns nil when the NAR is already stored, after recording
// want.Info. ctx bounds the ingest, not the call.
func (s *Store) Start(ctx context.Context, want Want, open Opener) (*Live, bool, error) {
	if want.Info != nil {
		want.NarHash, want.NarSize = want.Info.NarHash, want.Info.NarSize
	}
	if res, err := s.existing(want); err != nil || res != nil {
		return nil, false, err
	}
	s.flightMu.Lock()
	if f := s.flights[want.NarHash]; f != nil {
		s.flightMu.Unlock()
		return f.live, false, nil
	}
	// A flight lands only after its commit: no flight and no manifest
	// under the lock means nobody holds this NAR yet.
	if stored, err := s.ix.HasManifest(want.NarHash); err != nil || stored {
		s.flightMu.Unlock()
		if err == nil {
			_, err = s.existing(want)
		}
		return nil, false, err
	}
	f := s.takeOff(want)
	s.flightMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// The body is opened with the ingest's context, so that a NAR
		// found bad part-way ends the download at once.
		ictx, cancel := context.WithCancelCause(ctx)
		body, comp, err := open(ictx)
		if err != nil {
			cancel(nil)
			s.land(f, want, nil, fmt.Errorf("ingest %s: %w", FormatHash(want.NarHash), err))
			return
		}
		res, err := s.ingest(ictx, cancel, want, body, comp, f.live)
		body.Close()
		if err != nil {
			err = fmt.Errorf("ingest %s: %w", FormatHash(want.NarHash), err)
		}
		s.land(f, want, res, err)
	}()
	return f.live, true, nil
}

// Record stores a narinfo for a NAR that is already committed.
func (s *Store) Record(info *NarInfo) error {
	res, err := s.existing(Want{NarHash: info.NarHash, NarSize: info.NarSize, Info: info})
	if err == nil && res == nil {
		err = fmt.Errorf("record %s: %w", info.StorePath, ErrNotFound)
	}
	return err
}

// existing returns a Result when the NAR is already stored, after recording
// want.Info for it.
func (s *Store) existing(want Want) (*Result, error) {
	m, err := s.ix.Manifest(want.NarHash)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if m.NarSize != want.NarSize && want.NarSize != 0 {
		return nil, fmt.Errorf("ingest %s: %w: stored NAR has %d bytes, want %d", FormatHash(want.NarHash), ErrSizeMismatch, m.NarSize, want.NarSize)
	}
	if want.Info != nil {
		if err := s.ix.PutNarInfo(want.Info); err != nil {
			return nil, err
		}
	}
	return &Result{NarHash: m.NarHash, NarSize: m.NarSize, FileSize: m.FileSize(), Chunks: len(m.Chunks), Existed: true}, nil
}

type chunkJob struct {
	seq int
	raw *frameBuf // a copy of the chunk's plaintext, released once framed
}

type chunkDone struct {
	seq    int
	ref    cdc.ChunkRef
	frame  *frameBuf // nil when the chunk was already stored; order holds it
	marked bool      // the chunk keeps its write mark until the ingest ends
	err    error
}

// pipeline is one running ingest: the calling goroutine hashes, lists and
// cuts the plaintext; workers hash chunks and write new ones; one goroutine
// puts the results back in order.
type pipeline struct {
	s      *Store
	ctx    context.Context
	cancel context.CancelCauseFunc
	batch  *kv.Batch
	live   *Live // followers of this ingest, or nil

	jobs    chan chunkJob
	results chan chunkDone
	slots   chan struct{} // bounds the chunks held in memory
	seq     int

	// Owned by the ordering goroutine until it finishes.
	refs      []cdc.ChunkRef
	pins      []cdc.ID
	marked    []cdc.ID // write marks still held
	written   []cdc.ID
	newBytes  uint64
	fileSize  uint64
	firstErr  error
	orderDone chan struct{}
}

// ingest runs one ingest under ctx, which cancel cancels: a failure part-way
// cancels it at once, which also ends a body read under it.
func (s *Store) ingest(ctx context.Context, cancel context.CancelCauseFunc, want Want, body io.Reader, comp Compression, live *Live) (res *Result, err error) {
	defer cancel(nil)
	s.running(1)
	defer s.running(-1)
	if want.Abort != nil {
		stop := context.AfterFunc(ctx, want.Abort)
		defer stop() // before cancel(nil): a finished ingest aborts nothing
	}
	plain, err := decompress(ctx, comp, body, s.cfg.XZ, want.Abort)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBody, err)
	}
	defer plain.Close()

	w := s.cfg.Workers
	p := &pipeline{
		s: s, ctx: ctx, cancel: cancel, batch: s.chunks.NewBatch(), live: live,
		jobs:      make(chan chunkJob, w),
		results:   make(chan chunkDone, w),
		slots:     make(chan struct{}, 4*w),
		orderDone: make(chan struct{}),
	}
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() { defer wg.Done(); p.work() }()
	}
	go p.order()

	narHash := sha256.New()
	listing := cdc.NewListingParser()
	chunker, _ := cdc.NewChunker(s.cfg.Chunker, p.emit)
	limit := want.NarSize
	if limit == 0 {
		limit = s.cfg.MaxNARSize
	}
	size, readErr := copyNAR(plain, limit, want.NarSize != 0, narHash, listing, chunker, cancel)
	if readErr == nil {
		readErr = chunker.Close()
	}
	close(p.jobs)
	wg.Wait()
	close(p.results)
	<-p.orderDone

	defer func() {
		if err != nil {
			p.abandon()
		}
	}()
	if p.firstErr != nil {
		return nil, p.firstErr
	}
	if readErr != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(readErr, cdc.ErrBadNAR) && !errors.Is(readErr, ErrSizeMismatch) {
			return nil, cause
		}
		return nil, readErr
	}
	if want.NarSize != 0 && size != want.NarSize {
		return nil, fmt.Errorf("%w: got %d bytes, want %d", ErrSizeMismatch, size, want.NarSize)
	}
	if err := listing.Close(); err != nil {
		return nil, err
	}
	var got [32]byte
	narHash.Sum(got[:0])
	if want.NarHash != ([32]byte{}) && got != want.NarHash {
		return nil, fmt.Errorf("%w: got %s, want %s", ErrHashMismatch, FormatHash(got), FormatHash(want.NarHash))
	}

	// Invariant 2: every chunk durable before the manifest names it.
	if err := p.batch.Flush(); err != nil {
		return nil, fmt.Errorf("write chunks: %w", err)
	}
	if err := s.chunks.Sync(); err != nil {
		return nil, fmt.Errorf("sync chunks: %w", err)
	}
	m := &kv.Manifest{NarHash: got, NarSize: size, Chunks: p.refs,
		Listing: s.codec.CompressFast(nil, cdc.ListingJSON(listing.Entries()))}
	if want.Info != nil && want.Info.Added == 0 {
		info := *want.Info
		info.Added = time.Now().Unix()
		want.Info = &info
	}
	var up *kv.Upload
	if want.Upload != "" {
		up = &kv.Upload{Name: want.Upload, At: time.Now()}
	}
	if _, err := s.ix.CommitNAR(m, want.Info, up); err != nil {
		return nil, err
	}
	s.doneWriting(p.marked...)
	s.unpin(p.pins)
	s.kickRecompress()
	return &Result{NarHash: got, NarSize: size, FileSize: p.fileSize,
		Chunks: len(m.Chunks), NewChunks: len(p.written), NewBytes: p.newBytes}, nil
}

// Plaintext moves through an ingest in blocks of feedBlock bytes, feedBlocks
// of them in flight between the reader, the chunker and the hasher.
const (
	feedBlock  = 1 << 20
	feedBlocks = 4
	// feedMin is how much a block waits for before it moves on: the body
	// may arrive in small reads, and each block costs channel hand-offs.
	feedMin = 128 << 10
)

// copyNAR reads the plaintext in blocks and passes each to the chunker, on
// the calling goroutine, and to the NAR hash and the listing parser, on
// another, while a third reads (and so decompresses) ahead. It refuses more
// than limit bytes. A bad NAR cancels the ingest through abort at once.
func copyNAR(r io.Reader, limit uint64, exact bool, narHash hash.Hash, listing *cdc.ListingParser, chunker *cdc.Chunker, abort context.CancelCauseFunc) (uint64, error) {
	free := make(chan []byte, feedBlocks)
	for range feedBlocks {
		free <- make([]byte, feedBlock)
	}
	blocks := make(chan feedBlockRead, feedBlocks)
	stop := make(chan struct{})
	go readBlocks(r, limit, exact, free, blocks, stop)

	toHash := make(chan []byte, feedBlocks)
	hashed := make(chan error, 1)
	go func() {
		var err error
		for b := range toHash {
			if err == nil {
				narHash.Write(b)
				if _, err = listing.Write(b); err != nil {
					abort(err)
				}
			}
			free <- b[:cap(b)]
		}
		hashed <- err
	}()

	var size uint64
	var chunkErr, readErr error
	for blk := range blocks {
		size += uint64(len(blk.data))
		if chunkErr == nil && len(blk.data) > 0 {
			_, chunkErr = chunker.Write(blk.data)
		}
		toHash <- blk.data
		if blk.err != nil {
			readErr = blk.err
		}
		if chunkErr != nil {
			break
		}
	}
	// The reader may still be waiting for a free block or to hand one on.
	close(stop)
	for blk := range blocks {
		toHash <- blk.data
	}
	close(toHash)
	hashErr := <-hashed
	switch {
	case hashErr != nil:
		return size, hashErr
	case chunkErr != nil:
		return size, chunkErr
	case readErr == io.EOF:
		return size, nil
	}
	return size, readErr
}

// feedBlockRead is one block of plaintext, and the error that ended the
// body after it (io.EOF at its end).
type feedBlockRead struct {
	data []byte
	err  error
}

// readBlocks fills free blocks from r and hands them on until the body
// ends, fails, passes limit, or stop closes.
func readBlocks(r io.Reader, limit uint64, exact bool, free <-chan []byte, blocks chan<- feedBlockRead, stop <-chan struct{}) {
	defer close(blocks)
	var size uint64
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for {
		var buf []byte
		select {
		case buf = <-free:
		case <-stop:
			return
		}
		n, err := 0, error(nil)
		for n < feedMin && err == nil {
			if stopped() {
				return // nothing reads on after the ingest failed
			}
			var k int
			k, err = r.Read(buf[n:])
			n += k
		}
		size += uint64(n)
		switch {
		case size > limit && exact:
			err = fmt.Errorf("%w: NAR is longer than the expected %d bytes", ErrSizeMismatch, limit)
		case size > limit:
			err = fmt.Errorf("%w: NAR is longer than the %d-byte limit", ErrSizeMismatch, limit)
		case err != nil && err != io.EOF:
			err = fmt.Errorf("%w: %w", ErrBadBody, err)
		}
		if size > limit {
			n = 0 // nothing past the limit goes further
		}
		select {
		case blocks <- feedBlockRead{data: buf[:n], err: err}:
		case <-stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// emit hands a chunk from the chunker to the workers.
func (p *pipeline) emit(chunk []byte) error {
	select {
	case p.slots <- struct{}{}:
	case <-p.ctx.Done():
		return context.Cause(p.ctx)
	}
	raw := p.s.frames.get(len(chunk)) // the frames' pool: a chunk is shorter
	raw.b = append(raw.b, chunk...)
	raw.refs.Store(1)
	select {
	case p.jobs <- chunkJob{seq: p.seq, raw: raw}:
		p.seq++
		return nil
	case <-p.ctx.Done():
		return context.Cause(p.ctx)
	}
}

// work hashes chunks and writes those not stored yet, as stored-block
// frames unless CompressOnIngest is set. A chunk is pinned before it is
// looked up, so GC cannot delete it between the look-up and the commit.
func (p *pipeline) work() {
	for j := range p.jobs {
		raw := j.raw.b
		d := chunkDone{seq: j.seq}
		id := cdc.Sum(raw)
		p.s.pinForWrite(id)
		d.ref = cdc.ChunkRef{ID: id, Raw: uint32(len(raw))}
		comp, level, stored, err := p.s.ix.ChunkFrame(id)
		d.marked = err == nil && !stored
		if !d.marked {
			p.s.doneWriting(id)
		}
		switch {
		case err != nil:
			d.err = err
		case stored:
			d.ref.Comp, d.ref.Level = comp, level
		default:
			p.s.willWrite(id)
			var f *frameBuf
			if p.s.cfg.CompressOnIngest {
				f = &frameBuf{b: p.s.codec.Compress(nil, raw)}
				d.ref.Level = uint8(p.s.cfg.Level)
			} else {
				f = p.s.frames.get(cdc.StoredSize(len(raw)))
				f.b = cdc.Store(f.b, raw)
			}
			f.refs.Store(2) // the batch's and the ordering goroutine's
			d.frame = f
			d.ref.Comp = uint32(len(f.b))
			d.err = p.batch.PutFunc(id, f.b, f.release)
		}
		j.raw.release()
		p.results <- d
	}
}

// order consumes results in chunk order, building the chunk list.
func (p *pipeline) order() {
	defer close(p.orderDone)
	pending := map[int]chunkDone{}
	next := 0
	for d := range p.results {
		p.pins = append(p.pins, d.ref.ID)
		if d.marked {
			p.marked = append(p.marked, d.ref.ID)
		}
		if d.frame != nil {
			p.written = append(p.written, d.ref.ID)
			p.newBytes += uint64(len(d.frame.b))
		}
		pending[d.seq] = d
		for {
			d, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			<-p.slots
			switch {
			case p.firstErr == nil && d.err != nil:
				p.fail(d.err)
			case p.firstErr == nil:
				p.fileSize += uint64(d.ref.Comp)
				p.refs = append(p.refs, d.ref)
				if p.live != nil {
					p.live.publish(d.ref, d.frame) // which takes over the hold
					continue
				}
			}
			if d.frame != nil {
				d.frame.release()
			}
		}
	}
}

func (p *pipeline) fail(err error) {
	p.firstErr = err
	p.cancel(err)
}

// abandon undoes a failed ingest: what its batch has not written through
// is dropped, and the chunks it did write that nobody references are
// deleted, so a rejected NAR leaves nothing behind.
func (p *pipeline) abandon() {
	p.batch.Cancel()
	p.s.doneWriting(p.marked...)
	p.s.unpin(p.pins)
	if _, err := p.s.deleteUnreferenced(p.written); err != nil {
		p.s.cfg.Logger.Warn("abandon ingest: delete unreferenced chunks; GC will sweep them", "err", err)
	}
}
