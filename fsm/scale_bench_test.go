package fsm_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// scaleFiles lists the file counts BenchmarkMetadataScale fills the state machine to, in order,
// reporting at each. make bench uses the default; the figures use
// -fsm.scale=1000000,10000000 (10 M needs a store that is not held in RAM).
var scaleFiles = flag.String("fsm.scale", "100000", "comma-separated file counts for BenchmarkMetadataScale")

var scaleIDs = flag.String("fsm.ids", "time", "ids of BenchmarkMetadataScale: time (time-ordered, as core mints them) or random (as before)")

var scaleMetrics = flag.Bool("fsm.metrics", false, "print pebble's metrics of the store at each count of BenchmarkMetadataScale")

var scaleCache = flag.Int64("fsm.cache", 0, "block cache bytes of BenchmarkMetadataScale's store (0: fsm.DefaultCacheBytes)")

// scaleBatch is the number of create commands per ApplyBatch: raft hands the FSM up to
// MaxAppendEntries (64) entries per batch in the cluster; a larger batch measures the store
// rather than the per-batch overhead.
const scaleBatch = 256

// BenchmarkMetadataScale drives the FSM directly (no HTTP, no Raft) with batches of createFile
// commands, each file with one token, as an upload commits them. At every count in -fsm.scale it
// reports the apply rate, Go heap and RSS per file, snapshot size and the rates of save and
// restore, and token-check and details latency; the table goes to stdout. It is a scale
// measurement, so it runs once whatever -benchtime says.
func BenchmarkMetadataScale(b *testing.B) {
	var targets []int
	for _, s := range strings.Split(*scaleFiles, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("-fsm.scale: %q is not a positive file count", s)
		}
		targets = append(targets, n)
	}
	slices.Sort(targets)
	if *scaleIDs != "time" && *scaleIDs != "random" {
		b.Fatalf("-fsm.ids: %q is neither time nor random", *scaleIDs)
	}
	for b.Loop() {
		runMetadataScale(b, targets)
	}
}

type scaleRow struct {
	files                          int
	applyPerSec                    float64
	heapPerFile                    float64
	diskBytes                      int64
	snapshotBytes                  int64
	saveMBps, restoreMBps          float64
	restoreSeconds                 float64
	reopenSeconds                  float64 // close, open and first read in this process
	fresh                          freshProcess
	tokenP50, tokenP99, detailsP99 time.Duration
}

// freshProcess is what a new process that reopened the store and served 20,000 token checks
// uses: as a restarted node would.
type freshProcess struct {
	openSeconds            float64
	heap, rssAnon, rssFile uint64
}

func runMetadataScale(b *testing.B, targets []int) {
	dir := b.TempDir()
	f := openFSM(b, dir)
	var index uint64 = 1
	applyOne(b, f, index, fsm.CmdInitCluster, "init", scaleInit())
	heap0, _ := memoryInUse()
	rng := rand.New(rand.NewPCG(1, 2))
	var rows []scaleRow
	var applying time.Duration
	filled := 0
	for _, target := range targets {
		for filled < target {
			n := min(scaleBatch, target-filled)
			logs := make([]*raft.Log, n)
			for i := range logs {
				index++
				filled++
				at := scaleTime(filled)
				data, err := fsm.EncodeCommand(fsm.CmdCreateFile, scaleRequestID(filled), at, scaleFile(filled, at))
				if err != nil {
					b.Fatal(err)
				}
				logs[i] = &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
			}
			began := time.Now()
			for i, r := range f.ApplyBatch(logs) {
				if res, ok := r.(*fsm.Result); !ok || res.Err != nil {
					b.Fatalf("apply create %d: %+v", filled-n+i+1, r)
				}
			}
			applying += time.Since(began)
			if filled%1_000_000 == 0 && filled < target {
				fmt.Fprintf(os.Stderr, "metadata scale: %d files, %.0f creates/s so far, load %s\n", filled,
					float64(filled)/applying.Seconds(), loadAverage())
			}
		}
		if *scaleMetrics {
			fmt.Printf("pebble metrics at %d files:\n%s\n", filled, fsm.StoreMetrics(f))
		}
		heap, _ := memoryInUse()
		row := scaleRow{
			files:       filled,
			applyPerSec: float64(filled) / applying.Seconds(),
			heapPerFile: float64(int64(heap)-int64(heap0)) / float64(filled),
		}
		measureSnapshot(b, f, &row)
		if err := f.Close(); err != nil { // flushes the memtables
			b.Fatal(err)
		}
		row.diskBytes = dirBytes(b, dir)
		row.fresh = probeFreshProcess(b, dir, filled, rng)
		began := time.Now()
		f = openFSM(b, dir)
		if _, ok := f.Config(); !ok {
			b.Fatal("reopened store has no config")
		}
		row.reopenSeconds = time.Since(began).Seconds()
		row.tokenP50, row.tokenP99 = latency(func() {
			if _, ok := f.TokenBySecret(scaleSecret(1 + rng.IntN(filled))); !ok {
				b.Fatal("token check: a committed token is unknown")
			}
		})
		_, row.detailsP99 = latency(func() {
			if _, ok := f.File(scaleFileID(1 + rng.IntN(filled))); !ok {
				b.Fatal("details: a committed file is unknown")
			}
		})
		rows = append(rows, row)
		if len(targets) > 1 { // a long run: each row as soon as it is measured
			printScaleTable([]scaleRow{row})
		}
	}
	printScaleTable(rows)
	last := rows[len(rows)-1]
	b.ReportMetric(last.applyPerSec, "creates/s")
	b.ReportMetric(last.heapPerFile, "heap-B/file")
	b.ReportMetric(float64(last.diskBytes)/float64(last.files), "disk-B/file")
	b.ReportMetric(float64(last.fresh.rssAnon+last.fresh.rssFile), "fresh-rss-B")
	b.ReportMetric(float64(last.snapshotBytes)/float64(last.files), "snapshot-B/file")
	b.ReportMetric(float64(last.tokenP99.Nanoseconds()), "token-p99-ns")
}

