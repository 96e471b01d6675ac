package erasure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/klauspost/reedsolomon"
)

var (
	// ErrShardNotFound means a shard does not exist where it was looked for. Readers treat it as a
	// lost shard and fall back to parity.
	ErrShardNotFound = errors.New("shard not found")
	// ErrUnrecoverable means more than m shards of a segment failed, so its data cannot be rebuilt.
	ErrUnrecoverable = errors.New("segment unrecoverable: too many shards lost")
	// ErrCorrupt means a frame's CRC-32C did not match its chunk (bit rot, torn or foreign data).
	ErrCorrupt = errors.New("shard corrupt")
	// ErrNotEnoughNodes means placement found fewer nodes than a segment needs. Place itself never
	// fails; callers that require k+m (or a write quorum of) distinct nodes report it.
	ErrNotEnoughNodes = errors.New("not enough nodes for placement")
	// ErrNoSpace: the node keeps its free-space reserve and takes no new shard, or the disk is full.
	ErrNoSpace = errors.New("not enough free space for the shard")
)

// castagnoli is read-only after package init; crc32.MakeTable returns a shared, immutable table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Codec erasure-codes blocks of one geometry and block size. It is safe for concurrent use; the
// per-stream state lives in BlockEncoder and in each ReadSegment call.
type Codec struct {
	g         Geometry
	blockSize int
	rs        reedsolomon.Encoder
}

// NewCodec returns a codec for geometry g and blocks of up to blockSize data bytes.
func NewCodec(g Geometry, blockSize int) (*Codec, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if blockSize <= 0 {
		return nil, fmt.Errorf("erasure: block size %d: must be positive", blockSize)
	}
	rs, err := reedsolomon.New(g.Data, g.Parity, reedsolomon.WithAutoGoroutines(ChunkLen(blockSize, g)))
	if err != nil {
		return nil, fmt.Errorf("erasure: reed-solomon %s: %w", g, err)
	}
	return &Codec{g: g, blockSize: blockSize, rs: rs}, nil
}

// Geometry returns the codec's k+m.
func (c *Codec) Geometry() Geometry { return c.g }

// BlockSize returns the maximum number of data bytes per block.
func (c *Codec) BlockSize() int { return c.blockSize }

// BlockEncoder encodes blocks into framed chunks, reusing its buffers (memory O(blockSize)).
// Not safe for concurrent use.
type BlockEncoder struct {
	c      *Codec
	frames [][]byte // k+m buffers of full-frame capacity
	chunks [][]byte // chunk views into frames, handed to reedsolomon
	out    [][]byte // frame views returned by Encode
}

// NewBlockEncoder returns an encoder with buffers for one full block.
func (c *Codec) NewBlockEncoder() *BlockEncoder {
	n := c.g.Total()
	return &BlockEncoder{
		c:      c,
		frames: reedsolomon.AllocAligned(n, ChunkLen(c.blockSize, c.g)+crcLen),
		chunks: make([][]byte, n),
		out:    make([][]byte, n),
	}
}

// Encode returns k+m frames (chunk||crc) for one block of 1..blockSize data bytes. The returned
// slices stay valid only until the next Encode call (callers copy or finish with them first).
func (e *BlockEncoder) Encode(block []byte) ([][]byte, error) {
	if len(block) == 0 || len(block) > e.c.blockSize {
		return nil, fmt.Errorf("erasure: encode block of %d bytes: want 1..%d", len(block), e.c.blockSize)
	}
	k := e.c.g.Data
	cl := ChunkLen(len(block), e.c.g)
	for i := range e.frames {
		e.chunks[i] = e.frames[i][:cl]
		if i < k {
			// Systematic layout: data chunk i is block[i*cl:(i+1)*cl], zero-padded at the end.
			lo := min(i*cl, len(block))
			clear(e.chunks[i][copy(e.chunks[i], block[lo:min(lo+cl, len(block))]):])
		}
	}
	if err := e.c.rs.Encode(e.chunks); err != nil {
		return nil, fmt.Errorf("erasure: encode: %w", err)
	}
	for i, f := range e.frames {
		e.out[i] = appendCRC(f[:cl])
	}
	return e.out, nil
}

// appendCRC writes the CRC-32C of chunk into the 4 bytes after it; chunk must have the capacity.
func appendCRC(chunk []byte) []byte {
	return binary.BigEndian.AppendUint32(chunk, crc32.Checksum(chunk, castagnoli))
}

// checkFrame verifies a frame and returns its chunk.
func checkFrame(frame []byte) ([]byte, bool) {
	cl := len(frame) - crcLen
	chunk := frame[:cl]
	return chunk, crc32.Checksum(chunk, castagnoli) == binary.BigEndian.Uint32(frame[cl:])
}
