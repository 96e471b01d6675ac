package core

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// sniffLen is how many leading bytes are kept to guess a mimetype from content.
const sniffLen = 512

// BeginUpload starts a streaming upload for principal p. The returned Upload writes shards as it
// reads; nothing is visible to anyone until Commit succeeds.
func (s *Service) BeginUpload(ctx context.Context, p Principal) (Upload, error) {
	if err := s.AuthorizeUpload(p); err != nil {
		return nil, err
	}
	cfg, err := s.clusterConfig()
	if err != nil {
		return nil, err
	}
	codec, err := s.codec(cfg.Geometry, cfg.BlockSize)
	if err != nil {
		return nil, fmt.Errorf("codec for %s: %w", cfg.Geometry, err)
	}
	return &upload{
		s: s, ctx: ctx, principal: p, fileID: NewFileID(), cfg: cfg, codec: codec,
		quorum: s.writeQuorum(cfg.Geometry), hash: sha256.New(), started: time.Now(),
	}, nil
}

// upload is one streaming upload. It is used by a single goroutine (the request's).
type upload struct {
	s         *Service
	ctx       context.Context
	principal Principal
	fileID    string
	cfg       fsm.ClusterConfig
	codec     *erasure.Codec
	quorum    int

	size     int64
	hash     hash.Hash
	sniff    []byte
	segments []fsm.Segment

	started        time.Time
	read           bool // ReadFrom completed successfully
	outcomeUnknown bool // Commit failed in a way that may still have committed
	failed         error
	committed      bool
	aborted        bool
}

// ReadFrom streams r through the erasure encoder to the shard nodes, one segment at a time.
func (u *upload) ReadFrom(r io.Reader) (int64, error) {
	if u.read || u.failed != nil || u.committed || u.aborted {
		return 0, errors.New("upload: ReadFrom called twice or after the upload ended")
	}
	n, err := u.readFrom(r)
	if err != nil {
		u.failed = err
		return n, err
	}
	u.read = true
	return n, nil
}

func (u *upload) readFrom(r io.Reader) (int64, error) {
	blocks := &blockReader{r: r, codec: u.codec}
	defer blocks.release()
	enc := u.codec.NewBlockEncoder()
	defer u.codec.PutBlockEncoder(enc)
	var seg *segmentWriter
	// On any failure the segment in flight is torn down; Abort removes what was committed.
	defer func() {
		if seg != nil {
			seg.cancel()
			seg.wait()
		}
	}()
	var total int64
	for {
		var n int
		var rerr error
		if seg != nil {
			// Inside a segment, after a full block: the next one is read straight into the data
			// shards' frames.
			var err error
			if n, rerr, err = u.writeNextBlock(seg, enc, blocks, total, nil); err != nil {
				return total, err
			}
		} else {
			var block []byte
			var more bool
			block, more, rerr = blocks.next()
			if more {
				// A block longer than the small buffer: its head, and the rest straight into
				// the frames of the segment it opens.
				if len(u.sniff) < sniffLen {
					u.sniff = append(u.sniff, block[:min(len(block), sniffLen-len(u.sniff))]...)
				}
				var err error
				if seg, err = u.openSegment(enc, len(u.segments), total); err != nil {
					return total, err
				}
				if n, rerr, err = u.writeNextBlock(seg, enc, blocks, total, block); err != nil {
					return total, err
				}
			} else if n = len(block); n > 0 {
				if total+int64(n) > u.s.cfg.MaxFileSize {
					return total, &FileTooLargeError{Limit: u.s.cfg.MaxFileSize}
				}
				u.hash.Write(block)
				if len(u.sniff) < sniffLen {
					u.sniff = append(u.sniff, block[:min(n, sniffLen-len(u.sniff))]...)
				}
				if rerr == io.EOF && u.fitsOneRequest(enc, n) {
					// The last segment is this one small block: each shard goes out whole.
					if err := u.putWholeSegment(enc, block, total); err != nil {
						return total, err
					}
					total += int64(n)
					u.size = total
					return total, nil
				}
				var err error
				if seg, err = u.openSegment(enc, len(u.segments), total); err != nil {
					return total, err
				}
				if err := seg.write(enc, block); err != nil {
					return total, err
				}
			}
		}
		if n > 0 {
			total += int64(n)
			seg.size += int64(n)
			seg.blocks++
			if seg.blocks == u.cfg.BlocksPerSegment {
				err := u.finishSegment(seg)
				seg = nil
				if err != nil {
					return total, err
				}
			}
		}
		switch {
		case rerr == io.EOF:
			u.size = total
			if seg != nil {
				err := u.finishSegment(seg)
				seg = nil
				if err != nil {
					return total, err
				}
			}
			return total, nil
		case rerr != nil:
			return total, rerr
		}
		if err := u.ctx.Err(); err != nil {
			return total, err
		}
	}
}

