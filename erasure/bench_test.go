package erasure

import (
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

const benchBlockSize = 1 << 20

func BenchmarkEncode(b *testing.B) {
	for _, g := range testGeometries {
		b.Run(g.String(), func(b *testing.B) {
			c, err := NewCodec(g, benchBlockSize)
			if err != nil {
				b.Fatal(err)
			}
			enc := c.NewBlockEncoder()
			enc.Start(testSeg)
			block := randomBytes(rand.New(rand.NewPCG(1, 2)), benchBlockSize)
			b.SetBytes(benchBlockSize)
			for b.Loop() {
				if _, err := enc.Encode(block); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadSegment reads segments of 1 and 16 blocks: allocations per op are the same for
// both (they are per call, not per block).
func BenchmarkReadSegment(b *testing.B) {
	g := Geometry{Data: 4, Parity: 2}
	c, err := NewCodec(g, benchBlockSize)
	if err != nil {
		b.Fatal(err)
	}
	for _, blocks := range []int{1, 16} {
		segLen := int64(blocks * benchBlockSize)
		shards := encodeSegment(b, c, randomBytes(rand.New(rand.NewPCG(3, 4)), int(segLen)))
		degraded := append([][]byte{nil}, shards[1:]...)
		tests := []struct {
			name   string
			shards [][]byte
		}{
			{name: "healthy", shards: shards},
			{name: "one data shard missing", shards: degraded},
		}
		for _, tt := range tests {
			b.Run(fmt.Sprintf("%d blocks/%s", blocks, tt.name), func(b *testing.B) {
				src := newMemSource(tt.shards)
				b.SetBytes(segLen)
				for b.Loop() {
					if _, err := c.ReadSegment(b.Context(), io.Discard, testSeg, segLen, 0, segLen, src); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
