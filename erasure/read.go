package erasure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// ErrInvalidRange reports a byte range that does not lie within a segment or a shard.
var ErrInvalidRange = errors.New("invalid byte range")

// ShardSource fetches raw shard bytes of one segment; the codec verifies and reconstructs.
type ShardSource interface {
	// OpenShard returns the shard header (ShardHeaderLen bytes, as ShardStore.OpenFrames gives
	// it) followed by the frame bytes [off, off+n) of shard `index` of the segment being read:
	// offsets count from the first frame, whatever the shard's format. A missing shard returns an
	// error wrapping ErrShardNotFound (or any error): the reader then falls back to parity. One
	// too short for the range returns an error wrapping ErrInvalidRange, and counts as corrupt.
	OpenShard(ctx context.Context, index int, off, n int64) (io.ReadCloser, error)
}

// LocalShardSource is a ShardSource that knows which of its shards it reads without a network
// hop. ReadSegment then reads local shards first (data before parity), then remote data shards,
// then remote parity: on a healthy read, a shard fetched from another node costs more than the
// decode a local parity shard needs (measured in DESIGN.md, "Speed").
type LocalShardSource interface {
	ShardSource
	// Local reports whether shard index is on this node.
	Local(index int) bool
}

// ShardFault describes a shard the reader had to give up on (for metrics and inline heal).
type ShardFault struct {
	Index int
	Err   error
	// Corrupt: the shard is there but wrong (a checksum or header mismatch, or shorter than its
	// segment needs), as opposed to missing or unreachable.
	Corrupt bool
}

// ReadSegment writes data bytes [off, off+n) of segment seg (segLen data bytes in total) to w.
// It reads data shards first (no decode when all are healthy, systematic RS), verifies every
// shard header and every frame checksum against the frame's place, and on a missing/failed/corrupt data shard opens parity shards and reconstructs, switching
// mid-stream at the failing block. It reads only the blocks overlapping [off, off+n). It returns the
// faults it met (also on success) and an error wrapping ErrUnrecoverable when more than m shards fail.
// Memory: O(k+m chunks), independent of segLen. Streams open for a data shard are read sequentially
// across the needed blocks (one OpenShard per shard per call, unless it fails).
func (c *Codec) ReadSegment(ctx context.Context, w io.Writer, seg SegmentID, segLen, off, n int64, src ShardSource) ([]ShardFault, error) {
	if segLen < 0 || off < 0 || n < 0 || off > segLen-n {
		return nil, fmt.Errorf("erasure: read [%d,+%d) of a %d-byte segment: %w", off, n, segLen, ErrInvalidRange)
	}
	if n == 0 {
		return nil, nil
	}
	bs := int64(c.blockSize)
	first, last := int(off/bs), int((off+n-1)/bs)
	sr := c.newStripeReader(src, seg, newSegmentLayout(segLen, c.blockSize, c.g), first, last, c.readOrder(src))
	defer sr.close()

	k := c.g.Data
	for j := first; j <= last; j++ {
		if err := sr.readBlock(ctx, j); err != nil {
			return sr.faults, err
		}
		data := sr.chunks[:k]
		for i := range data {
			if len(data[i]) == 0 {
				if err := c.rs.ReconstructData(sr.chunks); err != nil {
					return sr.faults, fmt.Errorf("erasure: reconstruct block %d: %w", j, err)
				}
				break
			}
		}
		// Write the overlap of [off, off+n) with this block, chunk by chunk, so no block-sized
		// copy is ever made.
		blockStart := int64(j) * bs
		lo := max(off, blockStart) - blockStart
		hi := min(off+n, blockStart+int64(sr.layout.blockLen(j))) - blockStart
		cl := int64(len(data[0]))
		for i, chunk := range data {
			cLo, cHi := max(lo, int64(i)*cl), min(hi, int64(i+1)*cl)
			if cLo >= cHi {
				continue
			}
			if _, err := w.Write(chunk[cLo-int64(i)*cl : cHi-int64(i)*cl]); err != nil {
				return sr.faults, fmt.Errorf("erasure: write block %d: %w", j, err)
			}
		}
	}
	return sr.faults, nil
}