// writeNextBlock reads the next block of the body straight into the data chunks of the shard
// streams' free buffers, after head (what of the block was already read), so a full block is
// never copied into a block buffer and out again (that copy was 8 % of a node's CPU on PUT
// 4 MiB), and writes it to seg. Only the last, short block of a body is gathered into a
// contiguous buffer and encoded as usual, since its chunks are shorter. It returns the data bytes
// written and the body's io.EOF or error; err is a failure to write.
func (u *upload) writeNextBlock(seg *segmentWriter, enc *erasure.BlockEncoder, blocks *blockReader, total int64, head []byte) (n int, rerr, err error) {
	blockSize, k, cl := u.codec.BlockSize(), u.cfg.Geometry.Data, enc.DataChunkLen()
	seg.takeFrames(enc.FrameLen(blockSize))
	// chunkEnd is where chunk i's data ends (the last ones may be partly or all padding).
	chunkEnd := func(i int) int { return min(cl, max(0, blockSize-i*cl)) }
	for n < len(head) {
		i, off := n/cl, n%cl
		n += copy(seg.bufs[i][off:chunkEnd(i)], head[n:])
	}
	for n < blockSize && rerr == nil {
		i, off := n/cl, n%cl
		var m int
		m, rerr = io.ReadFull(blocks.r, seg.bufs[i][off:chunkEnd(i)])
		n += m
	}
	if errors.Is(rerr, io.ErrUnexpectedEOF) {
		rerr = io.EOF
	}
	switch {
	case n == 0 || (rerr != nil && rerr != io.EOF):
		seg.giveBack()
		return 0, rerr, nil
	case total+int64(n) > u.s.cfg.MaxFileSize:
		seg.giveBack()
		return 0, nil, &FileTooLargeError{Limit: u.s.cfg.MaxFileSize}
	}
	var frames [][]byte
	if n == blockSize {
		for i := range k {
			u.hash.Write(seg.bufs[i][:chunkEnd(i)])
			clear(seg.bufs[i][chunkEnd(i):cl]) // padding, when k does not divide the block size
		}
		frames, err = enc.EncodeDataInPlace(seg.bufs)
	} else {
		block := blocks.gather(seg.bufs[:k], cl, n)
		u.hash.Write(block)
		frames, err = enc.EncodeInto(block, seg.bufs)
	}
	if err != nil {
		seg.giveBack()
		return 0, nil, fmt.Errorf("encode block: %w", err)
	}
	return n, rerr, seg.send(frames)
}

// place picks the nodes of segment index's shards (fewer than k+m when fewer are available, but
// at least the write quorum).
func (u *upload) place(index int) ([]string, error) {
	nodes := erasure.Place(u.fileID+"/"+strconv.Itoa(index), u.s.placer.ShardCandidates(), u.cfg.Geometry.Total())
	if len(nodes) < u.quorum {
		if full := u.s.placer.FullNodes(); full > 0 && len(nodes)+full >= u.quorum {
			return nil, fmt.Errorf("%w: %d nodes have room, %d are full, write quorum is %d", ErrNoSpace, len(nodes), full, u.quorum)
		}
		return nil, fmt.Errorf("%w: %d shard nodes available, write quorum is %d", ErrUnavailable, len(nodes), u.quorum)
	}
	return nodes, nil
}

// shardFormat is the format new shards are written in (v1 only during a rolling upgrade).
func (u *upload) shardFormat() uint16 {
	if u.s.cfg.ShardFormat != nil {
		return u.s.cfg.ShardFormat()
	}
	return erasure.FormatCurrent
}

// headerLen is how many bytes a shard of format opens with.
func headerLen(format uint16) int {
	if format == erasure.FormatV2 {
		return erasure.ShardHeaderLen
	}
	return 0
}

