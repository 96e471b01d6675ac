package erasure

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// smallVolumes are options with volumes small enough that tests rotate through several.
var smallVolumes = StoreOptions{SmallShardMax: smallShard, VolumeSize: 1 << 20}

// testShard is a v2 shard of id: its header, then payload bytes derived from id and size alone,
// so that a process that did not write it can still say what it must hold.
func testShard(id ShardID, size int) []byte {
	b := AppendShardHeader(nil, id)
	rng := rand.New(rand.NewPCG(uint64(len(id.File))*7919+uint64(id.Segment), uint64(id.Index)*31+uint64(size)))
	for range size {
		b = append(b, byte(rng.Uint32()))
	}
	return b
}

// readAll reads a shard through OpenFrames as a reader sees it: header, then every frame byte.
func readAll(s *ShardStore, id ShardID) ([]byte, error) {
	r, err := s.OpenFrames(id, 0, -1)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func mustRead(t *testing.T, s *ShardStore, id ShardID, want []byte) {
	t.Helper()
	got, err := readAll(s, id)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("shard %s: %d bytes, %v; want %d bytes byte-exact", id, len(got), err, len(want))
	}
}

// fillThenDelete commits n shards of size payload bytes under file, then deletes all but every
// keepEvery-th, and returns the kept and the deleted ids.
func fillThenDelete(t *testing.T, s *ShardStore, file string, n, keepEvery, size int) (keep, drop []ShardID) {
	t.Helper()
	for i := range n {
		id := ShardID{File: file, Segment: i, Index: 0}
		putShard(t, s, id, testShard(id, size))
		if i%keepEvery == 0 {
			keep = append(keep, id)
		} else {
			drop = append(drop, id)
		}
	}
	for _, id := range drop {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	return keep, drop
}

func volumeFiles(t *testing.T, dir string) []string { return storeFiles(t, dir, volumeSuffix) }

// storeFiles are the files of the store in dir's volumes directory whose names end in suffix, sorted.
func storeFiles(t *testing.T, dir, suffix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "volumes", "*"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// TestVolumeStoreLifecycle: small shards go to volumes, read back through every path, survive a
// reopen with their latest version, and deleted ones stay deleted (tombstones); shards that move
// between a record and a file as they are rewritten larger or smaller keep one version.
func TestVolumeStoreLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	want := map[ShardID][]byte{}
	for i := range 200 {
		id := ShardID{File: fmt.Sprintf("FILlife%02d", i%40), Segment: i / 40, Index: i % 3}
		want[id] = testShard(id, 100+i*97)
		putShard(t, s, id, want[id])
	}
	// Overwrites, deletes, and moves between the two homes.
	over := ShardID{File: "FILlife01", Segment: 0, Index: 1}
	want[over] = testShard(over, 999)
	putShard(t, s, over, want[over])
	gone := ShardID{File: "FILlife02", Segment: 0, Index: 2}
	if err := s.Delete(gone); err != nil {
		t.Fatal(err)
	}
	delete(want, gone)
	grown := ShardID{File: "FILlife03", Segment: 1, Index: 0}
	want[grown] = testShard(grown, 200<<10)
	putShard(t, s, grown, want[grown])
	shrunk := ShardID{File: "FILbig", Segment: 0, Index: 0}
	putShard(t, s, shrunk, testShard(shrunk, 300<<10))
	want[shrunk] = testShard(shrunk, 10)
	putShard(t, s, shrunk, want[shrunk])

	check := func(s *ShardStore) {
		t.Helper()
		var used int64
		for id, b := range want {
			mustRead(t, s, id, b)
			info, err := s.Stat(id)
			if err != nil || info.Size != int64(len(b)) || time.Since(info.ModTime) > time.Hour {
				t.Fatalf("Stat %s = %+v, %v", id, info, err)
			}
			used += int64(len(b))
		}
		if _, err := s.Stat(gone); !errors.Is(err, ErrShardNotFound) {
			t.Fatalf("deleted shard: %v", err)
		}
		if got := s.UsedBytes(); got != used {
			t.Fatalf("UsedBytes = %d, want %d", got, used)
		}
		var order []string
		if err := s.List(func(info ShardInfo) error { order = append(order, StoreOrder(info.ID)); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(order) != len(want) || !slices.IsSorted(order) {
			t.Fatalf("List gave %d ids (sorted by StoreOrder: %v), want %d", len(order), slices.IsSorted(order), len(want))
		}
		if loc, _ := s.Locate(shrunk); !loc.InVolume {
			t.Fatal("the shard rewritten small is still a file")
		}
		if _, err := os.Stat(s.Path(shrunk)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the large version's file is still there: %v", err)
		}
		if loc, _ := s.Locate(grown); loc.InVolume {
			t.Fatal("the shard rewritten large is still a record")
		}
	}
	check(s)
	if st := s.VolumeStats(); st.Volumes < 2 || st.Shards != len(want)-1 {
		t.Fatalf("stats %+v: want several volumes and %d records", st, len(want)-1)
	}
	s.Close()
	check(openStoreWith(t, dir, smallVolumes))
	// Volumes stay readable when small shards are no longer written to them.
	check(openFileStore(t, dir))
}

// TestVolumeGroupCommit: concurrent writers share fdatasyncs, and every commit is readable
// when it returns.
func TestVolumeGroupCommit(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), smallVolumes)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				id := ShardID{File: fmt.Sprintf("FILgc%d", g), Segment: i, Index: 0}
				b := testShard(id, 2000)
				w, err := s.Create(id)
				if err == nil {
					_, err = w.Write(b)
				}
				if err == nil {
					err = w.Commit()
				}
				if err == nil {
					var got []byte
					got, err = readAll(s, id)
					if err == nil && !bytes.Equal(got, b) {
						err = fmt.Errorf("shard %s not byte-exact right after Commit", id)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.VolumeStats()
	t.Logf("%d records in %d batches (%d fdatasyncs)", st.Records, st.Batches, st.Fsyncs)
	if st.Records != 640 || st.Fsyncs != st.Batches || st.Batches > st.Records {
		t.Fatalf("stats %+v", st)
	}
}

// TestVolumeTornTail cuts a volume at random offsets, as a crash mid-batch leaves it: at the next
// open every record wholly before the cut reads back byte-exact, the one across it is gone (and
// counted), nothing after it is visible, and the store takes new writes that survive a reopen.
func TestVolumeTornTail(t *testing.T) {
	src := t.TempDir()
	s := openStoreWith(t, src, smallVolumes)
	var ids []ShardID
	for i := range 60 {
		id := ShardID{File: "FILtorn", Segment: i, Index: 1}
		putShard(t, s, id, testShard(id, 50+i*97))
		ids = append(ids, id)
	}
	ends := map[ShardID]int64{}
	for _, id := range ids {
		loc, _ := s.Locate(id)
		ends[id] = loc.Offset + loc.Length
	}
	s.Close()
	vol := volumeFiles(t, src)[0]
	orig, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for round := range 12 {
		cut := int64(volumeHeaderLenV2) + rng.Int64N(int64(len(orig))-volumeHeaderLenV2)
		t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "volumes"), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "volumes", filepath.Base(vol)), orig[:cut], 0o640); err != nil {
				t.Fatal(err)
			}
			s := openStoreWith(t, dir, smallVolumes)
			whole := 0
			for _, id := range ids {
				if ends[id] <= cut {
					mustRead(t, s, id, testShard(id, 50+id.Segment*97))
					whole++
				} else if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
					t.Fatalf("shard %s past the cut is visible: %v", id, err)
				}
			}
			boundary := cut == volumeHeaderLenV2
			for _, end := range ends {
				boundary = boundary || end == cut
			}
			if st := s.VolumeStats(); !boundary && st.TornBytes == 0 {
				t.Fatalf("a cut mid-record was not counted: %+v", st)
			}
			after := ShardID{File: "FILafter", Segment: round, Index: 0}
			putShard(t, s, after, testShard(after, 300))
			s.Close()
			s = openStoreWith(t, dir, smallVolumes)
			mustRead(t, s, after, testShard(after, 300))
			if st := s.VolumeStats(); st.TornBytes != 0 {
				t.Fatalf("the second open found a torn tail again: %+v", st)
			}
		})
	}
}

