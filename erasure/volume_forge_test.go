package erasure

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// forgedRecordV1 is what a client can build from the public v1 record format alone: a whole,
// valid-looking record for someone else's shard, with a sequence number that beats any real one.
func forgedRecordV1(id ShardID, body []byte) []byte {
	return v1Format().appendRecord(nil, recordShard, id, 1<<62, time.Unix(1_780_000_000, 0), body)
}

// TestVolumeForgedRecordInUpload: a client uploads a file whose bytes hold a forged volume
// record for another file's shard (its header, a body that is a valid shard of the victim's
// identity, every public checksum right). A disk fault then damages the record that carries
// those bytes. After a restart, no read of the victim's file may return the forged bytes: not a
// range read (which does not check the file's SHA-256), not the scrub's shard check.
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

	// The attacker's file: the forged record right at its start, so it lies inside data
	// shard 0's first chunk, contiguous.
	attacker := SegmentID{File: "FILattacker", Segment: 0}
	attackerData := append(forgedRecordV1(victim.Shard(0), forgedShard), random(8<<10)...)

	for _, damage := range []string{"record header", "record body"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			s, err := OpenShardStoreWith(dir, smallVolumes)
			if err != nil {
				t.Fatal(err)
			}
			for i, b := range encodeSegmentAs(t, c, victim, victimData) {
				putShard(t, s, victim.Shard(i), b)
			}
			for i, b := range encodeSegmentAs(t, c, attacker, attackerData) {
				putShard(t, s, attacker.Shard(i), b)
			}
			loc, err := s.Locate(attacker.Shard(0))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()

			// A disk fault inside the attacker's own record (its header, or its body past the
			// forged record).
			at := loc.RecordOffset + 9
			if damage == "record body" {
				at = loc.Offset + loc.Length - 10
			}
			f, err := os.OpenFile(loc.Path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := []byte{0}
			if _, err := f.ReadAt(b, at); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x40
			if _, err := f.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
			f.Close()

			s = openStoreWith(t, dir, smallVolumes)
			if seq := s.vols.seq.Load(); seq >= 1<<62 {
				t.Errorf("the store's sequence number came from the forged record: %d", seq)
			}
			// A range read of the victim's first 64 bytes, as core serves a Range request.
			var out bytes.Buffer
			faults, err := c.ReadSegment(t.Context(), &out, victim, int64(len(victimData)), 0, 64, storeSource{s, victim})
			if err != nil {
				t.Fatalf("range read of the victim: %v", err)
			}
			if got := out.Bytes(); !bytes.Equal(got, victimData[:64]) {
				t.Fatalf("range read of the victim returned %q (faults %v); want its own bytes", got, faults)
			}
			// The scrub's check of the victim's shard 0 must not vouch for forged bytes either.
			r, err := s.OpenFrames(victim.Shard(0), 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var stored bytes.Buffer
			if _, err := stored.ReadFrom(r); err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(stored.Bytes(), forgedShard) {
				t.Fatal("the store serves the forged shard as the victim's shard 0")
			}
		})
	}
}