// fitsOneRequest says whether a segment of one n-byte block is small enough to be put whole:
// each shard (header and frame) fits in one of the codec's small pooled buffers.
func (u *upload) fitsOneRequest(enc *erasure.BlockEncoder, n int) bool {
	return headerLen(u.shardFormat())+enc.FrameLen(n) <= u.codec.SmallBufferLen()
}

// putWholeSegment writes a segment of one small block: it encodes the block into one pooled buffer
// per shard, header first, and puts each shard as one request of known length, all at once. A
// small file's shard then crosses to its node in one write, with no stream, queue or chunked
// encoding. Each put may take twice the stall timeout: one for the body, one for the durable
// ack, the bounds a streamed shard gets.
func (u *upload) putWholeSegment(enc *erasure.BlockEncoder, block []byte, offset int64) error {
	index := len(u.segments)
	nodes, err := u.place(index)
	if err != nil {
		return err
	}
	format := u.shardFormat()
	seg := erasure.SegmentID{File: u.fileID, Segment: index}
	enc.StartFormat(seg, format)
	total := u.cfg.Geometry.Total()
	shards := make([][]byte, total) // pooled buffers: header, then the frame
	frames := make([][]byte, total) // views of shards[i] after the header, for EncodeInto
	errs := make([]error, total)
	defer func() {
		for i, b := range shards {
			// A failed put's body may still be in the transport's hands (an early answer):
			// its buffer is left to the garbage collector.
			if errs[i] == nil {
				u.codec.PutBuffer(b)
			}
		}
	}()
	for i := range shards {
		b := u.codec.SmallBuffer()
		if format == erasure.FormatV2 {
			b = erasure.AppendShardHeader(b, seg.Shard(i))
		}
		shards[i], frames[i] = b, b[len(b):]
	}
	encoded, err := enc.EncodeInto(block, frames)
	if err != nil {
		return fmt.Errorf("encode block: %w", err)
	}
	meta := fsm.Segment{Offset: offset, Size: int64(len(block)), Nodes: make([]string, total)}
	copy(meta.Nodes, nodes)
	// Recorded before any byte is sent, so that Abort can find every shard.
	u.segments = append(u.segments, meta)
	var wg sync.WaitGroup
	for i, node := range nodes {
		body := shards[i][:len(shards[i])+len(encoded[i])]
		wg.Go(func() { errs[i] = u.putShard(node, seg.Shard(i), body) })
	}
	wg.Wait()
	acked := 0
	var cause error
	for i, err := range errs[:len(nodes)] {
		if err != nil {
			u.segments[index].Nodes[i] = "" // reads never wait for it; the GC removes whatever it left
			cause = cmp.Or(cause, err)
		} else {
			acked++
		}
	}
	if acked < u.quorum {
		return fmt.Errorf("%w: segment %d: %d of %d shards durable, write quorum is %d: %w",
			quorumFailure(cause), index, acked, total, u.quorum, cause)
	}
	if acked < total {
		u.s.metrics.degradedSegment()
		u.s.log.Warn("segment written degraded", "file", u.fileID, "segment", index, "shards", acked)
	}
	return nil
}

// putShard puts one whole shard, given up after twice the stall timeout.
func (u *upload) putShard(node string, id erasure.ShardID, shard []byte) error {
	ctx, cancel := context.WithTimeout(u.ctx, 2*u.s.cfg.ShardStallTimeout)
	defer cancel()
	if err := u.s.shards.PutShard(ctx, node, id, bytes.NewReader(shard)); err != nil {
		return fmt.Errorf("put shard %s on %s: %w", id, node, err)
	}
	return nil
}

// openSegment places a segment's shards, opens one stream per placed shard and starts enc on the
// segment.
func (u *upload) openSegment(enc *erasure.BlockEncoder, index int, offset int64) (*segmentWriter, error) {
	g := u.cfg.Geometry
	nodes, err := u.place(index)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(u.ctx)
	format := u.shardFormat()
	seg := &segmentWriter{
		format: format,
		index:  index, offset: offset, quorum: u.quorum, cancel: cancel,
		streams: make([]*shardStream, g.Total()), ackTimeout: u.s.cfg.ShardStallTimeout,
	}
	// Record the segment before any byte is sent so that Abort can find every shard.
	u.segments = append(u.segments, fsm.Segment{Offset: offset, Nodes: make([]string, g.Total())})
	for i, node := range nodes {
		id := erasure.ShardID{File: u.fileID, Segment: index, Index: i}
		seg.streams[i] = u.s.startShardStream(ctx, node, id, u.s.cfg.ShardPipelineDepth, u.codec)
		u.segments[index].Nodes[i] = node
		// A v2 shard opens with its header (format version and identity); a v1 shard has none.
		if seg.format == erasure.FormatV2 {
			seg.streams[i].send(erasure.AppendShardHeader(nil, id))
		}
	}
	enc.StartFormat(erasure.SegmentID{File: u.fileID, Segment: index}, format)
	return seg, nil
}