// crashChildEnv names the directory of TestVolumeCrashChild, which runs only as the child.
const crashChildEnv = "CAIRN_VOLUME_CRASH_DIR"

// crashShardSize is the payload size of the crash test's shard id, so that the parent knows what
// every shard must hold.
func crashShardSize(id ShardID) int { return 100 + (id.Segment*131+id.Index*17)%6000 }

// TestVolumeCrashChild is the child of TestVolumeSIGKILLMidBatch: it commits small shards from
// many goroutines, printing "start <id>" before each Commit and "ack <id>" after it returns,
// until it is killed.
func TestVolumeCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestVolumeSIGKILLMidBatch")
	}
	s, err := OpenShardStoreWith(dir, smallVolumes)
	if err != nil {
		t.Fatal(err)
	}
	say := new(childReport).say
	var wg sync.WaitGroup
	for g := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := ShardID{File: fmt.Sprintf("FILcrash%02d", g), Segment: i, Index: g % 3}
				w, err := s.Create(id)
				if err != nil {
					panic(err)
				}
				if _, err := w.Write(testShard(id, crashShardSize(id))); err != nil {
					panic(err)
				}
				say("start", id)
				if err := w.Commit(); err != nil {
					panic(err)
				}
				say("ack", id)
			}
		}()
	}
	wg.Wait()
}

// childReport prints the "<what> <id>" lines a crash test's child tells its parent, each line
// whole (os.Stdout writes are not buffered, so a printed line has left the process).
type childReport struct{ mu sync.Mutex }

func (r *childReport) say(what string, id ShardID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(os.Stdout, "%s %s\n", what, id)
}

// startChild runs the test binary's test named child as a separate process with env added, and
// returns it with a scanner over its stdout; cancel kills it at the latest after 2 minutes.
func startChild(t *testing.T, child string, env ...string) (*exec.Cmd, *bufio.Scanner, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+child+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(stdout), cancel
}

