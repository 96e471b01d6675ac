package erasure

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// BenchmarkReadSegment reads segments of 1 and 16 blocks, and a 4 KiB one (a small file, one short
// block): allocations per op are the same for all (they are per call, not per block, and the
// frame buffers are pooled).
func BenchmarkReadSegment(b *testing.B) {
	g := Geometry{Data: 4, Parity: 2}
	c, err := NewCodec(g, benchBlockSize)
	if err != nil {
		b.Fatal(err)
	}
	for _, segLen := range []int64{4 << 10, benchBlockSize, 16 * benchBlockSize} {
		name := fmt.Sprintf("%d blocks", segLen/benchBlockSize)
		if segLen < benchBlockSize {
			name = fmt.Sprintf("%d KiB", segLen>>10)
		}
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
			b.Run(name+"/"+tt.name, func(b *testing.B) {
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

// BenchmarkShardCommit commits shards of a few sizes from 32 goroutines, as files of their own
// and as volume records (with and without the group commit's wait), on the test's temp dir: the
// measurement behind SmallShardMax and GroupCommitWait. Besides time it reports the process's CPU
// per commit (user and system, from getrusage: fdatasync costs CPU) and records per fdatasync.
func BenchmarkShardCommit(b *testing.B) {
	noWait := DefaultStoreOptions()
	noWait.GroupCommitWait = 0
	for _, mode := range []struct {
		name string
		opts StoreOptions
	}{{"files", StoreOptions{}}, {"volumes", DefaultStoreOptions()}, {"volumes-nowait", noWait}} {
		for _, size := range []int{2 << 10, 16 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("%s/%dKiB", mode.name, size>>10), func(b *testing.B) {
				s, err := OpenShardStoreWith(b.TempDir(), mode.opts)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				body := randomBytes(rand.New(rand.NewPCG(3, 4)), size)
				var seq atomic.Int64
				b.SetBytes(int64(size))
				b.SetParallelism(16) // 16 x GOMAXPROCS writers
				cpu0 := processCPU(b)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						w, err := s.Create(ShardID{File: "FILbench", Segment: int(seq.Add(1)), Index: 0})
						if err == nil {
							_, err = w.Write(body)
						}
						if err == nil {
							err = w.Commit()
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
				if st := s.VolumeStats(); st.Fsyncs > 0 {
					b.ReportMetric(float64(st.Records)/float64(st.Fsyncs), "records/fsync")
				}
			})
		}
	}
}

// processCPU is the user plus system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkShardOpenFrames reads a 2 KiB shard whole through OpenFrames, from a file of its own
// and from a volume record: the store's part of a small GET.
func BenchmarkShardOpenFrames(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts StoreOptions
	}{{"files", StoreOptions{}}, {"volumes", DefaultStoreOptions()}} {
		b.Run(mode.name, func(b *testing.B) {
			s, err := OpenShardStoreWith(b.TempDir(), mode.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			id := ShardID{File: "FILread", Segment: 0, Index: 0}
			w, _ := s.Create(id)
			_, _ = w.Write(append(AppendShardHeader(nil, id), randomBytes(rand.New(rand.NewPCG(5, 6)), 2<<10)...))
			if err := w.Commit(); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4<<10)
			b.ReportAllocs()
			for b.Loop() {
				r, err := s.OpenFrames(id, 0, -1)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(r, buf[:ShardHeaderLen+2<<10]); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}
