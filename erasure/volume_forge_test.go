package erasure

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// forgedRecords is what a client can build from the public record formats alone, to hide in
// the bytes of a file it uploads: for victim's shard 0, a whole record holding a valid shard of
// that identity (every public checksum right) and, for its shard 1, a tombstone; each once in
// the v1 layout and once in the v2 layout sealed with a key the client guessed. Their sequence
// numbers beat any real one.
func forgedRecords(victim SegmentID, shard0 []byte) []byte {
	at := time.Unix(1_780_000_000, 0)
	var b []byte
	for _, f := range []volumeFormat{v1Format(), newV2Format(make([]byte, volumeKeyLen)), newV2Format(bytes.Repeat([]byte{0x5a}, volumeKeyLen))} {
		b = f.appendRecord(b, recordShard, victim.Shard(0), 1<<62, at, shard0)
		b = f.appendRecord(b, recordTomb, victim.Shard(1), 1<<62+1, at, nil)
	}
	return b
}

// TestVolumeForgedRecordInUpload: a client uploads a file whose bytes hold forged volume records
// for another file's shards (forgedRecords). A disk fault then damages the record that carries
// those bytes (its header, or its body). After a restart, and again after compacting that
// volume, no read of the victim's file may return the forged bytes (not a range read, which
// does not check the file's SHA-256, nor the scrub's check of a shard), no forged tombstone may
// delete a shard, and the store's sequence number must not jump to the forged one. Run over a
// volume of each format: in v2 the forged records fail their tag and the record after the damage
// (bystander) is still found; in v1 (unkeyed) a damaged body is skipped by its authentic
// header's length, and after a damaged header the rest of the volume is quarantined rather than
// searched.
func TestVolumeForgedRecordInUpload(t *testing.T) {
	g := Geometry{Data: 2, Parity: 1}
	c, err := NewCodec(g, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	victim := SegmentID{File: "FILvictim", Segment: 0}
	victimData := random(4 << 10)
	forgedData := bytes.Repeat([]byte("forged! "), 512)
	forgedShard := encodeSegmentAs(t, c, victim, forgedData)[0]
	if err := VerifyShard(bytes.NewReader(forgedShard), victim.Shard(0), int64(len(forgedData)), c.BlockSize(), g); err != nil {
		t.Fatalf("the forged shard must pass every frame check a reader makes: %v", err)
	}
	// The attacker's file: the forged records right at its start, so that they lie inside data
	// shard 0's first chunk, contiguous.
	attacker := SegmentID{File: "FILattacker", Segment: 0}
	attackerData := append(forgedRecords(victim, forgedShard), random(12<<10)...)
	bystander := ShardID{File: "FILbystander", Segment: 0, Index: 0}

	// The shards in the order they are written: the victim's, the attacker's, a bystander's.
	type shard struct {
		id   ShardID
		body []byte
	}
	var shards []shard
	for i, b := range encodeSegmentAs(t, c, victim, victimData) {
		shards = append(shards, shard{victim.Shard(i), b})
	}
	for i, b := range encodeSegmentAs(t, c, attacker, attackerData) {
		shards = append(shards, shard{attacker.Shard(i), b})
	}
	shards = append(shards, shard{bystander, testShard(bystander, 2000)})

	layouts := map[string]func(t *testing.T, dir string){
		"v2 volume": func(t *testing.T, dir string) {
			s := openStoreWith(t, dir, smallVolumes)
			for _, sh := range shards {
				putShard(t, s, sh.id, sh.body)
			}
			s.Close()
		},
		"v1 volume": func(t *testing.T, dir string) { // as the first volume code wrote it
			f, at := v1Format(), time.Unix(1_780_000_000, 0)
			vol := f.appendVolumeHeader(nil, 1, at)
			for i, sh := range shards {
				vol = f.appendRecord(vol, recordShard, sh.id, uint64(i+1), at, sh.body)
			}
			writeVolume(t, dir, vol)
		},
	}
	for _, layout := range []string{"v2 volume", "v1 volume"} {
		for _, damage := range []string{"record header", "record body"} {
			t.Run(layout+", "+damage, func(t *testing.T) {
				dir := t.TempDir()
				layouts[layout](t, dir)
				s := openStoreWith(t, dir, smallVolumes)
				loc, err := s.Locate(attacker.Shard(0))
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
				// A disk fault inside the attacker's own record: its header, or its body past
				// the forged records.
				at := loc.RecordOffset + 9
				if damage == "record body" {
					at = loc.Offset + loc.Length - 10
				}
				flipByte(t, loc.Path, at)

				// With its index file, the open reads no record: the file lists the records
				// as the store wrote them, so nothing is searched for and nothing forged is
				// found. The damaged record is found corrupt when it is read.
				quarantined := false
				check := func(t *testing.T, s *ShardStore) {
					t.Helper()
					if seq := s.vols.seq.Load(); seq >= 1<<62 {
						t.Errorf("the store's sequence number came from a forged record: %d", seq)
					}
					// A range read of the victim's first 64 bytes, as core serves a Range request.
					var out bytes.Buffer
					faults, err := c.ReadSegment(t.Context(), &out, victim, int64(len(victimData)), 0, 64, storeSource{s, victim})
					if err != nil {
						t.Fatalf("range read of the victim: %v", err)
					}
					if got := out.Bytes(); !bytes.Equal(got, victimData[:64]) || len(faults) != 0 {
						t.Fatalf("range read of the victim returned %q, faults %v; want its own bytes from its own shards", got, faults)
					}
					// What the scrub checks: each of the victim's shards as stored.
					for i := range g.Total() {
						if err := c.CheckShard(t.Context(), victim, int64(len(victimData)), i, storeSource{s, victim}); err != nil {
							t.Fatalf("victim shard %d: %v", i, err)
						}
						mustRead(t, s, victim.Shard(i), shards[i].body)
					}
					got, err := readAll(s, bystander)
					if quarantined {
						if !errors.Is(err, ErrShardNotFound) {
							t.Fatalf("the record after the damage in a v1 volume: %v; want it quarantined (missing)", err)
						}
					} else if err != nil || !bytes.Equal(got, shards[len(shards)-1].body) {
						t.Fatalf("the record after the damage: %v; want it found and served", err)
					}
				}
				s = openStoreWith(t, dir, smallVolumes)
				check(t, s)
				if st := s.VolumeStats(); st.OpenScanned != 0 || st.OpenListed != int64(len(shards)) {
					t.Fatalf("want every record from the index file: %+v", st)
				}
				if _, err := readAll(s, attacker.Shard(0)); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("the damaged record read back with %v; want ErrCorrupt", err)
				}
				s.Close()

				// Without it (lost, or damaged too), the scan at open walks past the damage.
				removeVolumeIndexes(t, dir)
				quarantined = layout == "v1 volume" && damage == "record header"
				s = openStoreWith(t, dir, smallVolumes)
				check(t, s)
				if st := s.VolumeStats(); st.DamagedBytes == 0 || st.OpenListed != 0 {
					t.Fatalf("the damage was not counted: %+v", st)
				}

				// Compaction walks the damaged volume by the same rules: fill it past its size
				// (so it is sealed), delete everything but the victim and the bystander, compact.
				for i := range 20 {
					id := ShardID{File: "FILfiller", Segment: i, Index: 0}
					putShard(t, s, id, testShard(id, 60<<10))
				}
				for i := range 20 {
					if err := s.Delete(ShardID{File: "FILfiller", Segment: i, Index: 0}); err != nil {
						t.Fatal(err)
					}
				}
				for i := range g.Total() {
					if err := s.Delete(attacker.Shard(i)); err != nil {
						t.Fatal(err)
					}
				}
				if n, err := s.Compact(t.Context(), 1<<40); err != nil || n == 0 {
					t.Fatalf("compaction: %d volumes, %v", n, err)
				}
				s.Close()
				s = openStoreWith(t, dir, smallVolumes)
				check(t, s)
			})
		}
	}
}