// TestVolumeSIGKILLMidBatch kills a real process that group-commits small shards from 24
// goroutines. After the reopen every shard it acknowledged reads back byte-exact, every visible
// shard is one it started and is whole, and a second crash round on the same directory holds too.
func TestVolumeSIGKILLMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	acked := map[ShardID]bool{}
	started := map[ShardID]bool{}
	for round := range 3 {
		cmd, sc, cancel := startChild(t, "TestVolumeCrashChild", crashChildEnv+"="+dir)
		n := 0
		// Kill at a different point each round, well inside a stream of batches.
		for target := 300 + 250*round; n < target && sc.Scan(); {
			what, name, ok := strings.Cut(sc.Text(), " ")
			id, err := ParseShardID(name)
			if !ok || err != nil {
				continue // the test binary's own output
			}
			switch what {
			case "start":
				started[id] = true
			case "ack":
				acked[id] = true
				n++
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Lines already in the pipe were printed before the kill: they count too.
		for sc.Scan() {
			if what, name, ok := strings.Cut(sc.Text(), " "); ok {
				if id, err := ParseShardID(name); err == nil {
					started[id] = true
					if what == "ack" {
						acked[id] = true
					}
				}
			}
		}
		_ = cmd.Wait()
		cancel()
		if n == 0 {
			t.Fatal("the child acknowledged nothing")
		}

		s, err := OpenShardStoreWith(dir, StoreOptions{SmallShardMax: smallShard, VolumeSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		for id := range acked {
			mustRead(t, s, id, testShard(id, crashShardSize(id)))
		}
		visible := 0
		if err := s.List(func(info ShardInfo) error {
			visible++
			if !started[info.ID] {
				return fmt.Errorf("shard %s is visible but was never committed", info.ID)
			}
			got, err := readAll(s, info.ID)
			if err != nil || !bytes.Equal(got, testShard(info.ID, crashShardSize(info.ID))) {
				return fmt.Errorf("shard %s is visible but not whole: %v", info.ID, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		st := s.VolumeStats()
		t.Logf("round %d: %d acknowledged, %d visible, %d started; torn tail %d bytes; %d volumes",
			round, len(acked), visible, len(started), st.TornBytes, st.Volumes)
		s.Close()
	}
}

// TestVolumeCompactionReclaims: deleting most small shards and compacting shrinks the volumes on
// disk; the survivors read back before and after a reopen, and the deleted stay deleted.
func TestVolumeCompactionReclaims(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	keep, drop := fillThenDelete(t, s, "FILreclaim", 400, 5, 4000)
	before := s.VolumeStats()
	n, err := s.Compact(context.Background(), 0)
	if err != nil || n == 0 {
		t.Fatalf("Compact = %d, %v", n, err)
	}
	after := s.VolumeStats()
	t.Logf("volume bytes %d -> %d after deleting 80%% and compacting %d volumes", before.FileBytes, after.FileBytes, n)
	if after.FileBytes > before.FileBytes/2 || after.ReclaimedBytes == 0 {
		t.Fatalf("volumes did not shrink: %+v -> %+v", before, after)
	}
	var onDisk int64
	for _, p := range volumeFiles(t, dir) {
		fi, _ := os.Stat(p)
		onDisk += fi.Size()
	}
	if onDisk != after.FileBytes {
		t.Fatalf("files hold %d bytes, stats say %d", onDisk, after.FileBytes)
	}
	for range 2 {
		for _, id := range keep {
			mustRead(t, s, id, testShard(id, 4000))
		}
		for _, id := range drop {
			if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
				t.Fatalf("deleted shard %s came back: %v", id, err)
			}
		}
		s.Close()
		s = openStoreWith(t, dir, smallVolumes)
	}
}

// TestVolumeCompactionCrashSafe leaves the files a crash at each step of a compaction would
// leave, and checks that the next open serves exactly the live shards: a half-written new
// volume (before its rename) is dropped; old and new volume both present (after the rename,
// before the old one's removal) dedupe by sequence number, and the old one goes at the next
// compaction.
func TestVolumeCompactionCrashSafe(t *testing.T) {
	setup := func(t *testing.T) (string, []ShardID, []ShardID) {
		dir := t.TempDir()
		s := openStoreWith(t, dir, smallVolumes)
		keep, drop := fillThenDelete(t, s, "FILcc", 300, 4, 4000)
		s.Close()
		return dir, keep, drop
	}
	verify := func(t *testing.T, s *ShardStore, keep, drop []ShardID) {
		t.Helper()
		for _, id := range keep {
			mustRead(t, s, id, testShard(id, 4000))
		}
		for _, id := range drop {
			if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
				t.Fatalf("deleted shard %s came back: %v", id, err)
			}
		}
	}
	t.Run("before the rename", func(t *testing.T) {
		dir, keep, drop := setup(t)
		first := volumeFiles(t, dir)[0]
		b, _ := os.ReadFile(first)
		half := filepath.Join(dir, "volumes", volumeName(999)[:8]+compactSuffix)
		if err := os.WriteFile(half, b[:len(b)/3], 0o640); err != nil {
			t.Fatal(err)
		}
		s := openStoreWith(t, dir, smallVolumes)
		if _, err := os.Stat(half); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the unfinished compaction output is still there: %v", err)
		}
		verify(t, s, keep, drop)
	})
	t.Run("after the rename, before the removal", func(t *testing.T) {
		dir, keep, drop := setup(t)
		saved := map[string][]byte{}
		for _, p := range volumeFiles(t, dir) {
			saved[p], _ = os.ReadFile(p)
		}
		s := openStoreWith(t, dir, smallVolumes)
		if n, err := s.Compact(context.Background(), 0); err != nil || n == 0 {
			t.Fatalf("Compact = %d, %v", n, err)
		}
		s.Close()
		for p, b := range saved { // the old volumes back beside their rewritten copies
			if err := os.WriteFile(p, b, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		s = openStoreWith(t, dir, smallVolumes)
		verify(t, s, keep, drop)
		if n, err := s.Compact(context.Background(), 0); err != nil || n == 0 {
			t.Fatalf("second Compact = %d, %v: the old volumes should be all dead", n, err)
		}
		var old []string
		for p := range saved {
			old = append(old, p)
		}
		slices.Sort(old)
		for _, p := range old[:len(old)-1] { // the last one was the active volume: never compacted
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("old volume %s survived its second compaction: %v", p, err)
			}
		}
		verify(t, s, keep, drop)
		s.Close()
		verify(t, openStoreWith(t, dir, smallVolumes), keep, drop)
	})
}

// TestVolumeReadDuringCompaction: readers and writers run while volumes are rewritten and
// removed under them; every read is byte-exact.
func TestVolumeReadDuringCompaction(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), smallVolumes)
	keep, _ := fillThenDelete(t, s, "FILrc", 400, 3, 3000)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := r; ctx.Err() == nil; i++ {
				id := keep[i%len(keep)]
				got, err := readAll(s, id)
				if err != nil || !bytes.Equal(got, testShard(id, 3000)) {
					errs <- fmt.Errorf("read %s during compaction: %v", id, err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			id := ShardID{File: "FILrcnew", Segment: i, Index: 0}
			w, _ := s.Create(id)
			_, _ = w.Write(testShard(id, 500))
			if err := w.Commit(); err != nil {
				errs <- err
				return
			}
		}
	}()
	n, err := s.Compact(context.Background(), 0)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err != nil || n == 0 {
		t.Fatalf("Compact = %d, %v", n, err)
	}
	for _, id := range keep {
		mustRead(t, s, id, testShard(id, 3000))
	}
}

// TestVolumeRecordCorruption damages records in place, as a disk or an operator would. Each read
// fails as corrupt (ErrCorrupt and ErrInvalidRange, which readers count as corrupt and heal),
// never with wrong bytes; and a record damaged in the middle of a volume does not take the
// records after it down at the next open.
func TestVolumeRecordCorruption(t *testing.T) {
	mk := func(t *testing.T) (string, *ShardStore, []ShardID) {
		dir := t.TempDir()
		s := openStoreWith(t, dir, smallVolumes)
		var ids []ShardID
		for i := range 6 {
			id := ShardID{File: "FILdmg", Segment: 0, Index: i}
			putShard(t, s, id, testShard(id, 3000))
			ids = append(ids, id)
		}
		return dir, s, ids
	}
	patch := func(t *testing.T, path string, off int64, b []byte) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, s *ShardStore, ids []ShardID)
	}{
		{"body byte flipped", func(t *testing.T, s *ShardStore, ids []ShardID) {
			loc, _ := s.Locate(ids[1])
			b := storedBytes(t, s, ids[1])
			patch(t, loc.Path, loc.Offset+500, []byte{b[500] ^ 1})
		}},
		{"record header byte flipped", func(t *testing.T, s *ShardStore, ids []ShardID) {
			loc, _ := s.Locate(ids[1])
			patch(t, loc.Path, loc.RecordOffset+9, []byte{0xff})
		}},
		{"sibling's body copied over", func(t *testing.T, s *ShardStore, ids []ShardID) {
			loc, _ := s.Locate(ids[1])
			patch(t, loc.Path, loc.Offset, storedBytes(t, s, ids[2]))
		}},
		{"records swapped", func(t *testing.T, s *ShardStore, ids []ShardID) {
			a, _ := s.Locate(ids[1])
			b, _ := s.Locate(ids[2])
			ra, rb := make([]byte, a.Offset+a.Length-a.RecordOffset), make([]byte, b.Offset+b.Length-b.RecordOffset)
			f, _ := os.Open(a.Path)
			_, _ = f.ReadAt(ra, a.RecordOffset)
			_, _ = f.ReadAt(rb, b.RecordOffset)
			f.Close()
			patch(t, a.Path, a.RecordOffset, rb)
			patch(t, a.Path, a.RecordOffset+int64(len(rb)), ra)
		}},
		{"volume cut inside the record", func(t *testing.T, s *ShardStore, ids []ShardID) {
			loc, _ := s.Locate(ids[1])
			if err := os.Truncate(loc.Path, loc.Offset+100); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s, ids := mk(t)
			tt.damage(t, s, ids)
			_, err := readAll(s, ids[1])
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrInvalidRange) {
				t.Fatalf("read of the damaged shard: %v; want corrupt", err)
			}
			mustRead(t, s, ids[0], testShard(ids[0], 3000))
			if st := s.VolumeStats(); st.CorruptReads == 0 {
				t.Fatalf("corrupt read not counted: %+v", st)
			}
			// A heal writes a new record; it reads back, now and after a reopen.
			putShard(t, s, ids[1], testShard(ids[1], 3000))
			mustRead(t, s, ids[1], testShard(ids[1], 3000))
			s.Close()
			s = openStoreWith(t, dir, smallVolumes)
			mustRead(t, s, ids[1], testShard(ids[1], 3000))
			survivors := 0
			for _, id := range ids[3:] {
				if got, err := readAll(s, id); err == nil {
					if !bytes.Equal(got, testShard(id, 3000)) {
						t.Fatalf("shard %s reads wrong bytes after the reopen", id)
					}
					survivors++
				}
			}
			if tt.name != "volume cut inside the record" && survivors != len(ids[3:]) {
				t.Fatalf("damage in the middle took %d records after it down at the reopen", len(ids[3:])-survivors)
			}
		})
	}
}

// volumeFixtures are the committed volumes of every format ever written, each with the encoder
// that wrote it. Never regenerate one; a new format is a new version with a fixture of its own.
var volumeFixtures = []struct {
	dir    string
	encode func() []byte
}{
	{"testdata/volume-v1", func() []byte { return fixtureVolume(v1Format()) }},
	{"testdata/volume-v2", func() []byte { return fixtureVolume(newV2Format(fixtureKey())) }},
}

// fixtureKey is the record key of the v2 fixture (a real volume's key is random).
func fixtureKey() []byte {
	k := make([]byte, volumeKeyLen)
	for i := range k {
		k[i] = byte(i*37 + 11)
	}
	return k
}

// TestVolumeFixtureReads reads the committed volumes under testdata/volume-v*, each written by
// the code of its format, and checks that today's encoder still writes each byte for byte. A
// store that opens one reads every shard and tombstone in it, and writes its new records to a
// new volume of the current format, never into an older one.
func TestVolumeFixtureReads(t *testing.T) {
	for _, fx := range volumeFixtures {
		t.Run(fx.dir, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(fx.dir, volumeName(1)))
			if err != nil {
				t.Fatal(err)
			}
			if got := fx.encode(); !bytes.Equal(got, want) {
				t.Fatalf("the encoder no longer writes the fixture byte for byte (%d vs %d bytes)", len(got), len(want))
			}
			_, format, err := parseVolumeHeader(want[:maxVolumeHeaderLen])
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			writeVolume(t, dir, want)
			s := openStoreWith(t, dir, smallVolumes)
			checkFixture := func(t *testing.T, s *ShardStore) {
				t.Helper()
				for _, r := range fixtureRecords() {
					info, err := s.Stat(r.id)
					if r.gone {
						if !errors.Is(err, ErrShardNotFound) {
							t.Fatalf("%s: deleted in the fixture, Stat = %v", r.id, err)
						}
						continue
					}
					if err != nil || !info.ModTime.Equal(time.Unix(1_780_000_000, 0)) {
						t.Fatalf("%s: Stat = %+v, %v", r.id, info, err)
					}
					mustRead(t, s, r.id, r.asRead())
				}
			}
			checkFixture(t, s)
			after := ShardID{File: "FILafterFixture", Segment: 0, Index: 0}
			putShard(t, s, after, testShard(after, 500))
			s.Close()
			vols := volumeFiles(t, dir)
			got, err := os.ReadFile(vols[0])
			switch {
			case err != nil:
				t.Fatal(err)
			case format.version == volumeFormatCurrent && (len(vols) != 1 || !bytes.HasPrefix(got, want)):
				t.Fatalf("a write after opening a current volume: %d volumes; want it appended", len(vols))
			case format.version != volumeFormatCurrent && (len(vols) != 2 || !bytes.Equal(got, want)):
				t.Fatalf("a write after opening a v%d volume: %d volumes; want the old one untouched and a new one", format.version, len(vols))
			}
			s = openStoreWith(t, dir, smallVolumes)
			checkFixture(t, s)
			mustRead(t, s, after, testShard(after, 500))
		})
	}
}

