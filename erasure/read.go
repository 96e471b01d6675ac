package erasure

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/reedsolomon"
)

// ErrInvalidRange reports a byte range that does not lie within a segment or a shard.
var ErrInvalidRange = errors.New("invalid byte range")

// ShardSource fetches raw shard bytes of one segment; the codec verifies and reconstructs.
type ShardSource interface {
	// OpenShard returns the bytes [off, off+n) of shard `index` of the segment being read.
	// A missing shard returns an error wrapping ErrShardNotFound (or any error): the reader then
	// falls back to parity.
	OpenShard(ctx context.Context, index int, off, n int64) (io.ReadCloser, error)
}

// ShardFault describes a shard the reader had to give up on (for metrics and inline heal).
type ShardFault struct {
	Index   int
	Err     error
	Corrupt bool // checksum mismatch, as opposed to a missing or unreachable shard
}

// ReadSegment writes data bytes [off, off+n) of a segment (segLen data bytes in total) to w.
// It reads data shards first (no decode when all are healthy, systematic RS), verifies every chunk
// CRC, and on a missing/failed/corrupt data shard opens parity shards and reconstructs, switching
// mid-stream at the failing block. It reads only the blocks overlapping [off, off+n). It returns the
// faults it met (also on success) and an error wrapping ErrUnrecoverable when more than m shards fail.
// Memory: O(k+m chunks), independent of segLen. Streams open for a data shard are read sequentially
// across the needed blocks (one OpenShard per shard per call, unless it fails).
func (c *Codec) ReadSegment(ctx context.Context, w io.Writer, segLen, off, n int64, src ShardSource) ([]ShardFault, error) {
	if segLen < 0 || off < 0 || n < 0 || off > segLen-n {
		return nil, fmt.Errorf("erasure: read [%d,+%d) of a %d-byte segment: %w", off, n, segLen, ErrInvalidRange)
	}
	if n == 0 {
		return nil, nil
	}
	bs := int64(c.blockSize)
	first, last := int(off/bs), int((off+n-1)/bs)
	order := make([]int, c.g.Total()) // data shards first: when they are healthy no decode is needed
	for i := range order {
		order[i] = i
	}
	sr := c.newStripeReader(src, newSegmentLayout(segLen, c.blockSize, c.g), first, last, order)
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

// RebuildShard reads from src the shards other than `index` (any k healthy ones) and writes a fresh
// shard `index` (framed, with CRCs) for the whole segment to w. Needed later for repair.
func (c *Codec) RebuildShard(ctx context.Context, w io.Writer, segLen int64, index int, src ShardSource) ([]ShardFault, error) {
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
	sr := c.newStripeReader(src, layout, 0, layout.blocks-1, order)
	defer sr.close()

	required := make([]bool, c.g.Total())
	required[index] = true
	for j := range layout.blocks {
		if err := sr.readBlock(ctx, j); err != nil {
			return sr.faults, err
		}
		if err := c.rs.ReconstructSome(sr.chunks, required); err != nil {
			return sr.faults, fmt.Errorf("erasure: rebuild shard %d block %d: %w", index, j, err)
		}
		if _, err := w.Write(appendCRC(sr.chunks[index])); err != nil {
			return sr.faults, fmt.Errorf("erasure: write rebuilt shard %d block %d: %w", index, j, err)
		}
	}
	return sr.faults, nil
}

// VerifyShard checks every frame CRC of one shard stream of a segment; returns ErrCorrupt (wrapped,
// naming the block) on the first bad frame or on trailing bytes, or a short-read error wrapping
// io.ErrUnexpectedEOF. For the scrubber.
func VerifyShard(r io.Reader, segLen int64, blockSize int, g Geometry) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if segLen <= 0 || blockSize <= 0 {
		return fmt.Errorf("erasure: verify shard: segment length %d, block size %d: %w", segLen, blockSize, ErrInvalidRange)
	}
	layout := newSegmentLayout(segLen, blockSize, g)
	buf := make([]byte, layout.chunkLen(0)+crcLen) // block 0 has the largest frame
	for j := range layout.blocks {
		frame := buf[:layout.chunkLen(j)+crcLen]
		if _, err := io.ReadFull(r, frame); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("erasure: verify shard block %d: %w", j, err)
		}
		if _, ok := checkFrame(frame); !ok {
			return fmt.Errorf("erasure: verify shard block %d: %w: checksum mismatch", j, ErrCorrupt)
		}
	}
	switch n, err := r.Read(buf[:1]); {
	case n > 0:
		return fmt.Errorf("erasure: verify shard: %w: trailing bytes after block %d", ErrCorrupt, layout.blocks-1)
	case err != nil && !errors.Is(err, io.EOF):
		return fmt.Errorf("erasure: verify shard: %w", err)
	}
	return nil
}

// stripeReader pulls, block by block, k CRC-verified chunks of one segment out of a ShardSource.
// Candidate shards are opened in preference order, each once, as a single stream covering every
// remaining needed block; a shard that fails (open, read or checksum) is given up for the rest of
// the call and the next candidate is opened at the failing block.
type stripeReader struct {
	c       *Codec
	src     ShardSource
	layout  segmentLayout
	last    int             // last block to be read
	order   []int           // candidate shard indices, most preferred first
	next    int             // position in order of the next shard to open
	streams []io.ReadCloser // by shard index; nil when not open or given up
	bufs    [][]byte        // by shard index: one frame each
	chunks  [][]byte        // by shard index: this block's verified chunk, or empty when absent
	faults  []ShardFault
}

func (c *Codec) newStripeReader(src ShardSource, layout segmentLayout, first, last int, order []int) *stripeReader {
	n := c.g.Total()
	frameLen := layout.frameLen
	if first == last { // a single block may be a short last block: don't allocate a full frame
		frameLen = int64(layout.chunkLen(last) + crcLen)
	}
	return &stripeReader{
		c:       c,
		src:     src,
		layout:  layout,
		last:    last,
		order:   order,
		streams: make([]io.ReadCloser, n),
		bufs:    reedsolomon.AllocAligned(c.g.Total(), int(frameLen)),
		chunks:  make([][]byte, n),
	}
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
		off, n := sr.layout.shardRange(j, sr.last)
		s, err := sr.src.OpenShard(ctx, i, off, n)
		if err != nil {
			sr.faults = append(sr.faults, ShardFault{Index: i, Err: fmt.Errorf("open shard %d: %w", i, err)})
			continue
		}
		sr.streams[i] = s
		if sr.readFrame(i, j, frameLen) {
			healthy++
		}
	}
	return nil
}

// readFrame reads and verifies shard i's frame of block j, giving the shard up on any failure.
func (sr *stripeReader) readFrame(i, j, frameLen int) bool {
	frame := sr.bufs[i][:frameLen]
	if _, err := io.ReadFull(sr.streams[i], frame); err != nil {
		sr.giveUp(ShardFault{Index: i, Err: fmt.Errorf("read shard %d block %d: %w", i, j, err)})
		return false
	}
	chunk, ok := checkFrame(frame)
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
}