// finishSegment closes the segment's streams, waits for the shard nodes' durable acks and records
// which shards made it. Fewer acks than the write quorum fails the upload.
func (u *upload) finishSegment(seg *segmentWriter) error {
	seg.closeAll()
	acked := seg.wait()
	meta := &u.segments[seg.index]
	meta.Size = seg.size
	for i, st := range seg.streams {
		if st == nil || st.err != nil {
			meta.Nodes[i] = ""
		}
	}
	seg.cancel()
	if acked < u.quorum {
		return fmt.Errorf("%w: segment %d: %d of %d shards durable, write quorum is %d: %w",
			quorumFailure(seg.firstErr()), seg.index, acked, u.cfg.Geometry.Total(), u.quorum, seg.firstErr())
	}
	if acked < u.cfg.Geometry.Total() {
		u.s.metrics.degradedSegment()
		u.s.log.Warn("segment written degraded", "file", u.fileID, "segment", seg.index, "shards", acked)
	}
	return nil
}

// Commit proposes the file's metadata, with its first full token, through Raft.
func (u *upload) Commit(ctx context.Context, attrs FileAttrs) (FileInfo, []TokenInfo, error) {
	if !u.read || u.committed || u.aborted {
		return FileInfo{}, nil, errors.New("upload: Commit without a completed ReadFrom")
	}
	if max := u.s.cfg.MaxUploadAge; max > 0 && time.Since(u.started) > max {
		// Its first shards may be old enough for the garbage collector by now: committing could
		// reference shards that are gone. Refuse; Abort removes what is left.
		return FileInfo{}, nil, fmt.Errorf("%w: the upload took longer than %s", ErrUnavailable, max)
	}
	now := u.s.now()
	name := attrs.Name
	file := fsm.File{
		ID: u.fileID, Name: name, MimeType: u.mimeType(attrs), CreatorID: u.principal.ID,
		CreatedBy: u.s.cfg.NodeID, Size: u.size, Tags: attrs.Tags, Title: attrs.Title,
		Description: attrs.Description, ExpiresAt: attrs.ExpiresAt.UTC(), CreatedAt: now, UpdatedAt: now,
		ETag:   hex.EncodeToString(u.hash.Sum(nil)),
		Layout: fsm.Layout{Geometry: u.cfg.Geometry, BlockSize: u.cfg.BlockSize, Segments: u.segments},
	}
	if file.Layout.Segments == nil {
		file.Layout.Segments = []fsm.Segment{}
	}
	token := fsm.Token{
		ID: NewTokenID(), Secret: NewSecret(), FileID: u.fileID, Access: fsm.AccessFull,
		CreatorID: u.principal.ID, CreatedAt: now, CreatedBy: u.s.cfg.NodeID,
	}
	if err := u.s.propose(ctx, fsm.CmdCreateFile, fsm.CreateFile{File: file, Tokens: []fsm.Token{token}}); err != nil {
		// When the outcome is unknown (the proposal may still commit), Abort must not delete the
		// shards of what may become a committed file: they stay for the reconciling GC, which only
		// removes shards no committed file references. A definite refusal leaves plain garbage.
		u.outcomeUnknown = errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) ||
			errors.Is(err, context.DeadlineExceeded)
		return FileInfo{}, nil, err
	}
	u.committed = true
	u.s.metrics.uploaded(u.size)
	return fileInfo(file), []TokenInfo{tokenInfo(token)}, nil
}

// mimeType picks the part's Content-Type, else the name's extension, else a content sniff.
func (u *upload) mimeType(attrs FileAttrs) string {
	if mt := normalizeMimeType(attrs.MimeType); mt != "" {
		return mt
	}
	if mt := normalizeMimeType(mime.TypeByExtension(path.Ext(attrs.Name))); mt != "" {
		return mt
	}
	if len(u.sniff) == 0 {
		return "application/octet-stream"
	}
	return normalizeMimeType(http.DetectContentType(u.sniff))
}