// writeVolume lays vol down as volume 1 of a store in dir.
func writeVolume(t *testing.T, dir string, vol []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "volumes"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "volumes", volumeName(1)), vol, 0o640); err != nil {
		t.Fatal(err)
	}
}

// removeVolumeIndexes deletes the index files of the store in dir, so that its next open scans
// every volume.
func removeVolumeIndexes(tb testing.TB, dir string) {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "volumes", "*"+indexSuffix))
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			tb.Fatal(err)
		}
	}
}

// flipByte flips one bit of the byte at off in the file at path, as a disk fault would.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeV1TornTail: a v1 volume whose last record was torn by a crash of the code that wrote
// it is cut back at open as before (nothing valid-looking follows the tear, so there is nothing
// to quarantine), and the records before the tear read back.
func TestVolumeV1TornTail(t *testing.T) {
	vol := fixtureVolume(v1Format())
	tomb := v1Format().recordHeaderLen(len("FILfixtureC")) // the fixture ends with a tombstone
	for _, cut := range []int{len(vol) - 1, len(vol) - tomb + 5} {
		dir := t.TempDir()
		writeVolume(t, dir, vol[:cut])
		s := openStoreWith(t, dir, smallVolumes)
		if st := s.VolumeStats(); st.TornBytes != int64(cut-(len(vol)-tomb)) || st.DamagedBytes != 0 {
			t.Fatalf("cut at %d: %+v; want the torn tombstone cut off", cut, st)
		}
		for _, r := range fixtureRecords()[:2] {
			mustRead(t, s, r.id, r.asRead())
		}
		s.Close()
		if fi, err := os.Stat(filepath.Join(dir, "volumes", volumeName(1))); err != nil || fi.Size() != int64(len(vol)-tomb) {
			t.Fatalf("cut at %d: volume not truncated to the last whole record: %v", cut, err)
		}
	}
}

