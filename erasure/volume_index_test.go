package erasure

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// openState is everything an open builds in memory from the volumes, for comparing an open from
// index files with a scan.
type openState struct {
	index map[volumeKey]volumeEntry
	vols  map[uint32]openVolume
	seq   uint64
	used  int64
}

type openVolume struct {
	size, live, tombs int64
	minSeq            uint64
	ids               []uint64 // the id filter's bits
}

func stateOf(s *ShardStore) openState {
	vs := s.vols
	vs.mu.Lock()
	defer vs.mu.Unlock()
	st := openState{index: maps.Collect(vs.index.all()), vols: map[uint32]openVolume{}, seq: vs.seq.Load(), used: vs.used}
	for id, v := range vs.vols {
		st.vols[id] = openVolume{size: v.size, live: v.live, tombs: v.tombs, minSeq: v.minSeq, ids: slices.Clone(v.ids.BitSet().Words())}
	}
	return st
}

func (a openState) equal(b openState) bool {
	return maps.Equal(a.index, b.index) && a.seq == b.seq && a.used == b.used &&
		maps.EqualFunc(a.vols, b.vols, func(x, y openVolume) bool {
			return x.size == y.size && x.live == y.live && x.tombs == y.tombs && x.minSeq == y.minSeq && slices.Equal(x.ids, y.ids)
		})
}

// fillIndexedStore writes a store of several small volumes into dir: shards, rewrites, deletes
// and a compaction, so that the volumes hold live, dead and tombstone records and one of them was
// written by compaction. It returns the live shards and their bodies.
func fillIndexedStore(t *testing.T, dir string) map[ShardID][]byte {
	t.Helper()
	s := openStoreWith(t, dir, smallVolumes)
	live := map[ShardID][]byte{}
	for i := range 600 {
		id := ShardID{File: "FILindexed", Segment: i % 240, Index: i % 3}
		body := testShard(id, 1000+i*13)
		putShard(t, s, id, body)
		live[id] = body
	}
	for i := range 40 {
		id := ShardID{File: "FILindexed", Segment: i, Index: i % 3}
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
		delete(live, id)
	}
	if _, err := s.Compact(t.Context(), 1<<40); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		id := ShardID{File: packableFileID("later"), Segment: i, Index: 0} // the packed part of the index
		body := testShard(id, 3000)
		putShard(t, s, id, body)
		live[id] = body
	}
	if st := s.VolumeStats(); st.Volumes < 3 || st.Compactions == 0 {
		t.Fatalf("want several volumes and a compaction: %+v", st)
	}
	s.Close()
	return live
}