// MaxMimeTypeLen is the longest type/subtype cairn stores: RFC 6838 §4.2 allows 127 characters
// for each name. The mimetype is held in Raft and every node's memory, and every listing and
// download header carries it, so a longer one (a part's Content-Type is only bounded by the body)
// is never kept; the front-ends refuse it before the upload begins.
const MaxMimeTypeLen = 127 + 1 + 127

// normalizeMimeType reduces a Content-Type to lower-case type/subtype; "" when unusable or longer
// than MaxMimeTypeLen.
func normalizeMimeType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") || len(mt) > MaxMimeTypeLen {
		return ""
	}
	return mt
}

// Abort discards the upload's shards. It is a no-op after a successful Commit.
func (u *upload) Abort() {
	if u.committed || u.aborted {
		return
	}
	u.aborted = true
	if u.outcomeUnknown {
		u.s.log.Warn("upload outcome unknown; its shards are left to the garbage collector", "file", u.fileID)
		return
	}
	segments := u.segments
	fileID := u.fileID
	u.s.spawn(func(ctx context.Context) { u.s.deleteShards(ctx, fileID, segments) })
}

// deleteShards removes a file's shards from the nodes recorded in its layout, best effort: shards on
// nodes that are down stay behind as garbage for the reconciling GC.
func (s *Service) deleteShards(ctx context.Context, fileID string, segments []fsm.Segment) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for si, seg := range segments {
		for i, node := range seg.Nodes {
			if node == "" {
				continue
			}
			id := erasure.ShardID{File: fileID, Segment: si, Index: i}
			// A shared bound on concurrent deletes: reaping thousands of files at once must not
			// open thousands of connections.
			select {
			case s.deleteSlots <- struct{}{}:
			case <-ctx.Done():
				wg.Wait()
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-s.deleteSlots }()
				defer wg.Done()
				if err := s.shards.DeleteShard(ctx, node, id); err != nil {
					s.log.Debug("shard delete failed; left for GC", "shard", id.String(), "node", node, "err", err)
				}
			}()
		}
	}
	wg.Wait()
}

// segmentWriter fans one segment's frames out to its shard streams.
type segmentWriter struct {
	index   int
	format  uint16 // erasure.FormatV1 or FormatV2, fixed for the whole segment
	offset  int64
	size    int64
	blocks  int
	quorum  int
	streams []*shardStream // nil where no node was placed
	bufs    [][]byte       // this block's frame buffers, by shard index
	scratch [][]byte       // frame buffers for shards with no healthy stream
	taken   []bool         // bufs[i] came from stream i
	cancel  context.CancelFunc
	closed  bool
	// ackTimeout bounds the wait for the shard nodes' durable acks (the stall timeout).
	ackTimeout time.Duration
}

// write encodes one block straight into buffers of the shard streams and hands frame i to
// stream i: no copy after the encode.
func (w *segmentWriter) write(enc *erasure.BlockEncoder, block []byte) error {
	w.takeFrames(enc.FrameLen(len(block)))
	frames, err := enc.EncodeInto(block, w.bufs)
	if err != nil {
		w.giveBack()
		return fmt.Errorf("encode block: %w", err)
	}
	return w.send(frames)
}

// takeFrames gives every shard index a buffer with room for a frame of frameLen bytes in
// w.bufs: a free buffer of its stream, or a scratch buffer where the stream failed (its frame is
// computed, and dropped).
func (w *segmentWriter) takeFrames(frameLen int) {
	if w.bufs == nil {
		w.bufs = make([][]byte, len(w.streams))
		w.scratch = make([][]byte, len(w.streams))
		w.taken = make([]bool, len(w.streams))
	}
	for i, st := range w.streams {
		w.taken[i] = false
		if st != nil {
			if buf, ok := st.take(frameLen); ok {
				w.bufs[i], w.taken[i] = buf, true
				continue
			}
		}
		if cap(w.scratch[i]) < frameLen {
			w.scratch[i] = make([]byte, 0, frameLen)
		}
		w.bufs[i] = w.scratch[i]
	}
}

// giveBack returns the buffers takeFrames took to their streams, for a block that is not sent.
func (w *segmentWriter) giveBack() {
	for i, st := range w.streams {
		if w.taken[i] {
			st.free <- w.bufs[i]
			w.taken[i] = false
		}
	}
}

