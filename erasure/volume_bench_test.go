package erasure

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// volumeScanBytesEnv sets how many bytes of volumes BenchmarkVolumeOpen scans (default 256 MiB,
// so that `make bench` stays short; the figure in DESIGN.md is for 2 GiB).
const volumeScanBytesEnv = "CAIRN_BENCH_VOLUME_BYTES"

// BenchmarkVolumeOpen measures a restart: opening a store whose volumes hold records of small
// shards, with their index files (the records listed there, as after any earlier open) and
// without (every volume scanned and its index file written, as on the first start after an
// upgrade or after the index files were lost), from the page cache (warm) and from the disk
// (cold: the pages dropped with fadvise before each open, as after a reboot), for v2 and v1
// volumes, and for file ids the API mints (the index packs their keys) and others. It prints a
// table, with the heap the open store holds per record (index and id filters).
//
//	CAIRN_BENCH_VOLUME_BYTES=$((2<<30)) go test -run '^$' -bench VolumeOpen -benchtime 2x ./erasure/
func BenchmarkVolumeOpen(b *testing.B) {
	total := int64(256 << 20)
	if v := os.Getenv(volumeScanBytesEnv); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a byte count", volumeScanBytesEnv, v)
		}
		total = n
	}
	// One row per sub-benchmark: the testing package may run one several times (b.N = 1 first),
	// and the last run, the one it reports, wins.
	var names []string
	rows := map[string]string{}
	for _, c := range []struct {
		name   string
		format func() volumeFormat
		body   int
		minted bool // file ids of the shape core.NewFileID makes, else of 24 characters
	}{
		{"v2", func() volumeFormat { return newV2Format(newVolumeKey()) }, 2 << 10, true},
		{"v2", func() volumeFormat { return newV2Format(newVolumeKey()) }, 2 << 10, false},
		{"v2", func() volumeFormat { return newV2Format(newVolumeKey()) }, 16 << 10, true},
		{"v1", v1Format, 2 << 10, true},
	} {
		dir := b.TempDir()
		records, bytes := writeBenchVolumes(b, dir, c.format, c.body, total, c.minted)
		ids := map[bool]string{true: "minted", false: "other"}[c.minted]
		for _, source := range []string{"scan", "index"} {
			for _, cold := range []bool{false, true} {
				cache := map[bool]string{false: "warm", true: "cold"}[cold]
				name := fmt.Sprintf("%s/%dKiB/%s/%s/%s", c.name, c.body>>10, ids, source, cache)
				b.Run(name, func(b *testing.B) {
					b.SetBytes(bytes)
					var spent time.Duration
					var heap float64
					for range b.N {
						b.StopTimer()
						if source == "scan" {
							removeVolumeIndexes(b, dir)
						} else {
							ensureIndexFiles(b, dir)
						}
						b.StartTimer()
						if cold {
							b.StopTimer()
							dropVolumeCache(b, dir)
							b.StartTimer()
						}
						base := heapInUse()
						start := time.Now()
						s, err := OpenShardStoreWith(dir, DefaultStoreOptions())
						if err != nil {
							b.Fatal(err)
						}
						spent += time.Since(start)
						b.StopTimer()
						heap = float64(heapInUse()-base) / float64(records)
						st := s.VolumeStats()
						if st.Shards != records {
							b.Fatalf("%d shards indexed, want %d", st.Shards, records)
						}
						if listed := st.OpenListed == int64(records); listed != (source == "index") {
							b.Fatalf("%s: %d records from index files, %d scanned", source, st.OpenListed, st.OpenScanned)
						}
						s.Close()
						b.StartTimer()
					}
					per := spent / time.Duration(b.N)
					if _, ok := rows[name]; !ok {
						names = append(names, name)
					}
					rows[name] = fmt.Sprintf("| %s | %d KiB | %s | %s | %s | %.2f GiB | %d | %.2f s | %.0f MiB/s | %.2f µs | %.0f B |",
						c.name, c.body>>10, ids, source, cache, float64(bytes)/(1<<30), records, per.Seconds(),
						float64(bytes)/(1<<20)/per.Seconds(), float64(per.Microseconds())/float64(records), heap)
				})
			}
		}
	}
	var table []string
	for _, n := range names {
		table = append(table, rows[n])
	}
	fmt.Printf("restart (open of a store, whole in-memory index rebuilt):\n"+
		"| volume format | shard | file ids | from | cache | volumes | records | open | volume bytes per second | per record | heap per record |\n"+
		"|---|---|---|---|---|---|---|---|---|---|---|\n%s\n", strings.Join(table, "\n"))
}

