package erasure

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// oldIndexVolume is a volume as the code before the index bound could write it, when a peer's
// request named index 64 (records hold the index in 4 bytes): a record of FILold.0.64 beside two
// ordinary ones, in the middle or, with tail, at the end.
func oldIndexVolume(f volumeFormat, tail bool) (vol []byte, a, b ShardID) {
	at := time.Unix(1_780_000_000, 0)
	a = ShardID{File: "FILstrayA", Segment: 0, Index: 0}
	b = ShardID{File: "FILstrayB", Segment: 1, Index: 2}
	old := ShardID{File: "FILold", Segment: 0, Index: 64}
	vol = f.appendVolumeHeader(nil, 1, at)
	vol = f.appendRecord(vol, recordShard, a, 1, at, testShard(a, 500))
	if !tail {
		vol = f.appendRecord(vol, recordShard, old, 2, at, testShard(old, 300))
	}
	vol = f.appendRecord(vol, recordShard, b, 3, at, testShard(b, 400))
	if tail {
		vol = f.appendRecord(vol, recordShard, old, 2, at, testShard(old, 300))
	}
	return vol, a, b
}

// TestVolumesKeepRecordsOfAnIndexAboveTheGeometry: the bound on a shard's index applies to new
// writes only. A record stored before it is a record, not damage: in a v1 volume the records
// after it stay readable (damage followed by a valid record would set the rest aside), and in a
// v2 volume one at the tail is not cut as a torn batch. The old shard itself reads and deletes.
func TestVolumesKeepRecordsOfAnIndexAboveTheGeometry(t *testing.T) {
	for _, c := range []struct {
		name   string
		format volumeFormat
		tail   bool
	}{{"v1/middle", v1Format(), false}, {"v2/tail", newV2Format(fixtureKey()), true}} {
		t.Run(c.name, func(t *testing.T) {
			vol, a, b := oldIndexVolume(c.format, c.tail)
			dir := t.TempDir()
			writeVolume(t, dir, vol)
			s := openStoreWith(t, dir, smallVolumes)
			mustRead(t, s, a, testShard(a, 500))
			mustRead(t, s, b, testShard(b, 400))
			old := ShardID{File: "FILold", Segment: 0, Index: 64}
			mustRead(t, s, old, testShard(old, 300))
			if st := s.VolumeStats(); st.TornBytes != 0 || st.DamagedBytes != 0 {
				t.Fatalf("an old record was taken for damage: %+v", st)
			}
			if err := s.Delete(old); err != nil {
				t.Fatal(err)
			}
			s.Close()
			fi, err := os.Stat(filepath.Join(dir, "volumes", volumeName(1)))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() < int64(len(vol)) {
				t.Fatalf("the open cut the volume to %d of %d bytes", fi.Size(), len(vol))
			}
		})
	}
}