// send hands frame i to stream i. A stream that failed is skipped; the segment fails only when
// fewer than quorum streams are still healthy.
func (w *segmentWriter) send(frames [][]byte) error {
	healthy := 0
	for i, st := range w.streams {
		if w.taken[i] && st.push(frames[i]) {
			healthy++
		}
	}
	if healthy < w.quorum {
		w.awaitDeadPuts()
		return fmt.Errorf("%w: segment %d: only %d shard streams healthy, write quorum is %d: %w",
			quorumFailure(w.firstErr()), w.index, healthy, w.quorum, w.firstErr())
	}
	return nil
}

func (w *segmentWriter) closeAll() {
	if w.closed {
		return
	}
	w.closed = true
	for _, st := range w.streams {
		if st != nil {
			st.close()
		}
	}
}

// wait closes the streams and waits for every remote put to end; it returns how many succeeded. A
// node that does not ack within ackTimeout (partitioned after taking the data) is given up, so
// the upload answers within a bound; the quorum decides.
func (w *segmentWriter) wait() int {
	w.closeAll()
	if w.ackTimeout > 0 {
		giveUp := time.AfterFunc(w.ackTimeout, w.cancel)
		defer giveUp.Stop()
	}
	acked := 0
	for _, st := range w.streams {
		if st == nil {
			continue
		}
		<-st.done
		st.release()
		if st.err == nil {
			acked++
		}
	}
	return acked
}

func (w *segmentWriter) firstErr() error {
	for _, st := range w.streams {
		if st != nil {
			select {
			case <-st.putDone:
				if st.putErr != nil {
					return st.putErr
				}
			default:
			}
		}
	}
	return errors.New("no shard error recorded")
}

// awaitDeadPuts waits, at most ackTimeout, until the put of every failed stream has returned, so
// that firstErr can name why the segment lost its quorum. A dead stream's put ends promptly: its
// node answered early, or the stall guard cancelled it.
func (w *segmentWriter) awaitDeadPuts() {
	var timeout <-chan time.Time
	if w.ackTimeout > 0 {
		t := time.NewTimer(w.ackTimeout)
		defer t.Stop()
		timeout = t.C
	}
	for _, st := range w.streams {
		if st == nil {
			continue
		}
		select {
		case <-st.dead:
		default:
			continue
		}
		select {
		case <-st.putDone:
		case <-timeout:
			return
		}
	}
}

// shardStream sends frames to one shard node. A bounded queue of reusable buffers keeps memory per
// stream at depth+1 chunks, and lets a slow node lag a little without stalling the others at once.
// The put reads the queue itself (shardBody): over HTTP the transport writes each frame as one
// chunk straight from its buffer, with no pipe, no copy and no goroutine between them.
type shardStream struct {
	codec *erasure.Codec // whose pool full-frame buffers come from and go back to
	queue chan []byte
	free  chan []byte
	done  chan struct{}
	err   error // set before done is closed
	// putDone closes as soon as the remote put returned, with putErr set before: a stream can be
	// dead (the transport gave up its body on an early answer) while its queue still drains, and
	// the segment's error must name the put's cause (a full disk is 507, not 503).
	putDone chan struct{}
	putErr  error
	dead    chan struct{}
	once    sync.Once
}

func (s *Service) startShardStream(ctx context.Context, node string, id erasure.ShardID, depth int, codec *erasure.Codec) *shardStream {
	st := &shardStream{
		codec:   codec,
		queue:   make(chan []byte, depth),
		free:    make(chan []byte, depth+1),
		done:    make(chan struct{}),
		putDone: make(chan struct{}),
		dead:    make(chan struct{}),
	}
	for range depth + 1 {
		st.free <- nil
	}
	// A node that stops taking the stream is abandoned after the stall timeout; the segment still
	// commits if the write quorum remains.
	putCtx, cancelPut := context.WithCancel(ctx)
	body := &shardBody{st: st, ctx: putCtx, stall: s.cfg.ShardStallTimeout, cancel: cancelPut}
	// Put: queue -> node. Its result is the shard's durable ack.
	go func() {
		err := s.shards.PutShard(putCtx, node, id, body)
		if err != nil {
			err = fmt.Errorf("put shard %s on %s: %w", id, node, err)
		}
		st.putErr = err
		close(st.putDone)
		cancelPut()
		if err != nil {
			st.markDead()
		}
		// Nothing sends the stream's frames any more: recycle what is still queued, until the
		// segment closes the queue.
		for frame := range st.queue {
			st.free <- frame
		}
		st.err = err
		close(st.done)
	}()
	return st
}