// scanState is what a store in dir holds when every volume is scanned: its index files are
// moved aside for the open and put back after.
func scanState(t *testing.T, dir string) openState {
	t.Helper()
	aside := t.TempDir()
	paths, err := filepath.Glob(filepath.Join(dir, "volumes", "*"+indexSuffix))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if err := os.Rename(p, filepath.Join(aside, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	s := openStoreWith(t, dir, smallVolumes)
	if st := s.VolumeStats(); st.OpenListed != 0 {
		t.Fatalf("records taken from index files that were moved aside: %+v", st)
	}
	state := stateOf(s)
	s.Close()
	for _, p := range paths {
		if err := os.Rename(filepath.Join(aside, filepath.Base(p)), p); err != nil {
			t.Fatal(err)
		}
	}
	return state
}

// TestVolumeIndexFilesReplaceTheScan: after a store wrote, deleted and compacted, every volume
// has an index file, an open reads no volume byte, and what it builds (index entries, each
// volume's live and tombstone bytes, lowest sequence number and id filter, the sequence counter)
// is exactly what a scan of every volume builds.
func TestVolumeIndexFilesReplaceTheScan(t *testing.T) {
	dir := t.TempDir()
	live := fillIndexedStore(t, dir)
	want := scanState(t, dir)

	s := openStoreWith(t, dir, smallVolumes)
	st := s.VolumeStats()
	if st.OpenScanned != 0 || st.OpenListed == 0 || st.Shards != len(live) {
		t.Fatalf("want every record from index files: %+v", st)
	}
	if !stateOf(s).equal(want) {
		t.Fatal("an open from index files built another state than a scan")
	}
	for id, body := range live {
		mustRead(t, s, id, body)
	}
	s.Close()
	vols, idx := volumeFiles(t, dir), indexFiles(t, dir)
	if len(idx) != len(vols) {
		t.Fatalf("%d volumes, %d index files: %v", len(vols), len(idx), idx)
	}
}

// indexFiles are the index files of the store in dir, sorted.
func indexFiles(t *testing.T, dir string) []string { return storeFiles(t, dir, indexSuffix) }

// TestVolumeIndexFileDamage damages one index file in each way a crash (the file is never
// synced), a disk or an operator can, and opens the store: the state is the scan's every time,
// and the open leaves an index file that the next open takes whole.
func TestVolumeIndexFileDamage(t *testing.T) {
	modify := func(f func(b []byte) []byte) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, f(b), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	damages := map[string]func(t *testing.T, path string){
		"cut inside an entry":   modify(func(b []byte) []byte { return b[:len(b)*2/3+5] }),
		"cut to its header":     modify(func(b []byte) []byte { return b[:indexHeaderLen] }),
		"cut inside its header": modify(func(b []byte) []byte { return b[:20] }),
		"empty":                 modify(func(b []byte) []byte { return nil }),
		"a flipped bit":         modify(func(b []byte) []byte { b[len(b)/2] ^= 0x10; return b }),
		"a zeroed block inside": modify(func(b []byte) []byte {
			clear(b[len(b)/3 : len(b)/3+200])
			return b
		}),
		"garbage after it": modify(func(b []byte) []byte { return append(b, bytes.Repeat([]byte{0xA5}, 300)...) }),
		"header damaged":   modify(func(b []byte) []byte { b[30] ^= 1; return b }),
		"another volume's": func(t *testing.T, path string) {
			other := indexFiles(t, filepath.Dir(filepath.Dir(path)))
			b, err := os.ReadFile(other[len(other)-1])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"missing": func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			live := fillIndexedStore(t, dir)
			want := scanState(t, dir)
			damage(t, indexFiles(t, dir)[0])

			s := openStoreWith(t, dir, smallVolumes)
			if !stateOf(s).equal(want) {
				t.Fatal("an open past a damaged index file built another state than a scan")
			}
			for id, body := range live {
				mustRead(t, s, id, body)
			}
			s.Close()
			s = openStoreWith(t, dir, smallVolumes)
			if st := s.VolumeStats(); st.OpenScanned != 0 {
				t.Fatalf("the open did not repair the index file: %+v", st)
			}
			if !stateOf(s).equal(want) {
				t.Fatal("the repaired index file builds another state than a scan")
			}
		})
	}
}

// TestVolumeIndexFileOfAShortVolume: a volume cut short behind the store's back (a record
// half gone) while the store was down. The index file lists records past the new end; the open
// takes only those that still fit, scans the rest, cuts the torn record as a scan would and
// builds what a scan builds.
func TestVolumeIndexFileOfAShortVolume(t *testing.T) {
	dir := t.TempDir()
	fillIndexedStore(t, dir)
	vols := volumeFiles(t, dir)
	last := vols[len(vols)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()-1500); err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, dir, smallVolumes)
	got := stateOf(s)
	if st := s.VolumeStats(); st.TornBytes == 0 || st.OpenListed == 0 {
		t.Fatalf("want the index file used and the torn record cut: %+v", st)
	}
	s.Close()
	if !got.equal(scanState(t, dir)) {
		t.Fatal("an open of a short volume built another state than a scan")
	}
}

