package erasure

// crcLen is the size of the CRC-32C trailer of every frame.
const crcLen = 4

// Span is the range of data bytes of one segment within its file.
type Span struct {
	Offset, Length int64
}

// SegmentSpans cuts a file of fileSize bytes into segments of at most blockSize*blocksPerSegment
// bytes. A 0-byte file has no segments. Non-positive sizes yield nil, as there is no valid layout.
func SegmentSpans(fileSize int64, blockSize, blocksPerSegment int) []Span {
	if fileSize <= 0 || blockSize <= 0 || blocksPerSegment <= 0 {
		return nil
	}
	segSize := int64(blockSize) * int64(blocksPerSegment)
	spans := make([]Span, 0, (fileSize+segSize-1)/segSize)
	for off := int64(0); off < fileSize; off += segSize {
		spans = append(spans, Span{Offset: off, Length: min(segSize, fileSize-off)})
	}
	return spans
}

// ChunkLen is the length of each of the k+m chunks of a block holding blockDataLen data bytes:
// ceil(n/k), the last data chunk being zero-padded. It is 0 for n <= 0.
func ChunkLen(blockDataLen int, g Geometry) int {
	if blockDataLen <= 0 || g.Data <= 0 {
		return 0
	}
	return (blockDataLen + g.Data - 1) / g.Data
}

// ShardSize is the exact byte size of one shard file of a segment holding segLen data bytes
// (all chunks, including their checksums).
func ShardSize(segLen int64, blockSize int, g Geometry) int64 {
	if segLen <= 0 || blockSize <= 0 {
		return 0
	}
	full := segLen / int64(blockSize)
	size := full * int64(ChunkLen(blockSize, g)+crcLen)
	if rem := int(segLen % int64(blockSize)); rem > 0 {
		size += int64(ChunkLen(rem, g) + crcLen)
	}
	return size
}

// segmentLayout answers where each block of one segment lives, in data bytes and in shard bytes.
type segmentLayout struct {
	segLen    int64
	blockSize int
	g         Geometry
	blocks    int   // number of blocks in the segment
	frameLen  int64 // frame length of a full block: every block but possibly the last
}

func newSegmentLayout(segLen int64, blockSize int, g Geometry) segmentLayout {
	return segmentLayout{
		segLen:    segLen,
		blockSize: blockSize,
		g:         g,
		blocks:    int((segLen + int64(blockSize) - 1) / int64(blockSize)),
		frameLen:  int64(ChunkLen(blockSize, g) + crcLen),
	}
}

// blockLen is the number of data bytes in block j.
func (l segmentLayout) blockLen(j int) int {
	return int(min(int64(l.blockSize), l.segLen-int64(j)*int64(l.blockSize)))
}

// chunkLen is the chunk length of block j.
func (l segmentLayout) chunkLen(j int) int { return ChunkLen(l.blockLen(j), l.g) }

// shardOffset is the byte offset of block j's frame inside any shard of the segment.
func (l segmentLayout) shardOffset(j int) int64 { return int64(j) * l.frameLen }

// shardRange is the [off, off+n) byte range of every shard that holds blocks first..last.
func (l segmentLayout) shardRange(first, last int) (off, n int64) {
	off = l.shardOffset(first)
	end := l.shardOffset(last) + int64(l.chunkLen(last)+crcLen)
	return off, end - off
}
