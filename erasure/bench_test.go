package erasure

import (
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

func BenchmarkReadSegment(b *testing.B) {
	const segLen = 8 * benchBlockSize
	g := Geometry{Data: 4, Parity: 2}
	c, err := NewCodec(g, benchBlockSize)
	if err != nil {
		b.Fatal(err)
	}
	shards := encodeSegment(b, c, randomBytes(rand.New(rand.NewPCG(3, 4)), segLen))
	degraded := append([][]byte{nil}, shards[1:]...)
	tests := []struct {
		name   string
		shards [][]byte
	}{
		{name: "healthy", shards: shards},
		{name: "one data shard missing", shards: degraded},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
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