// TestShardFileOfAnIndexAboveTheGeometryIsListed: a shard file stored before the bound is still
// listed and counted, so the GC can find it and delete it.
func TestShardFileOfAnIndexAboveTheGeometryIsListed(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	old := ShardID{File: "FILbig", Segment: 0, Index: 64}
	p := s.Path(old)
	s.Close()
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, testShard(old, 128<<10), 0o640); err != nil {
		t.Fatal(err)
	}
	s = openStoreWith(t, dir, smallVolumes)
	var listed []ShardID
	if err := s.walkFiles(func(info ShardInfo) error { listed = append(listed, info.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != old || s.UsedBytes() == 0 {
		t.Fatalf("a 128 KiB shard file %s on disk: listed %v, UsedBytes %d", old, listed, s.UsedBytes())
	}
	if err := s.Delete(old); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("deleted, yet %v", err)
	}
}

// TestSparseVolumeFilesDoNotSizeTheOpen: a stray volume file is as easy to have as a stray index
// file. A 2 TiB sparse volume with a 2 TiB sparse index file beside it must not size the index
// map (the first put would allocate it) beyond what one real volume could list.
func TestSparseVolumeFilesDoNotSizeTheOpen(t *testing.T) {
	dir := t.TempDir()
	vdir := filepath.Join(dir, "volumes")
	if err := os.MkdirAll(vdir, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{volumeName(7), indexPathOf(volumeName(7))} {
		sparseFile(t, filepath.Join(vdir, name), 2<<40)
	}
	s := openStoreWith(t, dir, smallVolumes)
	s.vols.mu.Lock()
	hint := s.vols.index.sizeHint
	s.vols.mu.Unlock()
	if bound := (maxVolumeSize + maxBatchBytes) / indexEntryTypicalLen; hint > bound {
		t.Fatalf("the open sized its index for %d entries; one whole volume lists at most %d", hint, bound)
	}
	id := ShardID{File: packableFileID("sparse"), Segment: 0, Index: 0}
	putShard(t, s, id, testShard(id, 1000))
	mustRead(t, s, id, testShard(id, 1000))
}

// TestOddFilesInTheVolumesDirectory: files the store did not write, named like its own, must not
// hang a start or be written through. A FIFO named as an index file would block the load's open
// and then every group commit's write; a symlink named as an index file would have its target
// cut and overwritten; a FIFO named as a volume would block a read-only open. The index file
// goes (it is a cache), the FIFO volume is skipped, the symlink's target is untouched, and
// every record reads back.
func TestOddFilesInTheVolumesDirectory(t *testing.T) {
	dir := t.TempDir()
	live := fillIndexedStore(t, dir)
	vols := volumeFiles(t, dir)
	fifoIndex := indexPathOf(vols[0])
	linkIndex := indexPathOf(vols[1])
	target := filepath.Join(t.TempDir(), "precious")
	precious := bytes.Repeat([]byte("keep me "), 1000)
	if err := os.WriteFile(target, precious, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoVolume := filepath.Join(dir, "volumes", volumeName(900))
	for _, err := range []error{
		os.Remove(fifoIndex), unix.Mkfifo(fifoIndex, 0o600),
		os.Remove(linkIndex), os.Symlink(target, linkIndex),
		unix.Mkfifo(fifoVolume, 0o600),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	opened := make(chan *ShardStore, 1)
	go func() {
		s, err := OpenShardStoreWith(dir, smallVolumes)
		if err != nil {
			t.Error(err)
		}
		opened <- s
	}()
	var s *ShardStore
	select {
	case s = <-opened:
	case <-time.After(time.Minute):
		// Unblock it, so that the failure is reported instead of the test binary hanging.
		for _, p := range []string{fifoIndex, fifoVolume} {
			if w, err := os.OpenFile(p, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
		}
		t.Fatal("the open blocked on a FIFO in the volumes directory")
	}
	if s == nil {
		t.FailNow()
	}
	for id, body := range live {
		mustRead(t, s, id, body)
	}
	id := ShardID{File: packableFileID("odd"), Segment: 0, Index: 0}
	putShard(t, s, id, testShard(id, 1000))
	s.Close()
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, precious) {
		t.Fatalf("the symlink's target changed: %d bytes, %v", len(got), err)
	}
	for _, p := range []string{fifoIndex, linkIndex} {
		if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
			t.Errorf("%s is still a %s", p, fi.Mode().Type())
		}
	}
	s = openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	mustRead(t, s, id, testShard(id, 1000))
	for id, body := range live {
		mustRead(t, s, id, body)
	}
}

// sparseFile creates (or extends) the file at p to size bytes without writing any.
func sparseFile(t *testing.T, p string, size int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// oneRecordVolume is a v2 volume holding shard a (700 bytes), and a shard b (900 bytes) for the
// caller to place; both named after prefix.
func oneRecordVolume(prefix string) (f volumeFormat, at time.Time, a, b ShardID, vol []byte) {
	f = newV2Format(fixtureKey())
	at = time.Unix(1_780_000_000, 0)
	a = ShardID{File: prefix + "A", Segment: 0, Index: 0}
	b = ShardID{File: prefix + "B", Segment: 0, Index: 1}
	return f, at, a, b, f.appendRecord(f.appendVolumeHeader(nil, 1, at), recordShard, a, 1, at, testShard(a, 700))
}

// TestVolumeHolesAreBounded: a volume extended by a hole (a stray truncate, a sparse copy) is
// looked past only up to maxRecordStart (2^32), where no record can start, not to its end. A
// hole in the middle still leads to the record after it (v2: found by its tag); an 8 TiB hole at
// the end is a torn tail and is cut. Read to its end, the 8 TiB would take far longer than the
// test's timeout.
func TestVolumeHolesAreBounded(t *testing.T) {
	f, at, a, b, head := oneRecordVolume("FILhole")
	dir := t.TempDir()
	writeVolume(t, dir, head)
	path := filepath.Join(dir, "volumes", volumeName(1))
	const holeEnd = 256<<20 + 12345 // where b starts, after a hole of about 256 MiB
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	recB := f.appendRecord(nil, recordShard, b, 2, at, testShard(b, 900))
	if _, err := file.WriteAt(recB, holeEnd); err != nil {
		t.Fatal(err)
	}
	if err := file.Truncate(8 << 40); err != nil {
		t.Fatal(err)
	}
	file.Close()

	s := openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	mustRead(t, s, a, testShard(a, 700))
	mustRead(t, s, b, testShard(b, 900))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(holeEnd + len(recB)); fi.Size() != want {
		t.Fatalf("the volume is %d bytes after the open, want the tail hole cut at %d", fi.Size(), want)
	}
}

// TestNoRecordIsTakenAtOrPast2To32: offsets are 4 bytes, so a record found at 2^32+10 (bytes a
// store never writes: its volumes rotate at maxVolumeSize) would be indexed at offset 10 and
// shadow good copies elsewhere. Neither the search after damage nor the scan takes it; the
// bytes from 2^32 on are cut as a torn tail.
func TestNoRecordIsTakenAtOrPast2To32(t *testing.T) {
	f, at, a, b, head := oneRecordVolume("FILwrap")
	head = append(head, bytes.Repeat([]byte{0xff}, 64)...) // damage after a
	dir := t.TempDir()
	writeVolume(t, dir, head)
	path := filepath.Join(dir, "volumes", volumeName(1))
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteAt(bytes.Repeat([]byte{0xaa}, 4096), maxRecordStart-4096); err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt(f.appendRecord(nil, recordShard, b, 2, at, testShard(b, 900)), maxRecordStart+10); err != nil {
		t.Fatal(err)
	}
	fi, err := file.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if got := findRecord(file, f, int64(len(head))-63, fi.Size()); got != -1 {
		t.Fatalf("findRecord returned %d, want -1 (nothing below 2^32)", got)
	}
	s := openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	mustRead(t, s, a, testShard(a, 700))
	if loc, err := s.Locate(b); err == nil {
		t.Fatalf("a record at 2^32+10 is indexed at offset %d", loc.RecordOffset)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(len(head)-64) {
		t.Fatalf("after the open the volume is %v bytes (%v), want the damage and everything after it cut at %d", fi.Size(), err, len(head)-64)
	}
}

// TestOddVolumeKindsAreSkipped: something named like a volume that is not a regular file (a
// directory, a dangling symlink, a socket node, a FIFO) is skipped without being opened, by the
// store's open and by the read-only listing: it neither fails nor blocks the start, and every
// shard reads back. Named as the next volume, it costs the new volume its id, not a write.
func TestOddVolumeKindsAreSkipped(t *testing.T) {
	for name, mk := range map[string]func(string) error{
		"directory":        func(p string) error { return os.Mkdir(p, 0o750) },
		"dangling-symlink": func(p string) error { return os.Symlink("/nonexistent/cairn", p) },
		"socket-node":      func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o600, 0) },
		"fifo":             func(p string) error { return unix.Mkfifo(p, 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStoreWith(t, dir, smallVolumes)
			id := ShardID{File: packableFileID("odd"), Segment: 0, Index: 0}
			putShard(t, s, id, testShard(id, 1000))
			s.Close()
			if err := mk(filepath.Join(dir, "volumes", volumeName(2))); err != nil {
				t.Fatal(err)
			}
			listed := 0
			if err := ListShardsIn(dir, func(ShardInfo) error { listed++; return nil }); err != nil || listed != 1 {
				t.Fatalf("read-only listing beside a %s: %d shards, %v", name, listed, err)
			}
			s, err := OpenShardStoreWith(dir, smallVolumes)
			if err != nil {
				t.Fatalf("a %s named %s fails the start: %v", name, volumeName(2), err)
			}
			defer s.Close()
			mustRead(t, s, id, testShard(id, 1000))
			fillToVolume(t, s, "oddmore", 3) // rotates past the taken name
			mustRead(t, s, id, testShard(id, 1000))
		})
	}
}

// oneLiveMostlyDead writes shard <prefix>A (1,000 bytes, returned) and enough written-then-deleted
// shards after it for the active volume to be worth compacting.
func oneLiveMostlyDead(t *testing.T, s *ShardStore, prefix string) ShardID {
	t.Helper()
	a := ShardID{File: packableFileID(prefix + "A"), Segment: 0, Index: 0}
	putShard(t, s, a, testShard(a, 1000))
	for i := range 8 {
		b := ShardID{File: packableFileID(prefix + "B"), Segment: i, Index: 0}
		putShard(t, s, b, testShard(b, 60000))
		if err := s.Delete(b); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// TestVolumeIDsDoNotWrap: a file named with the highest uint32 id is not taken as a volume, so
// the next id cannot wrap to 0 and make a compaction rename its copy onto its own source (then
// remove it: the live record was lost).
func TestVolumeIDsDoNotWrap(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "volumes"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "volumes", volumeName(1<<32-1)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, dir, smallVolumes)
	a := oneLiveMostlyDead(t, s, "wrap")
	s.Close()
	s = openStoreWith(t, dir, smallVolumes)
	if s.vols.nextVol == 0 {
		t.Fatal("the next volume id wrapped to 0")
	}
	if n, err := s.Compact(t.Context(), 0); err != nil || n != 1 {
		t.Fatalf("compacted %d volumes: %v", n, err)
	}
	mustRead(t, s, a, testShard(a, 1000))
	s.Close()
	s = openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	mustRead(t, s, a, testShard(a, 1000))
}

// TestShardPathThatIsAFIFOReadsAsCorrupt: a FIFO at a shard file's path must fail the read at once
// as corrupt (a read then falls back to parity and heals), not block it until something writes to
// the FIFO; the healed shard's commit replaces it.
func TestShardPathThatIsAFIFOReadsAsCorrupt(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), smallVolumes)
	defer s.Close()
	id := ShardID{File: "FILfifo", Segment: 0, Index: 0}
	p := s.Path(id)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		r, err := s.OpenFrames(id, 0, -1)
		if err == nil {
			r.Close()
		}
		read <- err
	}()
	select {
	case err := <-read:
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("read of a FIFO shard: %v, want ErrCorrupt", err)
		}
	case <-time.After(time.Minute):
		if w, err := os.OpenFile(p, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			w.Close() // let the blocked open return, so the failure is reported
		}
		t.Fatal("the read blocked on a FIFO at the shard's path")
	}
	body := testShard(id, 200<<10) // a shard file, not a volume record
	putShard(t, s, id, body)
	mustRead(t, s, id, body)
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("after the heal the path holds %v, %v", fi.Mode(), err)
	}
}