// readOrder is the order ReadSegment tries shards in: data shards first, since when they are
// healthy no decode is needed; with a LocalShardSource, the local shards before all others.
func (c *Codec) readOrder(src ShardSource) []int {
	order := make([]int, c.g.Total())
	for i := range order {
		order[i] = i
	}
	if ls, ok := src.(LocalShardSource); ok {
		slices.SortStableFunc(order, func(a, b int) int {
			switch la, lb := ls.Local(a), ls.Local(b); {
			case la && !lb:
				return -1
			case lb && !la:
				return 1
			}
			return 0
		})
	}
	return order
}

// RebuildShard reads from src the shards other than `index` (any k healthy ones) and writes a fresh
// shard `index` of segment seg, in the current format (header, then frames), to w. For repair and
// heal; rebuilding a v1 shard migrates it.
func (c *Codec) RebuildShard(ctx context.Context, w io.Writer, seg SegmentID, segLen int64, index int, src ShardSource) ([]ShardFault, error) {
	if index < 0 || index >= c.g.Total() {
		return nil, fmt.Errorf("erasure: rebuild shard %d of geometry %s: no such shard", index, c.g)
	}
	if segLen <= 0 {
		return nil, fmt.Errorf("erasure: rebuild shard of a %d-byte segment: %w", segLen, ErrInvalidRange)
	}
	layout := newSegmentLayout(segLen, c.blockSize, c.g)
	order := make([]int, 0, c.g.Total()-1)
	for i := range c.g.Total() {
		if i != index {
			order = append(order, i)
		}
	}
	sr := c.newStripeReader(src, seg, layout, 0, layout.blocks-1, order)
	defer sr.close()

	required := make([]bool, c.g.Total())
	required[index] = true
	if _, err := w.Write(AppendShardHeader(nil, seg.Shard(index))); err != nil {
		return nil, fmt.Errorf("erasure: write rebuilt shard %d header: %w", index, err)
	}
	seed := shardSeed(seg.Shard(index))
	for j := range layout.blocks {
		if err := sr.readBlock(ctx, j); err != nil {
			return sr.faults, err
		}
		if err := c.rs.ReconstructSome(sr.chunks, required); err != nil {
			return sr.faults, fmt.Errorf("erasure: rebuild shard %d block %d: %w", index, j, err)
		}
		if _, err := w.Write(appendFrameCRC(sr.chunks[index], seed, j)); err != nil {
			return sr.faults, fmt.Errorf("erasure: write rebuilt shard %d block %d: %w", index, j, err)
		}
	}
	return sr.faults, nil
}

// VerifyShard checks one whole shard stream as ShardStore.OpenFrames(id, 0, -1) returns it: the
// header must name id, every frame must pass its checksum, and nothing may follow the last frame.
// A mismatch, a damaged header or trailing bytes return an error wrapping ErrCorrupt (naming the
// block); a short shard one wrapping both ErrCorrupt and io.ErrUnexpectedEOF. For the scrubber.
func VerifyShard(r io.Reader, id ShardID, segLen int64, blockSize int, g Geometry) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if segLen <= 0 || blockSize <= 0 {
		return fmt.Errorf("erasure: verify shard: segment length %d, block size %d: %w", segLen, blockSize, ErrInvalidRange)
	}
	layout := newSegmentLayout(segLen, blockSize, g)
	buf := make([]byte, max(ShardHeaderLen, layout.chunkLen(0)+crcLen)) // block 0 has the largest frame
	if _, err := io.ReadFull(r, buf[:ShardHeaderLen]); err != nil {
		return fmt.Errorf("erasure: verify shard %s header: %w", id, shortShard(err))
	}
	format, err := checkHeader(buf[:ShardHeaderLen], id)
	if err != nil {
		return fmt.Errorf("erasure: verify shard: %w", err)
	}
	fc := frameChecker{format: format, seed: shardSeed(id)}
	for j := range layout.blocks {
		frame := buf[:layout.chunkLen(j)+crcLen]
		if _, err := io.ReadFull(r, frame); err != nil {
			return fmt.Errorf("erasure: verify shard %s block %d: %w", id, j, shortShard(err))
		}
		if _, ok := fc.check(frame, j); !ok {
			return fmt.Errorf("erasure: verify shard %s block %d: %w: checksum mismatch", id, j, ErrCorrupt)
		}
	}
	switch n, err := r.Read(buf[:1]); {
	case n > 0:
		return fmt.Errorf("erasure: verify shard %s: %w: trailing bytes after block %d", id, ErrCorrupt, layout.blocks-1)
	case err != nil && !errors.Is(err, io.EOF):
		return fmt.Errorf("erasure: verify shard %s: %w", id, err)
	}
	return nil
}