// TestVolumeRecordTag: a v2 record header verifies only under the key of the volume it was
// sealed for, only in its own version's layout, and not after any of its bytes changed.
func TestVolumeRecordTag(t *testing.T) {
	id := ShardID{File: "FILtag", Segment: 3, Index: 1}
	body := testShard(id, 300)
	at := time.Unix(1_780_000_000, 0)
	own, other := newV2Format(newVolumeKey()), newV2Format(newVolumeKey())
	rec := own.appendRecord(nil, recordShard, id, 7, at, body)
	hl := own.recordHeaderLen(len(id.File))
	if r, err := own.parseRecordHeader(rec); err != nil || r.id != id || r.seq != 7 || !r.bodyOK(rec[hl:]) {
		t.Fatalf("own key: %+v, %v", r, err)
	}
	if _, err := other.parseRecordHeader(rec); !errors.Is(err, errBadRecord) {
		t.Fatalf("another volume's key: %v; want the record refused (a record copied between volumes)", err)
	}
	if _, err := own.parseRecordHeader(v1Format().appendRecord(nil, recordShard, id, 7, at, body)); !errors.Is(err, errBadRecord) {
		t.Fatalf("a v1 record in a v2 volume: %v; want it refused", err)
	}
	for i := range hl {
		bad := bytes.Clone(rec[:hl])
		bad[i] ^= 1
		if _, err := own.parseRecordHeader(bad); !errors.Is(err, errBadRecord) {
			t.Fatalf("header byte %d flipped: %v; want the record refused", i, err)
		}
	}
	// Sealing a record that was encoded before its volume was known gives the same bytes.
	unsealed := own.appendUnsealed(nil, recordShard, id, 0, at, body)
	setRecordSeq(unsealed, 7)
	own.seal(unsealed, id)
	if !bytes.Equal(unsealed, rec) {
		t.Fatal("a record sealed by the flusher differs from one encoded whole")
	}
}