type fixtureRecord struct {
	id   ShardID
	body []byte
	gone bool
}

// asRead is the shard as OpenFrames returns it: a v1 (headerless) one behind a legacy header.
func (r fixtureRecord) asRead() []byte {
	if storedFormat(r.body) == FormatV1 {
		return append(LegacyShardHeader(), r.body...)
	}
	return r.body
}

// fixtureRecords are the shards of each fixture: a v2 shard, a v1 (headerless) shard, one
// overwritten, one deleted.
func fixtureRecords() []fixtureRecord {
	a := ShardID{File: "FILfixtureA", Segment: 0, Index: 0}
	b := ShardID{File: "FILfixtureB", Segment: 3, Index: 2}
	c := ShardID{File: "FILfixtureC", Segment: 1, Index: 1}
	return []fixtureRecord{
		{id: a, body: testShard(a, 700)},
		{id: b, body: bytes.Repeat([]byte("v1 frames "), 20)},
		{id: c, gone: true},
	}
}

// fixtureVolume is a fixture as the encoder of format f writes it.
func fixtureVolume(f volumeFormat) []byte {
	at := time.Unix(1_780_000_000, 0)
	rs := fixtureRecords()
	v := f.appendVolumeHeader(nil, 1, at)
	v = f.appendRecord(v, recordShard, rs[0].id, 1, at, testShard(rs[0].id, 10)) // replaced below
	v = f.appendRecord(v, recordShard, rs[1].id, 2, at, rs[1].body)
	v = f.appendRecord(v, recordShard, rs[2].id, 3, at, testShard(rs[2].id, 50))
	v = f.appendRecord(v, recordShard, rs[0].id, 4, at, rs[0].body)
	v = f.appendRecord(v, recordTomb, rs[2].id, 5, at, nil)
	return v
}