// measureSnapshot persists a snapshot to a file (as raft's file snapshot store does), then
// restores it into a fresh FSM, which is what a restart does today.
func measureSnapshot(b *testing.B, f *fsm.FSM, row *scaleRow) {
	path := filepath.Join(b.TempDir(), "state.snap")
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	sink := &fileSink{File: out}
	began := time.Now()
	snap, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		b.Fatal(err)
	}
	snap.Release()
	saved := time.Since(began)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	row.snapshotBytes = st.Size()
	row.saveMBps = float64(st.Size()) / (1 << 20) / saved.Seconds()

	in, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	fresh := openFSM(b, b.TempDir())
	began = time.Now()
	if err := fresh.Restore(io.NopCloser(bufio.NewReaderSize(in, 1<<20))); err != nil {
		b.Fatal(err)
	}
	restored := time.Since(began)
	_ = in.Close()
	row.restoreSeconds = restored.Seconds()
	row.restoreMBps = float64(st.Size()) / (1 << 20) / restored.Seconds()
	if fresh.AppliedIndex() != f.AppliedIndex() {
		b.Fatalf("restored applied index %d, want %d", fresh.AppliedIndex(), f.AppliedIndex())
	}
}

type fileSink struct{ *os.File }

func (s *fileSink) ID() string { return "bench" }
func (s *fileSink) Cancel() error {
	return s.File.Close()
}
func (s *fileSink) Close() error {
	if err := s.File.Sync(); err != nil {
		return err
	}
	return s.File.Close()
}

// latency runs op 20,000 times and returns its p50 and p99.
func latency(op func()) (p50, p99 time.Duration) {
	const samples = 20000
	d := make([]time.Duration, samples)
	for i := range d {
		began := time.Now()
		op()
		d[i] = time.Since(began)
	}
	slices.Sort(d)
	return d[samples/2], d[samples*99/100]
}

func printScaleTable(rows []scaleRow) {
	fmt.Println()
	fmt.Println("| files | creates/s | Go heap/file (filling) | disk/file | snapshot/file | save | restore | restore time | reopen to ready | fresh process: heap / RssAnon / RssFile | token check p50/p99 | details p99 |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %d | %.0f | %.0f B | %.0f B | %.0f B | %.0f MiB/s | %.0f MiB/s | %.2f s | %.3f s | %.1f / %.1f / %.1f MiB | %s / %s | %s |\n",
			r.files, r.applyPerSec, r.heapPerFile, float64(r.diskBytes)/float64(r.files),
			float64(r.snapshotBytes)/float64(r.files), r.saveMBps, r.restoreMBps, r.restoreSeconds, r.reopenSeconds,
			float64(r.fresh.heap)/(1<<20), float64(r.fresh.rssAnon)/(1<<20), float64(r.fresh.rssFile)/(1<<20),
			r.tokenP50, r.tokenP99, r.detailsP99)
	}
}

// probeFreshProcess runs the test binary's reopen probe (main_test.go) on the closed store: a new
// process opens it and checks 20,000 random tokens, then reports its memory.
func probeFreshProcess(b *testing.B, dir string, filled int, rng *rand.Rand) freshProcess {
	secrets := filepath.Join(b.TempDir(), "secrets")
	var list strings.Builder
	for range 20000 {
		list.WriteString(scaleSecret(1+rng.IntN(filled)) + "\n")
	}
	if err := os.WriteFile(secrets, []byte(list.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CAIRN_FSM_REOPEN_PROBE="+dir+"|"+secrets)
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("reopen probe: %v: %s", err, out)
	}
	var p freshProcess
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "open=%f heap=%d rssanon=%d rssfile=%d",
		&p.openSeconds, &p.heap, &p.rssAnon, &p.rssFile); err != nil {
		b.Fatalf("reopen probe said %q: %v", out, err)
	}
	return p
}