// CheckShard reads the whole of shard index of segment seg through src and verifies it as
// VerifyShard does. A shard too short for its segment is corrupt. For checking a segment whose
// data failed the file's digest.
func (c *Codec) CheckShard(ctx context.Context, seg SegmentID, segLen int64, index int, src ShardSource) error {
	if segLen <= 0 {
		return fmt.Errorf("erasure: check shard of a %d-byte segment: %w", segLen, ErrInvalidRange)
	}
	layout := newSegmentLayout(segLen, c.blockSize, c.g)
	off, n := layout.shardRange(0, layout.blocks-1)
	r, err := src.OpenShard(ctx, index, off, n)
	if errors.Is(err, ErrInvalidRange) {
		return fmt.Errorf("erasure: check shard %s: %w: %w", seg.Shard(index), ErrCorrupt, err)
	}
	if err != nil {
		return fmt.Errorf("erasure: check shard %s: %w", seg.Shard(index), err)
	}
	defer r.Close()
	return VerifyShard(r, seg.Shard(index), segLen, c.blockSize, c.g)
}

// shortShard turns the end of a stream before the shard's end into corruption.
func shortShard(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: shard too short: %w", ErrCorrupt, io.ErrUnexpectedEOF)
	}
	return err
}

// stripeReader pulls, block by block, k verified chunks of one segment out of a ShardSource.
// Candidate shards are opened in preference order, each once, as a single stream covering every
// remaining needed block; a shard that fails (open, header, read or checksum) is given up for the
// rest of the call and the next candidate is opened at the failing block.
type stripeReader struct {
	c        *Codec
	src      ShardSource
	seg      SegmentID
	layout   segmentLayout
	last     int             // last block to be read
	order    []int           // candidate shard indices, most preferred first
	next     int             // position in order of the next shard to open
	streams  []io.ReadCloser // by shard index; nil when not open or given up
	checkers []frameChecker  // by shard index, for the open streams
	bufs     [][]byte        // by shard index: one frame each
	chunks   [][]byte        // by shard index: this block's verified chunk, or empty when absent
	header   [ShardHeaderLen]byte
	faults   []ShardFault
	pooled   *[][]byte  // bufs, from pool
	pool     *sync.Pool // the codec's pool bufs go back to
}

// Reads of a single short block (a small file) take frame buffers sized to the block, pooled in
// size classes of 4 KiB << class up to 64 KiB: allocating (and zeroing) k+m aligned buffers on
// every such read was about 1 % of a node's CPU on GET 4 KiB. Larger short blocks allocate.
const (
	shortFrameMinLen  = 4 << 10
	shortFrameClasses = 5
)

// shortFrameClass is the size class of a frame of frameLen bytes, or -1 when it is too large
// for one.
func shortFrameClass(frameLen int) int {
	class := max(0, bits.Len(uint(frameLen-1))-bits.Len(uint(shortFrameMinLen-1)))
	if class >= shortFrameClasses {
		return -1
	}
	return class
}

func (c *Codec) newStripeReader(src ShardSource, seg SegmentID, layout segmentLayout, first, last int, order []int) *stripeReader {
	n := c.g.Total()
	sr := &stripeReader{
		c:        c,
		src:      src,
		seg:      seg,
		layout:   layout,
		last:     last,
		order:    order,
		streams:  make([]io.ReadCloser, n),
		checkers: make([]frameChecker, n),
		chunks:   make([][]byte, n),
	}
	pool, bufLen := &c.frameBufs, int(c.fullFrameLen())
	if frameLen := layout.chunkLen(last) + crcLen; first == last && int64(frameLen) < layout.frameLen {
		// A single short block (a small file): buffers sized to it, not to a full block.
		class := shortFrameClass(frameLen)
		if class < 0 {
			sr.bufs = reedsolomon.AllocAligned(n, frameLen)
			return sr
		}
		pool, bufLen = &c.shortFrameBufs[class], shortFrameMinLen<<class
	}
	sr.pool = pool
	if p, ok := pool.Get().(*[][]byte); ok && len(*p) == n && cap((*p)[0]) >= bufLen {
		sr.pooled, sr.bufs = p, *p
		return sr
	}
	p := new([][]byte)
	*p = reedsolomon.AllocAligned(n, bufLen)
	sr.pooled, sr.bufs = p, *p
	return sr
}