// TestWriteVolumeFixture writes the fixtures of testdata/volume-v* that do not exist yet, once,
// when CAIRN_WRITE_VOLUME_FIXTURE is set. An existing fixture is never rewritten.
func TestWriteVolumeFixture(t *testing.T) {
	if os.Getenv("CAIRN_WRITE_VOLUME_FIXTURE") == "" {
		t.Skip("writes a new format's committed fixture; never needed again for an existing one")
	}
	for _, fx := range volumeFixtures {
		p := filepath.Join(fx.dir, volumeName(1))
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.MkdirAll(fx.dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, fx.encode(), 0o640); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", p)
	}
}

// TestVolumeCompactionKeepsDamagedLiveRecord: a live record that rotted after the open cannot be
// copied; compaction then leaves its volume alone (the shard is still indexed, so reads and the
// scrub find it corrupt and heal it) and goes ahead once the heal rewrote it.
func TestVolumeCompactionKeepsDamagedLiveRecord(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), smallVolumes)
	var ids []ShardID
	for i := range 300 {
		id := ShardID{File: "FILrot", Segment: i, Index: 0}
		putShard(t, s, id, testShard(id, 4000))
		ids = append(ids, id)
	}
	for _, id := range ids[1:200] {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	rotRecord(t, s, ids[0])
	if _, err := s.Compact(context.Background(), 0); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("Compact over a damaged live record: %v", err)
	}
	if _, err := readAll(s, ids[0]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("the damaged shard reads %v, want corrupt", err)
	}
	putShard(t, s, ids[0], testShard(ids[0], 4000)) // the heal
	if n, err := s.Compact(context.Background(), 0); err != nil || n == 0 {
		t.Fatalf("Compact after the heal = %d, %v", n, err)
	}
	for _, id := range append([]ShardID{ids[0]}, ids[200:]...) {
		mustRead(t, s, id, testShard(id, 4000))
	}
}