// TestVolumeIndexFileLeftovers: index files whose volumes are gone (compacted away before the
// index went) and an unfinished compaction's index file are removed at open.
func TestVolumeIndexFileLeftovers(t *testing.T) {
	dir := t.TempDir()
	fillIndexedStore(t, dir)
	vdir := filepath.Join(dir, "volumes")
	orphan := filepath.Join(vdir, "00000900"+indexSuffix)
	unfinished := filepath.Join(vdir, "00000901"+indexCompactSuffix)
	for _, p := range []string{orphan, unfinished} {
		if err := os.WriteFile(p, []byte("left behind"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := openStoreWith(t, dir, smallVolumes)
	s.Close()
	for _, p := range []string{orphan, unfinished} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there: %v", p, err)
		}
	}
	if len(indexFiles(t, dir)) != len(volumeFiles(t, dir)) {
		t.Fatal("want one index file per volume")
	}
}

// TestVolumeIndexFileWriteFails: when an index file cannot be written, the batch is still
// acknowledged (the index file is a cache), the index file goes, and the next open scans that
// volume and finds every record.
func TestVolumeIndexFileWriteFails(t *testing.T) {
	dir := t.TempDir()
	s := openStoreWith(t, dir, smallVolumes)
	first := ShardID{File: "FILixfail", Segment: 0, Index: 0}
	putShard(t, s, first, testShard(first, 800))
	s.vols.active.ix.f.Close() // the next write to it fails
	second := ShardID{File: "FILixfail", Segment: 1, Index: 0}
	putShard(t, s, second, testShard(second, 900))
	if s.vols.active.ix != nil {
		t.Fatal("the index file is still in use after a failed write")
	}
	s.Close()
	if n := len(indexFiles(t, dir)); n != 0 {
		t.Fatalf("%d index files left; want the failed one removed", n)
	}
	s = openStoreWith(t, dir, smallVolumes)
	if st := s.VolumeStats(); st.OpenScanned != 2 {
		t.Fatalf("want the volume scanned: %+v", st)
	}
	mustRead(t, s, first, testShard(first, 800))
	mustRead(t, s, second, testShard(second, 900))
}

// indexFixtureDir holds a v2 volume (the v2 volume fixture) and its index file as index format 1
// lists it. Never regenerate it; a new index format is a new version with a fixture of its own.
const indexFixtureDir = "testdata/volume-index-v1"

// fixtureIndexFile is the index file of the v2 volume fixture, as index format 1 writes it.
func fixtureIndexFile() []byte {
	f := newV2Format(fixtureKey())
	vol := fixtureVolume(f)
	at := entrySeconds(time.Unix(1_780_000_000, 0).UnixNano())
	ix := appendIndexHeader(nil, 1, vol[:f.headerLen()])
	rs := fixtureRecords()
	off := f.headerLen()
	for i, r := range []struct {
		kind    byte
		id      ShardID
		bodyLen int
	}{
		{recordShard, rs[0].id, len(testShard(rs[0].id, 10))},
		{recordShard, rs[1].id, len(rs[1].body)},
		{recordShard, rs[2].id, len(testShard(rs[2].id, 50))},
		{recordShard, rs[0].id, len(rs[0].body)},
		{recordTomb, rs[2].id, 0},
	} {
		e := indexEntry{kind: r.kind, key: keyOf(r.id), seq: uint64(i + 1), off: off, bodyLen: r.bodyLen, mtime: at}
		ix = appendIndexEntry(ix, e)
		off += e.recordLen(f)
	}
	return ix
}

// TestVolumeIndexFixture reads the committed index file fixture: today's encoder still writes it
// byte for byte, and a store opened on it takes every record from it and serves the fixture's
// shards. CAIRN_WRITE_VOLUME_FIXTURE=1 writes it once, when it does not exist.
func TestVolumeIndexFixture(t *testing.T) {
	volPath, ixPath := filepath.Join(indexFixtureDir, volumeName(1)), filepath.Join(indexFixtureDir, "00000001"+indexSuffix)
	if _, err := os.Stat(ixPath); os.IsNotExist(err) && os.Getenv("CAIRN_WRITE_VOLUME_FIXTURE") != "" {
		if err := os.MkdirAll(indexFixtureDir, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(volPath, fixtureVolume(newV2Format(fixtureKey())), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ixPath, fixtureIndexFile(), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	vol, err := os.ReadFile(volPath)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := os.ReadFile(ixPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ix, fixtureIndexFile()) {
		t.Fatalf("the encoder no longer writes the index fixture byte for byte (%d vs %d bytes)", len(fixtureIndexFile()), len(ix))
	}
	dir := t.TempDir()
	writeVolume(t, dir, vol)
	if err := os.WriteFile(filepath.Join(dir, "volumes", "00000001"+indexSuffix), ix, 0o640); err != nil {
		t.Fatal(err)
	}
	s := openStoreWith(t, dir, smallVolumes)
	if st := s.VolumeStats(); st.OpenScanned != 0 || st.OpenListed != 5 || st.Shards != 2 {
		t.Fatalf("want the fixture's 5 records from its index file: %+v", st)
	}
	for _, r := range fixtureRecords() {
		if r.gone {
			if _, err := s.Stat(r.id); err == nil {
				t.Fatalf("%s: deleted in the fixture, still there", r.id)
			}
			continue
		}
		info, err := s.Stat(r.id)
		if err != nil || !info.ModTime.Equal(time.Unix(1_780_000_000, 0)) {
			t.Fatalf("%s: Stat = %+v, %v", r.id, info, err)
		}
		mustRead(t, s, r.id, r.asRead())
	}
}

// TestVolumeIndexFileSizesDoNotSizeTheOpen: the open sizes its index map from the index files'
// lengths, so a huge index file (here sparse, 2 TiB) beside a volume, or one without a volume,
// must not make it allocate for them: the hint counts only files of existing volumes, each for no
// more than its volume's length. Unbounded, the open tries to make a map for 78 billion entries
// and never returns.
func TestVolumeIndexFileSizesDoNotSizeTheOpen(t *testing.T) {
	dir := t.TempDir()
	live := fillIndexedStore(t, dir)
	want := scanState(t, dir)
	vols := volumeFiles(t, dir)
	for _, p := range []string{indexPathOf(vols[0]), filepath.Join(dir, "volumes", "00000900"+indexSuffix)} {
		sparseFile(t, p, 2<<40)
	}
	s := openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	if !stateOf(s).equal(want) {
		t.Fatal("an open beside huge index files built another state than a scan")
	}
	for id, body := range live {
		mustRead(t, s, id, body)
	}
}

// TestIndexSizeHintIsBoundedByTheVolumes: the hint takes each index file for no more than its
// volume's length, and ignores index files without a volume.
func TestIndexSizeHintIsBoundedByTheVolumes(t *testing.T) {
	sizes := map[string]int64{
		volumeName(1): 1 << 20, indexPathOf(volumeName(1)): 2 << 40, // huge index file
		volumeName(2): 1 << 20, indexPathOf(volumeName(2)): 56 * 100, // a normal one
		indexPathOf(volumeName(3)): 2 << 40, // no volume
	}
	got := indexSizeHint([]uint32{1, 2}, sizes)
	if want := (1<<20)/indexEntryTypicalLen + 100; got != want {
		t.Fatalf("hint %d, want %d", got, want)
	}
}

// openIndexFiles counts this process's descriptors open on index files under dir.
func openIndexFiles(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir) && strings.HasSuffix(target, indexSuffix) {
			n++
		}
	}
	return n
}

// TestSealedVolumesCloseTheirIndexFiles: only the volume taking appends keeps its index file
// open, through rotations, a compaction and a reopen, and the index files of sealed volumes are
// still whole (the next open lists every record and scans none).
func TestSealedVolumesCloseTheirIndexFiles(t *testing.T) {
	dir := t.TempDir()
	fillIndexedStore(t, dir) // several volumes and a compaction, then closed
	if n := openIndexFiles(t, dir); n != 0 {
		t.Fatalf("%d index files open after close", n)
	}
	s := openStoreWith(t, dir, smallVolumes)
	if n := openIndexFiles(t, dir); n > 1 {
		t.Fatalf("%d index files open after the open, want at most the active volume's", n)
	}
	for i := range 600 {
		id := ShardID{File: packableFileID("sealed"), Segment: i, Index: 1}
		putShard(t, s, id, testShard(id, 4000))
	}
	if st := s.VolumeStats(); st.Volumes < 5 {
		t.Fatalf("want the writes to rotate through volumes: %+v", st)
	}
	if n := openIndexFiles(t, dir); n != 1 {
		t.Fatalf("%d index files open after rotations, want the active volume's", n)
	}
	for i := range 600 {
		if err := s.Delete(ShardID{File: packableFileID("sealed"), Segment: i, Index: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Compact(t.Context(), 1<<40); err != nil {
		t.Fatal(err)
	}
	if n := openIndexFiles(t, dir); n > 1 {
		t.Fatalf("%d index files open after a compaction", n)
	}
	s.Close()
	want := scanState(t, dir)
	s = openStoreWith(t, dir, smallVolumes)
	defer s.Close()
	if st := s.VolumeStats(); st.OpenScanned != 0 {
		t.Fatalf("the sealed volumes' index files were not whole: %+v", st)
	}
	if !stateOf(s).equal(want) {
		t.Fatal("an open from the index files built another state than a scan")
	}
}
