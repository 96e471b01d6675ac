package erasure

import (
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/klauspost/reedsolomon"
)

var (
	// ErrShardNotFound means a shard does not exist where it was looked for. Readers treat it as a
	// lost shard and fall back to parity.
	ErrShardNotFound = errors.New("shard not found")
	// ErrUnrecoverable means more than m shards of a segment failed, so its data cannot be rebuilt.
	ErrUnrecoverable = errors.New("segment unrecoverable: too many shards lost")
	// ErrCorrupt means a shard failed its checks: a frame's checksum does not match its chunk and
	// place (bit rot, a torn, misdirected or misplaced write, another shard's data), the header
	// names another shard, or the shard is shorter or longer than its segment needs.
	ErrCorrupt = errors.New("shard corrupt")
	// ErrNoSpace: the node keeps its free-space reserve and takes no new shard, or the disk is full.
	ErrNoSpace = errors.New("not enough free space for the shard")
)

// castagnoli is read-only after package init; crc32.MakeTable returns a shared, immutable table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SegmentID names one segment of a file: the identity every frame checksum of its shards binds.
type SegmentID struct {
	File    string
	Segment int
}

// Shard is the id of the segment's shard index.
func (s SegmentID) Shard(index int) ShardID {
	return ShardID{File: s.File, Segment: s.Segment, Index: index}
}

// Codec erasure-codes blocks of one geometry and block size. It is safe for concurrent use; the
// per-stream state lives in BlockEncoder and in each ReadSegment call. It pools block encoders,
// so that a steady stream of uploads allocates no per-block or per-upload buffers.
type Codec struct {
	g         Geometry
	blockSize int
	rs        reedsolomon.Encoder
	encoders  sync.Pool // *BlockEncoder
	frameBufs sync.Pool // *[][]byte: k+m full-frame buffers for readers
	// shortFrameBufs are k+m frame buffers for reads of one short block (small files), by size
	// class: 4 KiB << class (read.go).
	shortFrameBufs [shortFrameClasses]sync.Pool
	small          sync.Pool // *[]byte of smallBufferLen
	blocks         sync.Pool // *[]byte of blockSize
	frames         sync.Pool // *[]byte of one full frame
}

// smallBufferLen is the first buffer of an upload: small files fit, larger ones move on to a block.
const smallBufferLen = 64 << 10

// BlockSize is the most data bytes a block holds.
func (c *Codec) BlockSize() int { return c.blockSize }

// SmallBuffer returns an empty pooled buffer of min(64 KiB, block size) capacity.
func (c *Codec) SmallBuffer() []byte {
	return c.getBuffer(&c.small, c.SmallBufferLen())
}

// SmallBufferLen is the capacity of SmallBuffer's buffers.
func (c *Codec) SmallBufferLen() int { return min(smallBufferLen, c.blockSize) }

// BlockBuffer returns an empty pooled buffer of one block's capacity.
func (c *Codec) BlockBuffer() []byte { return c.getBuffer(&c.blocks, c.blockSize) }

// FrameBuffer returns an empty pooled buffer with room for one full block's frame.
func (c *Codec) FrameBuffer() []byte { return c.getBuffer(&c.frames, int(c.fullFrameLen())) }

// PutBuffer returns a buffer from SmallBuffer, BlockBuffer or FrameBuffer to its pool; buffers of
// any other capacity are left to the garbage collector.
func (c *Codec) PutBuffer(b []byte) {
	var p *sync.Pool
	switch cap(b) {
	case c.blockSize:
		p = &c.blocks
	case int(c.fullFrameLen()):
		p = &c.frames
	case c.SmallBufferLen():
		p = &c.small
	default:
		return
	}
	b = b[:0]
	p.Put(&b)
}

func (c *Codec) getBuffer(p *sync.Pool, n int) []byte {
	if b, ok := p.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, n)
}

// fullFrameLen is the length of a full block's frame.
func (c *Codec) fullFrameLen() int64 { return int64(ChunkLen(c.blockSize, c.g) + crcLen) }

// FullFrameLen is the length of a full block's frame (chunk and checksum), the capacity of
// FrameBuffer's buffers.
func (c *Codec) FullFrameLen() int { return int(c.fullFrameLen()) }

// NewCodec returns a codec for geometry g and blocks of up to blockSize data bytes.
func NewCodec(g Geometry, blockSize int) (*Codec, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if blockSize <= 0 {
		return nil, fmt.Errorf("erasure: block size %d: must be positive", blockSize)
	}
	// One goroutine per call: on a node every concurrent upload and read already runs its own
	// codec call, and reedsolomon's fan-out allocates on every block (see DESIGN.md, "Speed").
	rs, err := reedsolomon.New(g.Data, g.Parity, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, fmt.Errorf("erasure: reed-solomon %s: %w", g, err)
	}
	return &Codec{g: g, blockSize: blockSize, rs: rs}, nil
}

// BlockEncoder encodes the blocks of one segment into framed chunks whose checksums bind each
// frame to its shard and block. Its buffers grow to the largest block it has encoded, so a small
// file costs small buffers. Not safe for concurrent use.
type BlockEncoder struct {
	c      *Codec
	frames [][]byte // k+m buffers, each with room for the largest frame so far
	chunks [][]byte // chunk views into frames, handed to reedsolomon
	out    [][]byte // frame views returned by Encode
	seeds  []uint32 // shardSeed per shard index of the current segment
	block  int      // index of the next block within the segment
	format uint16   // FormatV2, or FormatV1 during a rolling upgrade (StartFormat)
}