// loadAverage is the first field of /proc/loadavg ("?" where there is none).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// memoryInUse returns the live Go heap after a full collection and the process's resident set.
func memoryInUse() (heap, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, residentBytes()
}

// residentBytes reads VmRSS from /proc/self/status (0 where there is none).
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

var scaleGeometry = erasure.Geometry{Data: 2, Parity: 1}

func scaleInit() fsm.InitCluster {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return fsm.InitCluster{
		Config: fsm.ClusterConfig{
			ClusterID: "bench", Geometry: scaleGeometry, BlockSize: 1 << 20, BlocksPerSegment: 64,
			SigningKey: []byte("bench-signing-key"), CreatedAt: at,
		},
		RootKey: fsm.APIKey{ID: "root", Name: "root", Hash: fsm.HashSecret("root"), Permissions: []string{"*"}, CreatedAt: at},
	}
}

// scaleFile is a realistic small upload: ids and secrets of the real lengths, a 1-segment 2+1
// layout on three of many nodes, a name, a mime type and a tag.
func scaleFile(n int, at time.Time) fsm.CreateFile {
	id := scaleFileID(n)
	sum := sha256.Sum256([]byte(id))
	nodes := []string{"node-" + strconv.Itoa(n%7), "node-" + strconv.Itoa((n+1)%7), "node-" + strconv.Itoa((n+2)%7)}
	file := fsm.File{
		ID: id, Name: "report-" + strconv.Itoa(n) + ".pdf", MimeType: "application/pdf",
		CreatorID: "key_app0000000000001", CreatedBy: nodes[0], Size: 4096, Tags: []string{"invoices"},
		CreatedAt: at, UpdatedAt: at, ETag: hex.EncodeToString(sum[:]),
		Layout: fsm.Layout{Geometry: scaleGeometry, BlockSize: 1 << 20, Segments: []fsm.Segment{
			{Offset: 0, Size: 4096, Nodes: nodes},
		}},
	}
	token := fsm.Token{
		ID: "TOK" + scaleID(n, 't'), Secret: scaleSecret(n), FileID: id, Access: fsm.AccessFull,
		CreatorID: file.CreatorID, CreatedAt: at, CreatedBy: nodes[0],
	}
	return fsm.CreateFile{File: file, Tokens: []fsm.Token{token}}
}

// scaleFileID is "FIL" and 17 alphanumerics derived from n. With -fsm.ids=time (the default)
// they are laid out as core.NewFileID mints them: 6 characters of the creation second since
// 2020-01-01 in base 62 (sortable), then 11 that are as random as the API's, so new ids cluster
// at the end of the key space. With -fsm.ids=random all 17 are random, as ids minted before, so
// the store sees inserts all over its key space.
func scaleFileID(n int) string { return "FIL" + scaleID(n, 'f') }

func scaleID(n int, kind byte) string {
	const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	sum := sha256.Sum256(binary.BigEndian.AppendUint64([]byte{kind}, uint64(n)))
	id := make([]byte, 17)
	for i := range id {
		id[i] = alnum[int(sum[i])%len(alnum)]
	}
	if *scaleIDs == "time" {
		secs := scaleTime(n).Unix() - scaleIDEpoch.Unix()
		for i := 5; i >= 0; i-- {
			id[i] = alnum[secs%62]
			secs /= 62
		}
	}
	return string(id)
}

// scaleRequestID is a request id as core mints them: 16 bytes in hex, the first 5 the second
// since 2020-01-01 with -fsm.ids=time, all random with -fsm.ids=random.
func scaleRequestID(n int) string {
	sum := sha256.Sum256(binary.BigEndian.AppendUint64([]byte{'r'}, uint64(n)))
	if *scaleIDs == "time" {
		var secs [8]byte
		binary.BigEndian.PutUint64(secs[:], uint64(scaleTime(n).Unix()-scaleIDEpoch.Unix()))
		copy(sum[:5], secs[3:])
	}
	return hex.EncodeToString(sum[:16])
}

var (
	scaleIDEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	scaleStart   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// scaleTime is the command time of the n-th create: 1 ms apart.
func scaleTime(n int) time.Time { return scaleStart.Add(time.Duration(n) * time.Millisecond) }

// scaleSecret is a 32-byte secret in URL-safe base64, as the API mints them, derived from n.
func scaleSecret(n int) string {
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], uint64(n))
	sum := sha256.Sum256(seed[:])
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func applyOne(b *testing.B, f *fsm.FSM, index uint64, typ fsm.CommandType, req string, p any) {
	data, err := fsm.EncodeCommand(typ, req, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), p)
	if err != nil {
		b.Fatal(err)
	}
	if r, ok := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}).(*fsm.Result); !ok || r.Err != nil {
		b.Fatalf("apply %s: %+v", typ, r)
	}
}

func openFSM(b *testing.B, dir string) *fsm.FSM {
	f, err := fsm.New(dir, fsm.Options{CacheBytes: *scaleCache})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.Close() })
	return f
}

// dirBytes is the size of the files under dir: the store's generation, flushed.
func dirBytes(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		n += info.Size()
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