// readBlock fills chunks with exactly k verified chunks of block j, opening further candidates as
// open shards fail. It returns an error wrapping ErrUnrecoverable when candidates run out.
func (sr *stripeReader) readBlock(ctx context.Context, j int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("erasure: read block %d: %w", j, err)
	}
	frameLen := sr.layout.chunkLen(j) + crcLen
	for i := range sr.chunks {
		sr.chunks[i] = sr.bufs[i][:0] // empty with capacity, so reedsolomon decodes in place
	}
	healthy := 0
	for i, s := range sr.streams {
		if s != nil && sr.readFrame(i, j, frameLen) {
			healthy++
		}
	}
	for healthy < sr.c.g.Data {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("erasure: read block %d: %w", j, err)
		}
		if sr.next == len(sr.order) {
			return fmt.Errorf("erasure: block %d: %w: %d of %d shards failed",
				j, ErrUnrecoverable, len(sr.faults), sr.c.g.Total())
		}
		i := sr.order[sr.next]
		sr.next++
		if sr.open(ctx, i, j) && sr.readFrame(i, j, frameLen) {
			healthy++
		}
	}
	return nil
}

// open starts shard i's stream at block j and checks its header.
func (sr *stripeReader) open(ctx context.Context, i, j int) bool {
	off, n := sr.layout.shardRange(j, sr.last)
	s, err := sr.src.OpenShard(ctx, i, off, n)
	if err != nil {
		// A shard too short for its segment is there but wrong: corrupt, so it is healed.
		sr.faults = append(sr.faults, ShardFault{Index: i, Corrupt: errors.Is(err, ErrInvalidRange),
			Err: fmt.Errorf("open shard %d: %w", i, err)})
		return false
	}
	sr.streams[i] = s
	if _, err := io.ReadFull(s, sr.header[:]); err != nil {
		sr.giveUp(ShardFault{Index: i, Err: fmt.Errorf("read shard %d header: %w", i, err)})
		return false
	}
	format, err := checkHeader(sr.header[:], sr.seg.Shard(i))
	if err != nil {
		sr.giveUp(ShardFault{Index: i, Corrupt: true, Err: err})
		return false
	}
	sr.checkers[i] = frameChecker{format: format, seed: shardSeed(sr.seg.Shard(i))}
	return true
}

// readFrame reads and verifies shard i's frame of block j, giving the shard up on any failure.
func (sr *stripeReader) readFrame(i, j, frameLen int) bool {
	frame := sr.bufs[i][:frameLen]
	if _, err := io.ReadFull(sr.streams[i], frame); err != nil {
		// The store checks the range against the shard's size before it sends a byte, so a
		// stream that ends early broke in transit (a node or connection failed): unavailable.
		sr.giveUp(ShardFault{Index: i, Err: fmt.Errorf("read shard %d block %d: %w", i, j, err)})
		return false
	}
	chunk, ok := sr.checkers[i].check(frame, j)
	if !ok {
		sr.giveUp(ShardFault{Index: i, Corrupt: true,
			Err: fmt.Errorf("shard %d block %d: %w: checksum mismatch", i, j, ErrCorrupt)})
		return false
	}
	sr.chunks[i] = chunk
	return true
}

func (sr *stripeReader) giveUp(f ShardFault) {
	sr.streams[f.Index].Close()
	sr.streams[f.Index] = nil
	sr.faults = append(sr.faults, f)
}

func (sr *stripeReader) close() {
	for i, s := range sr.streams {
		if s != nil {
			s.Close()
			sr.streams[i] = nil
		}
	}
	if sr.pooled != nil {
		sr.pool.Put(sr.pooled)
		sr.pooled = nil
	}
}