// shardBody is a shard put's body: the stream's frames, in order, ending cleanly only when the
// segment closed the queue without cancelling the put. An aborted upload (the put's context
// ends) ends it with an error, so a node never sees a complete request and never commits the
// shard it got so far. A write or read of a frame that the peer does not take within stall
// cancels the put; time spent waiting for the uploading client (an empty queue) never does.
type shardBody struct {
	st     *shardStream
	ctx    context.Context // the put's
	stall  time.Duration
	cancel context.CancelFunc // the put's
	frame  []byte             // the frame Read is handing out
	rest   []byte             // what of it is left to read
	guard  *time.Timer        // Read's stall timer, armed while a frame is being read
}

// next waits for the next frame: io.EOF after the last one of a completed stream, an error when
// the put was cancelled or has already ended.
func (b *shardBody) next() ([]byte, error) {
	select {
	case frame, ok := <-b.st.queue:
		if !ok {
			if err := b.ctx.Err(); err != nil {
				return nil, err
			}
			return nil, io.EOF
		}
		select {
		case <-b.st.putDone: // an early answer ended the put: stop sending
			b.st.free <- frame
			return nil, errPutEnded
		default:
			return frame, nil
		}
	case <-b.ctx.Done():
		return nil, b.ctx.Err()
	case <-b.st.putDone:
		return nil, errPutEnded
	}
}

// WriteTo writes each frame with one Write, straight from its buffer: the HTTP transport's
// chunked writer turns that into one chunk and one flush per frame.
func (b *shardBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		frame, err := b.next()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, err := writeGuarded(w, frame, b.stall, b.cancel)
		total += int64(n)
		b.st.free <- frame
		if err != nil {
			b.st.markDead()
			return total, err
		}
	}
}

// Read serves a local put (and any reader without WriteTo).
func (b *shardBody) Read(p []byte) (int, error) {
	if len(b.rest) == 0 {
		frame, err := b.next()
		if err != nil {
			return 0, err
		}
		b.frame, b.rest = frame, frame
		if b.guard == nil {
			b.guard = time.AfterFunc(b.stall, b.cancel)
		} else {
			b.guard.Reset(b.stall)
		}
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	if len(b.rest) == 0 {
		b.guard.Stop()
		b.st.free <- b.frame
		b.frame = nil
	}
	return n, nil
}

var errPutEnded = errors.New("shard put ended")

func (st *shardStream) markDead() { st.once.Do(func() { close(st.dead) }) }

// take returns a free buffer of the stream with room for n bytes; false once the stream failed.
func (st *shardStream) take(n int) ([]byte, bool) {
	var buf []byte
	select {
	case <-st.dead:
		return nil, false
	case buf = <-st.free:
	}
	if cap(buf) < n {
		if full := st.codec.FullFrameLen(); n > full/2 && n <= full {
			buf = st.codec.FrameBuffer()
		} else {
			buf = make([]byte, 0, n) // sized to the content: a small file's frames are small
		}
	}
	return buf[:0], true
}

// push queues buf (taken from this stream); false once the stream failed.
func (st *shardStream) push(buf []byte) bool {
	select {
	case <-st.dead:
		st.free <- buf
		return false
	case st.queue <- buf:
		return true
	}
}

// send queues a copy of frame; false once the stream failed.
func (st *shardStream) send(frame []byte) bool {
	buf, ok := st.take(len(frame))
	return ok && st.push(append(buf, frame...))
}

func (st *shardStream) close() { close(st.queue) }

// release returns the stream's buffers to the codec's pool once the stream is done.
func (st *shardStream) release() {
	for {
		select {
		case buf := <-st.free:
			st.codec.PutBuffer(buf)
		default:
			return
		}
	}
}

// quorumFailure is the error kind of a segment that missed its write quorum: out of space when the
// shard nodes refused for space (507), unavailable otherwise (503).
func quorumFailure(cause error) error {
	if errors.Is(cause, erasure.ErrNoSpace) {
		return ErrNoSpace
	}
	return ErrUnavailable
}