// TestCompactionNeverTakesATakenName: a compaction's final rename replaces whatever holds its
// name. A symlinked volume whose target is missing at the start (a disk not mounted yet) keeps
// its id, so the compaction cannot rename over the link and cut the volume off; a stray
// directory at the next id is stepped over instead of failing the compaction.
func TestCompactionNeverTakesATakenName(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T, p string){
		"dangling-symlink": func(t *testing.T, p string) {
			if err := os.Symlink(filepath.Join(t.TempDir(), "unmounted.vol"), p); err != nil {
				t.Fatal(err)
			}
		},
		"directory": func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o750); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStoreWith(t, dir, smallVolumes)
			a := oneLiveMostlyDead(t, s, "taken")
			next := s.vols.nextVol
			s.Close()
			taken := filepath.Join(dir, "volumes", volumeName(next))
			mk(t, taken)
			before, err := os.Lstat(taken)
			if err != nil {
				t.Fatal(err)
			}
			s = openStoreWith(t, dir, smallVolumes)
			defer s.Close()
			if n, err := s.Compact(t.Context(), 0); err != nil || n != 1 {
				t.Fatalf("compacted %d volumes: %v", n, err)
			}
			mustRead(t, s, a, testShard(a, 1000))
			after, err := os.Lstat(taken)
			if err != nil || after.Mode().Type() != before.Mode().Type() {
				t.Fatalf("the compaction replaced the %s at %s (now %v, %v)", name, taken, after.Mode(), err)
			}
		})
	}
}
