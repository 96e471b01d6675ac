package erasure

import "testing"

func TestChunkLenAndFrameBytes(t *testing.T) {
	g42 := Geometry{Data: 4, Parity: 2}
	tests := []struct {
		name      string
		segLen    int64
		blockSize int
		g         Geometry
		chunkLen  int // of a block of min(segLen, blockSize) bytes
		shardSize int64
	}{
		{name: "empty", segLen: 0, blockSize: 16, g: g42, chunkLen: 0, shardSize: 0},
		{name: "one byte", segLen: 1, blockSize: 16, g: g42, chunkLen: 1, shardSize: 5},
		{name: "padded", segLen: 5, blockSize: 16, g: g42, chunkLen: 2, shardSize: 6},
		{name: "full block", segLen: 16, blockSize: 16, g: g42, chunkLen: 4, shardSize: 8},
		{name: "full plus one", segLen: 17, blockSize: 16, g: g42, chunkLen: 4, shardSize: 8 + 5},
		{name: "uneven block", segLen: 30, blockSize: 10, g: Geometry{3, 2}, chunkLen: 4, shardSize: 3 * 8},
		{name: "2+1 short tail", segLen: 25, blockSize: 10, g: Geometry{2, 1}, chunkLen: 5, shardSize: 2*9 + 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChunkLen(int(min(tt.segLen, int64(tt.blockSize))), tt.g); got != tt.chunkLen {
				t.Errorf("ChunkLen = %d, want %d", got, tt.chunkLen)
			}
			if tt.segLen == 0 {
				return
			}
			if got := testShardSize(tt.segLen, tt.blockSize, tt.g) - ShardHeaderLen; got != tt.shardSize {
				t.Errorf("frame bytes = %d, want %d", got, tt.shardSize)
			}
		})
	}
}