// TestVolumeDeleteOvertakesCommit: a Delete that arrives while a commit of the same small shard
// waits for its group commit still leaves the shard deleted (an aborted upload's cleanup racing
// its last shard write).
func TestVolumeDeleteOvertakesCommit(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), smallVolumes)
	for i := range 200 {
		id := ShardID{File: "FILrace", Segment: i, Index: 0}
		w, err := s.Create(id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(testShard(id, 1000)); err != nil {
			t.Fatal(err)
		}
		committed := make(chan error, 1)
		go func() { committed <- w.Commit() }()
		// Wait until the commit is queued or done, so the Delete comes after it.
		testutil.WaitFor(t, 10*time.Second, "the commit queued", func() bool {
			s.vols.mu.Lock()
			defer s.vols.mu.Unlock()
			_, indexed := s.vols.index.get(keyOf(id))
			return indexed || s.vols.queued[keyOf(id)] > 0
		})
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
		if err := <-committed; err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
			t.Fatalf("round %d: the shard survived a delete that came after its commit started: %v", i, err)
		}
	}
}

// TestVolumeDamagedHeaderSetAside: a volume whose header is damaged does not stop the store from
// opening; it is renamed aside (kept for inspection), counted, and the other volumes serve on.
func TestVolumeDamagedHeaderSetAside(t *testing.T) {
	dir := t.TempDir()
	ids := fillVolumes(t, dir, "FILhdr")
	vols := volumeFiles(t, dir)
	f, err := os.OpenFile(vols[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("X"), 3); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s := openStoreWith(t, dir, smallVolumes)
	if _, err := os.Stat(vols[0] + ".damaged"); err != nil {
		t.Fatalf("the damaged volume was not set aside: %v", err)
	}
	if st := s.VolumeStats(); st.DamagedBytes == 0 || st.Volumes != len(vols)-1 {
		t.Fatalf("stats %+v", st)
	}
	served := 0
	for _, id := range ids {
		if got, err := readAll(s, id); err == nil {
			if !bytes.Equal(got, testShard(id, 4000)) {
				t.Fatalf("shard %s reads wrong bytes", id)
			}
			served++
		} else if !errors.Is(err, ErrShardNotFound) {
			t.Fatalf("shard %s: %v, want served or missing", id, err)
		}
	}
	if served == 0 || served == len(ids) {
		t.Fatalf("%d of %d shards served; want those of the intact volumes", served, len(ids))
	}
}

// FuzzVolumeOpen opens a store over arbitrary volume bytes: it must not panic, and every shard it
// then lists either reads back whole or fails as corrupt.
func FuzzVolumeOpen(f *testing.F) {
	for _, fx := range volumeFixtures {
		f.Add(fx.encode())
		f.Add(fx.encode()[:200])
	}
	f.Add(append(v1Format().appendVolumeHeader(nil, 1, time.Unix(0, 0)), "CREC\x01\x01\x05\x00"...))
	f.Add(append(newV2Format(fixtureKey()).appendVolumeHeader(nil, 1, time.Unix(0, 0)), "CREC\x02\x01\x05\x00"...))
	f.Fuzz(func(t *testing.T, vol []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "volumes"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "volumes", volumeName(1)), vol, 0o640); err != nil {
			t.Fatal(err)
		}
		s, err := OpenShardStoreWith(dir, smallVolumes)
		if err != nil {
			return // refused with an error: fine
		}
		defer s.Close()
		if err := s.List(func(info ShardInfo) error {
			if _, err := readAll(s, info.ID); err != nil && !errors.Is(err, ErrCorrupt) {
				return fmt.Errorf("shard %s: %w", info.ID, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}

// compactChildEnv names the directory of TestVolumeCompactionCrashChild.
const compactChildEnv = "CAIRN_VOLUME_COMPACT_CRASH_DIR"

// TestVolumeCompactionCrashChild is the child of TestVolumeSIGKILLDuringCompaction: in rounds, it
// commits shards ("ack <id>" once Commit returned), deletes three in four ("del <id>" once
// Delete returned), and compacts slowly ("compact" as it starts) while a writer keeps committing,
// until it is killed.
func TestVolumeCompactionCrashChild(t *testing.T) {
	dir := os.Getenv(compactChildEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestVolumeSIGKILLDuringCompaction")
	}
	run := os.Getenv(compactChildEnv + "_RUN") // ids differ between runs: each is acknowledged once
	s, err := OpenShardStoreWith(dir, smallVolumes)
	if err != nil {
		t.Fatal(err)
	}
	say := new(childReport).say
	commit := func(id ShardID) {
		w, err := s.Create(id)
		if err == nil {
			_, err = w.Write(testShard(id, crashShardSize(id)))
		}
		if err == nil {
			err = w.Commit()
		}
		if err != nil {
			panic(err)
		}
		say("ack", id)
	}
	beside := 0
	for round := 0; ; round++ {
		file := fmt.Sprintf("FILrun%sround%d", run, round)
		for i := range 300 {
			commit(ShardID{File: file, Segment: i, Index: 1})
		}
		for i := range 300 {
			if i%10 != 0 {
				id := ShardID{File: file, Segment: i, Index: 1}
				if err := s.Delete(id); err != nil {
					panic(err)
				}
				say("del", id)
			}
		}
		say("compact", ShardID{File: file})
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // writes beside the compaction
			defer close(done)
			for ; ; beside++ {
				select {
				case <-stop:
					return
				default:
				}
				commit(ShardID{File: "FILbeside" + run, Segment: beside, Index: 0})
			}
		}()
		n, err := s.Compact(context.Background(), 256<<10) // slow, so that the kill lands inside it
		if err != nil {
			panic(err)
		}
		close(stop)
		<-done
		say("compacted", ShardID{File: file, Segment: n})
	}
}

// TestVolumeSIGKILLDuringCompaction kills a real process at varying points while it compacts
// volumes (slowly, with writes going on): after each reopen every acknowledged shard that was not
// deleted reads back byte-exact, no shard whose delete was acknowledged is back, and the next
// compaction works.
func TestVolumeSIGKILLDuringCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	acked, deleted := map[ShardID]bool{}, map[ShardID]bool{}
	rng := rand.New(rand.NewPCG(17, 4))
	for round := range 4 {
		cmd, sc, cancel := startChild(t, "TestVolumeCompactionCrashChild",
			compactChildEnv+"="+dir, fmt.Sprintf("%s_RUN=%d", compactChildEnv, round))
		record := func(line string) (what string) {
			what, name, _ := strings.Cut(line, " ")
			if id, err := ParseShardID(name); err == nil {
				switch what {
				case "ack":
					acked[id] = true
				case "del":
					deleted[id] = true
				}
			}
			return what
		}
		// Kill a random number of acknowledgements after a compaction started.
		after, compacting, compacted := 1+rng.IntN(60), false, 0
		for sc.Scan() {
			what := record(sc.Text())
			switch what {
			case "compact":
				compacting = true
			case "compacted":
				compacted++
			}
			if compacting && what == "ack" {
				if after--; after == 0 {
					break
				}
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for sc.Scan() {
			record(sc.Text())
		}
		_ = cmd.Wait()
		cancel()

		s, err := OpenShardStoreWith(dir, smallVolumes)
		if err != nil {
			t.Fatal(err)
		}
		for id := range acked {
			if deleted[id] {
				if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
					t.Fatalf("round %d: shard %s was deleted (acknowledged) and is back: %v", round, id, err)
				}
				continue
			}
			mustRead(t, s, id, testShard(id, crashShardSize(id)))
		}
		st := s.VolumeStats()
		t.Logf("round %d: killed after %d finished compaction passes; %d acknowledged, %d deleted; %d volumes, %d live of %d bytes",
			round, compacted, len(acked), len(deleted), st.Volumes, st.LiveBytes, st.FileBytes)
		if _, err := s.Compact(context.Background(), 0); err != nil {
			t.Fatalf("round %d: compaction after the reopen: %v", round, err)
		}
		s.Close()
	}
}

// TestVolumeTombstonesDropped: tombstones whose shards have no record left in any volume are
// not carried by compaction, even while an older volume of long-lived shards stays; and the
// deleted shards stay deleted across a reopen.
func TestVolumeTombstonesDropped(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	var keepers []ShardID
	for i := range 300 { // about one volume of shards that stay
		id := ShardID{File: "FILkeeper", Segment: i, Index: 0}
		putShard(t, s, id, testShard(id, 4000))
		keepers = append(keepers, id)
	}
	_, victims := fillThenDelete(t, s, "FILvictim", 300, 1<<30, 4000) // all deleted but the first
	// The victims' volumes are compacted away; the tombstones are in the newest volume.
	if _, err := s.Compact(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	// Then whatever volume still carries tombstones is compacted, as it will be once it is half dead.
	for range 5 {
		s.vols.mu.Lock()
		var tombVol *volume
		for _, v := range s.vols.vols {
			if v.tombs > 0 && (tombVol == nil || v.tombs > tombVol.tombs) {
				tombVol = v
			}
		}
		if tombVol != nil && tombVol == s.vols.active {
			s.vols.active = nil // seal it, as compaction does
		}
		s.vols.mu.Unlock()
		if tombVol == nil {
			break
		}
		if err := s.vols.compactOne(context.Background(), tombVol, rate.NewLimiter(rate.Inf, 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	var tombs int64
	s.vols.mu.Lock()
	for _, v := range s.vols.vols {
		tombs += v.tombs
	}
	s.vols.mu.Unlock()
	if tombs > int64(len(victims))*80/100 { // a few may stay for the filters' false positives
		t.Fatalf("%d tombstone bytes left after compacting them; want nearly none", tombs)
	}
	t.Logf("%d tombstone bytes left of %d deletes", tombs, len(victims))
	s.Close()
	s = openStoreWith(t, dir, smallVolumes)
	for _, id := range keepers {
		mustRead(t, s, id, testShard(id, 4000))
	}
	for _, id := range victims {
		if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
			t.Fatalf("deleted shard %s is back: %v", id, err)
		}
	}
}

// TestVolumeIndexMatchesDiskAfterRacingPutAndDelete: a put and a delete of one id racing each
// other may end either way, but the index must end the way the disk does, or an acknowledged
// shard that the running store serves vanishes at the next open (or a deleted one comes back).
// The sequence number that decides at open must therefore follow the order the flusher applies.
func TestVolumeIndexMatchesDiskAfterRacingPutAndDelete(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	const n = 400
	ids := make([]ShardID, n)
	for i := range ids {
		ids[i] = ShardID{File: "FILseqrace", Segment: i, Index: 0}
		if _, err := s.vols.put(ids[i], testShard(ids[i], 20000)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		body := testShard(id, 20000)
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := s.vols.put(id, body); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := s.vols.remove(id); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	disk, err := openVolumeSet(filepath.Join(dir, "volumes"), 0, 0, s.vols.log, true)
	if err != nil {
		t.Fatal(err)
	}
	defer disk.closeFiles()
	differ := 0
	for _, id := range ids {
		_, inMemory := s.vols.lookup(id)
		_, onDisk := disk.lookup(id)
		if inMemory != onDisk {
			differ++
		}
	}
	if differ > 0 {
		t.Fatalf("%d of %d ids: the running index and the volumes on disk disagree about whether the shard exists", differ, n)
	}
}

// fullStore opens a store on a 4 MiB tmpfs filled by a file, filler, to all but a few pages:
// room for a new volume's header, none for a batch of 40 KiB records.
func fullStore(t *testing.T) (s *ShardStore, dir, filler string) {
	t.Helper()
	root := testutil.MountTmpfs(t, "4m")
	dir = filepath.Join(root, "store")
	s = openStoreWith(t, dir, smallVolumes)
	filler = filepath.Join(root, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	if err := f.Truncate(mustSize(t, f) - 6*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return s, dir, filler
}

// TestVolumeDiskFull: on a full filesystem a group commit fails without acknowledging, leaves
// nothing indexed, does not pile up empty volume files batch after batch, and writes resume once
// space returns; every acknowledged shard reads back after a reopen.
func TestVolumeDiskFull(t *testing.T) {
	s, dir, filler := fullStore(t)
	var acked []ShardID
	failed := 0
	for i := range 200 {
		id := ShardID{File: "FILfull", Segment: i, Index: 0}
		body := testShard(id, 40000+i)
		if _, err := s.vols.put(id, body); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("put %s on a full disk: %v, want ErrNoSpace", id, err)
			}
			failed++
			if _, ok := s.vols.lookup(id); ok {
				t.Fatalf("put %s failed but is indexed", id)
			}
			continue
		}
		acked = append(acked, id)
	}
	if failed == 0 {
		t.Fatal("the filesystem never filled up")
	}
	if n := len(volumeFiles(t, dir)); n > 3 {
		t.Fatalf("%d volume files after %d failed group commits: failures leave volumes behind", n, failed)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := ShardID{File: "FILroom", Segment: i, Index: 0}
		if _, err := s.vols.put(id, testShard(id, 3000)); err != nil {
			t.Fatalf("put after space returned: %v", err)
		}
		acked = append(acked, id)
	}
	s.Close()
	s = openStoreWith(t, dir, smallVolumes)
	for _, id := range acked {
		size := 40000 + id.Segment
		if id.File == "FILroom" {
			size = 3000
		}
		mustRead(t, s, id, testShard(id, size))
	}
}

func mustSize(t *testing.T, f *os.File) int64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestVolumeCompactionGoesPastDamagedVolume: a volume that cannot be compacted yet (a live
// record in it is unreadable until a heal rewrites it, which may be the weekly scrub) does not
// stop compaction of the other volumes: their dead space is still reclaimed.
func TestVolumeCompactionGoesPastDamagedVolume(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), smallVolumes)
	byVolume := map[string][]ShardID{}
	var order []string
	for i := range 600 {
		id := ShardID{File: "FILtwo", Segment: i, Index: 0}
		putShard(t, s, id, testShard(id, 4000))
		loc, err := s.Locate(id)
		if err != nil {
			t.Fatal(err)
		}
		if byVolume[loc.Path] == nil {
			order = append(order, loc.Path)
		}
		byVolume[loc.Path] = append(byVolume[loc.Path], id)
	}
	if len(order) < 3 {
		t.Fatalf("%d volumes, want at least 3", len(order))
	}
	damaged, healthy := byVolume[order[0]], byVolume[order[1]]
	for _, id := range damaged[1:] { // almost all dead: compaction picks it first
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range healthy[:len(healthy)*3/4] {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	rotRecord(t, s, damaged[0])
	n, err := s.Compact(context.Background(), 0)
	if err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("Compact over a damaged live record: %v, want it reported", err)
	}
	if _, statErr := os.Stat(order[1]); n == 0 || statErr == nil {
		t.Fatalf("Compact = %d; the healthy volume %s was left uncompacted (stat: %v)", n, order[1], statErr)
	}
	for _, id := range healthy[len(healthy)*3/4:] {
		mustRead(t, s, id, testShard(id, 4000))
	}
}

// TestVolumeTombstonesWithSmallShardsOff: with small shards written as files again
// (SmallShardMax 0, the way back out of volumes), deleting the shards still held in volumes
// appends their tombstones to one volume, not a new volume file (and descriptor) per delete.
func TestVolumeTombstonesWithSmallShardsOff(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	var ids []ShardID
	for i := range 50 {
		id := ShardID{File: "FILoff", Segment: i, Index: 0}
		putShard(t, s, id, testShard(id, 2000))
		ids = append(ids, id)
	}
	s.Close()
	before := len(volumeFiles(t, dir))
	s = openStoreWith(t, dir, StoreOptions{})
	for _, id := range ids {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if after := len(volumeFiles(t, dir)); after > before+1 {
		t.Fatalf("%d volume files before deleting %d small shards with small shards off, %d after", before, len(ids), after)
	}
	s.Close()
	s = openStoreWith(t, dir, StoreOptions{})
	for _, id := range ids {
		if _, err := s.Stat(id); !errors.Is(err, ErrShardNotFound) {
			t.Fatalf("deleted shard %s after reopen: %v", id, err)
		}
	}
}

// rotRecord overwrites three bytes inside the body of id's volume record, as bit rot would.
func rotRecord(t *testing.T, s *ShardStore, id ShardID) {
	t.Helper()
	loc, err := s.Locate(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(loc.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("rot"), loc.Offset+1000); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeLocateDuringCompaction: Locate runs while compaction moves small shards into new
// volumes and retires the old ones, and every kept shard is found in a volume each time. Locate
// once read the index entry and the volume under two locks, and could find the volume retired in
// between.
func TestVolumeLocateDuringCompaction(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), smallVolumes)
	keep, _ := fillThenDelete(t, s, "FILlocate", 400, 5, 4000)
	length := make(map[ShardID]int64, len(keep))
	for _, id := range keep {
		loc, err := s.Locate(id)
		if err != nil || !loc.InVolume {
			t.Fatalf("Locate(%s) = %+v, %v before compaction", id, loc, err)
		}
		length[id] = loc.Length
	}
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for {
			for _, id := range keep {
				loc, err := s.Locate(id)
				if err != nil || !loc.InVolume || loc.Length != length[id] {
					errs <- fmt.Errorf("Locate(%s) during compaction = %+v, %v", id, loc, err)
					return
				}
			}
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	n, err := s.Compact(context.Background(), 0)
	close(done)
	if err != nil || n == 0 {
		t.Fatalf("Compact = %d, %v", n, err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