// heapInUse is the live heap after a full collection.
func heapInUse() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// writeBenchVolumes fills dir's volumes (1 GiB each, as by default) with records of body bytes
// up to total bytes, synced, and returns how many records and bytes it wrote. Every file has three
// shards; its id is of the shape core.NewFileID mints when minted is true, else 24 characters.
func writeBenchVolumes(b *testing.B, dir string, format func() volumeFormat, body int, total int64, minted bool) (int, int64) {
	b.Helper()
	vdir := filepath.Join(dir, "volumes")
	if err := os.MkdirAll(vdir, 0o750); err != nil {
		b.Fatal(err)
	}
	payload := randomBytes(rand.New(rand.NewPCG(7, 8)), body)
	at := time.Unix(1_780_000_000, 0)
	var rec []byte
	records, written := 0, int64(0)
	for vol := uint32(1); written < total; vol++ {
		f, err := os.Create(filepath.Join(vdir, volumeName(vol)))
		if err != nil {
			b.Fatal(err)
		}
		vf := format()
		w := bufio.NewWriterSize(f, 4<<20)
		size, _ := w.Write(vf.appendVolumeHeader(nil, vol, at))
		for int64(size) < DefaultStoreOptions().VolumeSize && written+int64(size) < total {
			id := ShardID{File: fmt.Sprintf("FIL%021d", records/3), Segment: 0, Index: records % 3}
			if minted {
				id.File = packableFileID(strconv.Itoa(records / 3))
			}
			rec = vf.appendRecord(rec[:0], recordShard, id, uint64(records+1), at, payload)
			n, err := w.Write(rec)
			if err != nil {
				b.Fatal(err)
			}
			size += n
			records++
		}
		written += int64(size)
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	return records, written
}

// ensureIndexFiles opens and closes the store in dir, which writes the index files that are
// missing.
func ensureIndexFiles(b *testing.B, dir string) {
	b.Helper()
	s, err := OpenShardStoreWith(dir, DefaultStoreOptions())
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
}

// dropVolumeCache drops the page cache of dir's volumes and index files (synced, so their pages
// are clean), so that the next open reads them from the disk.
func dropVolumeCache(b *testing.B, dir string) {
	b.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "volumes", "*"))
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkShardStoreList measures List over a store of small shards only (minted file ids, in
// volumes listed by index files): the time per listed shard, the bytes allocated per shard, and
// the live heap List adds at its peak (the sorted snapshot it walks).
//
//	go test -run '^$' -bench ShardStoreList -benchtime 2x ./erasure/
func BenchmarkShardStoreList(b *testing.B) {
	const records = 1 << 20
	dir := b.TempDir()
	n, _ := writeBenchVolumes(b, dir, func() volumeFormat { return newV2Format(newVolumeKey()) }, 64, records*170, true)
	s, err := OpenShardStoreWith(dir, DefaultStoreOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var peak int64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		base := heapInUse()
		listed := 0
		err := s.List(func(ShardInfo) error {
			if listed++; listed == n/2 { // the snapshot is live throughout the walk
				b.StopTimer()
				peak = max(peak, heapInUse()-base)
				b.StartTimer()
			}
			return nil
		})
		if err != nil || listed != n {
			b.Fatalf("listed %d of %d: %v", listed, n, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/shard")
	b.ReportMetric(float64(peak)/float64(n), "peak-heap-B/shard")
	b.ReportMetric(float64(n), "shards")
}