// NewBlockEncoder returns an encoder; Start names the segment it encodes. Release it with
// PutBlockEncoder when done, so the next upload reuses its buffers.
func (c *Codec) NewBlockEncoder() *BlockEncoder {
	if e, ok := c.encoders.Get().(*BlockEncoder); ok {
		return e
	}
	n := c.g.Total()
	return &BlockEncoder{
		c:      c,
		frames: make([][]byte, n),
		chunks: make([][]byte, n),
		out:    make([][]byte, n),
		seeds:  make([]uint32, n),
	}
}

// PutBlockEncoder returns e to its codec's pool; e must not be used afterwards.
func (c *Codec) PutBlockEncoder(e *BlockEncoder) {
	if e != nil && e.c == c {
		c.encoders.Put(e)
	}
}

// Start begins segment seg in the current format: the next Encode is its block 0.
func (e *BlockEncoder) Start(seg SegmentID) { e.StartFormat(seg, FormatCurrent) }

// StartFormat begins segment seg with frames of the given format (FormatV1 or FormatV2). A writer
// uses FormatV1 only while some Raft server is too old to read v2 shards.
func (e *BlockEncoder) StartFormat(seg SegmentID, format uint16) {
	e.format = format
	for i := range e.seeds {
		e.seeds[i] = shardSeed(seg.Shard(i))
	}
	e.block = 0
}

// Encode returns k+m frames (chunk||crc) for the next block of the segment, of 1..blockSize data
// bytes. The returned slices stay valid only until the next Encode call (callers copy or finish
// with them first).
func (e *BlockEncoder) Encode(block []byte) ([][]byte, error) {
	if len(block) == 0 || len(block) > e.c.blockSize {
		return nil, fmt.Errorf("erasure: encode block of %d bytes: want 1..%d", len(block), e.c.blockSize)
	}
	if fl := e.FrameLen(len(block)); cap(e.frames[0]) < fl {
		e.frames = reedsolomon.AllocAligned(len(e.frames), fl)
	}
	return e.EncodeInto(block, e.frames)
}

// FrameLen is the length of each frame of a block of n data bytes.
func (e *BlockEncoder) FrameLen(n int) int { return ChunkLen(n, e.c.g) + crcLen }

// EncodeInto is Encode into buffers of the caller's: frames[i] (k+m of them) must have capacity
// for FrameLen(len(block)) bytes, and the returned frames are frames[i] resliced, so a writer that
// hands each shard stream its own buffer copies nothing after the encode.
func (e *BlockEncoder) EncodeInto(block []byte, frames [][]byte) ([][]byte, error) {
	if len(block) == 0 || len(block) > e.c.blockSize {
		return nil, fmt.Errorf("erasure: encode block of %d bytes: want 1..%d", len(block), e.c.blockSize)
	}
	cl := ChunkLen(len(block), e.c.g)
	if err := e.chunkViews(frames, cl); err != nil {
		return nil, err
	}
	for i := range e.c.g.Data {
		// Systematic layout: data chunk i is block[i*cl:(i+1)*cl], zero-padded at the end.
		lo := min(i*cl, len(block))
		clear(e.chunks[i][copy(e.chunks[i], block[lo:min(lo+cl, len(block))]):])
	}
	return e.encodeChunks()
}

// EncodeDataInPlace is EncodeInto for a block whose data already sits in the frames: the caller
// read a full block of the codec's block size straight into frames[i][:DataChunkLen()] for the
// k data shards, zero-padding the last one, so nothing is copied; parity and checksums are
// added as EncodeInto adds them. Only full blocks can be laid out ahead of time (a short block
// has shorter chunks); the last block of a body goes through EncodeInto.
func (e *BlockEncoder) EncodeDataInPlace(frames [][]byte) ([][]byte, error) {
	if err := e.chunkViews(frames, e.DataChunkLen()); err != nil {
		return nil, err
	}
	return e.encodeChunks()
}

// DataChunkLen is the chunk length of a full block: where a data shard's frame ends its data.
func (e *BlockEncoder) DataChunkLen() int { return ChunkLen(e.c.blockSize, e.c.g) }

// chunkViews points the encoder's chunks at the first cl bytes of each frame buffer.
func (e *BlockEncoder) chunkViews(frames [][]byte, cl int) error {
	if len(frames) != len(e.chunks) {
		return fmt.Errorf("erasure: encode into %d frames: want %d", len(frames), len(e.chunks))
	}
	for i := range frames {
		if cap(frames[i]) < cl+crcLen {
			return fmt.Errorf("erasure: encode: frame %d has room for %d bytes, want %d", i, cap(frames[i]), cl+crcLen)
		}
		e.chunks[i] = frames[i][:cl]
	}
	return nil
}

// encodeChunks computes the parity chunks from the data chunks and seals every frame with its
// checksum.
func (e *BlockEncoder) encodeChunks() ([][]byte, error) {
	if err := e.c.rs.Encode(e.chunks); err != nil {
		return nil, fmt.Errorf("erasure: encode: %w", err)
	}
	for i := range e.chunks {
		if e.format == FormatV1 {
			e.out[i] = appendFrameCRCv1(e.chunks[i])
		} else {
			e.out[i] = appendFrameCRC(e.chunks[i], e.seeds[i], e.block)
		}
	}
	e.block++
	return e.out, nil
}
