package erasure

// crcLen is the size of the CRC-32C trailer of every frame.
const crcLen = 4

// ChunkLen is the length of each of the k+m chunks of a block holding blockDataLen data bytes:
// ceil(n/k), the last data chunk being zero-padded. It is 0 for n <= 0.
func ChunkLen(blockDataLen int, g Geometry) int {
	if blockDataLen <= 0 || g.Data <= 0 {
		return 0
	}
	return (blockDataLen + g.Data - 1) / g.Data
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
