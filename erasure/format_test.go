package erasure

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// storeSource reads one segment's shards from a ShardStore, as a node does.
type storeSource struct {
	s   *ShardStore
	seg SegmentID
}

func (src storeSource) OpenShard(_ context.Context, index int, off, n int64) (io.ReadCloser, error) {
	return src.s.OpenFrames(src.seg.Shard(index), off, n)
}

// TestV1FixtureReads: shards written by the codec before format v2 (headerless, unseeded CRCs,
// committed under testdata/shards-v1) read back byte-exact through the store and the codec of
// today, whole and by range, with any one shard lost; scrub accepts them; rebuilding one writes it
// in the current format, which then reads too.
func TestV1FixtureReads(t *testing.T) {
	const fixture = "testdata/shards-v1"
	want, err := os.ReadFile(filepath.Join(fixture, "content.bin"))
	if err != nil {
		t.Fatal(err)
	}
	g := Geometry{Data: 2, Parity: 1}
	c, err := NewCodec(g, 1024)
	if err != nil {
		t.Fatal(err)
	}
	seg := SegmentID{File: "FILv1fixture", Segment: 0}
	segLen := int64(len(want))
	s := openStore(t, t.TempDir())
	for i := range g.Total() {
		b, err := os.ReadFile(filepath.Join(fixture, seg.Shard(i).String()))
		if err != nil {
			t.Fatal(err)
		}
		putShard(t, s, seg.Shard(i), b)
	}
	src := storeSource{s, seg}
	read := func(off, n int64) []byte {
		t.Helper()
		var buf bytes.Buffer
		faults, err := c.ReadSegment(t.Context(), &buf, seg, segLen, off, n, src)
		if err != nil || len(faults) != 0 {
			t.Fatalf("read [%d,+%d): %v, faults %v", off, n, err, faults)
		}
		return buf.Bytes()
	}
	if got := read(0, segLen); !bytes.Equal(got, want) {
		t.Fatal("v1 fixture: whole read differs")
	}
	if got := read(1500, 700); !bytes.Equal(got, want[1500:2200]) {
		t.Fatal("v1 fixture: range read differs")
	}
	for i := range g.Total() {
		r, err := s.OpenFrames(seg.Shard(i), 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyShard(r, seg.Shard(i), segLen, 1024, g); err != nil {
			t.Fatalf("VerifyShard of v1 shard %d: %v", i, err)
		}
		r.Close()
	}
	// Rebuild data shard 0 from the others: it comes out in the current format.
	var rebuilt bytes.Buffer
	if _, err := c.RebuildShard(t.Context(), &rebuilt, seg, segLen, 0, src); err != nil {
		t.Fatal(err)
	}
	if storedFormat(rebuilt.Bytes()) != FormatV2 {
		t.Fatal("rebuilt shard is not v2")
	}
	putShard(t, s, seg.Shard(0), rebuilt.Bytes())
	if got := read(0, segLen); !bytes.Equal(got, want) {
		t.Fatal("mixed v1/v2 segment: whole read differs")
	}
	// A v1 shard swapped with its sibling reads as good frames: that is what v1 cannot see, and
	// why full reads check the file's SHA-256. Shown here so nobody mistakes v1 for v2.
	b1, _ := os.ReadFile(filepath.Join(fixture, seg.Shard(1).String()))
	putShard(t, s, seg.Shard(2), b1)
	var buf bytes.Buffer
	faults, err := c.ReadSegment(t.Context(), &buf, seg, segLen, 0, segLen, storeSource{s, seg})
	if err != nil || len(faults) != 0 || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("read with data shards intact: %v %v", err, faults)
	}
}

// TestFramesBoundToTheirPlace: every misplacement the v2 checksums exist for is corrupt, never
// good data, while the segment still reads from the other shards.
func TestFramesBoundToTheirPlace(t *testing.T) {
	g := Geometry{Data: 2, Parity: 1}
	c, err := NewCodec(g, testBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytesSeeded(7, 3*testBlockSize)
	shards := encodeSegment(t, c, data)
	other := encodeSegmentAs(t, c, SegmentID{File: "FILother", Segment: 0}, data)
	nextSeg := encodeSegmentAs(t, c, SegmentID{File: testSeg.File, Segment: 1}, data)
	frame := ChunkLen(testBlockSize, g) + crcLen
	swapped := bytes.Clone(shards[0])
	copy(swapped[ShardHeaderLen:], shards[0][ShardHeaderLen+frame:ShardHeaderLen+2*frame])
	copy(swapped[ShardHeaderLen+frame:], shards[0][ShardHeaderLen:ShardHeaderLen+frame])
	tests := []struct {
		name string
		bad  []byte
	}{
		{"sibling copied over", shards[1]},
		{"sibling frames under own header", append(bytes.Clone(shards[0][:ShardHeaderLen]), shards[1][ShardHeaderLen:]...)},
		{"another file's shard", other[0]},
		{"another file's frames under own header", append(bytes.Clone(shards[0][:ShardHeaderLen]), other[0][ShardHeaderLen:]...)},
		{"next segment's shard", nextSeg[0]},
		{"two frames swapped", swapped},
		{"truncated", shards[0][:len(shards[0])-1]},
		{"header only", shards[0][:ShardHeaderLen]},
		{"header lost", shards[0][ShardHeaderLen:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newMemSource([][]byte{tt.bad, shards[1], shards[2]})
			var buf bytes.Buffer
			faults, err := c.ReadSegment(t.Context(), &buf, testSeg, int64(len(data)), 0, int64(len(data)), src)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), data) {
				t.Fatal("wrong bytes")
			}
			if len(faults) != 1 || faults[0].Index != 0 || !faults[0].Corrupt {
				t.Fatalf("faults = %+v, want shard 0 corrupt", faults)
			}
			err = VerifyShard(bytes.NewReader(streamOf(tt.bad)), testSeg.Shard(0), int64(len(data)), testBlockSize, g)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("VerifyShard = %v, want ErrCorrupt", err)
			}
		})
	}
}

// streamOf is what ShardStore.OpenFrames(id, 0, -1) serves for stored bytes b.
func streamOf(b []byte) []byte {
	header, base := readerHeader(b[:min(len(b), ShardHeaderLen)])
	return append(bytes.Clone(header), b[base:]...)
}

func randomBytesSeeded(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// TestFrameSeedIsCRCUpdate pins the hand-written four-byte update to crc32.Update.
func TestFrameSeedIsCRCUpdate(t *testing.T) {
	for _, seed := range []uint32{0, 1, 0xdeadbeef, shardSeed(testSeg.Shard(2))} {
		for _, block := range []int{0, 1, 255, 256, 1 << 20, 1<<31 - 1} {
			b := []byte{byte(block >> 24), byte(block >> 16), byte(block >> 8), byte(block)}
			if got, want := frameSeed(seed, block), crc32.Update(seed, castagnoli, b); got != want {
				t.Fatalf("frameSeed(%#x, %d) = %#x, want %#x", seed, block, got, want)
			}
		}
	}
}

// TestEncoderWritesV1DuringUpgrade: while a Raft server still speaks protocol 1, uploads write v1
// shards (no header, unseeded checksums) with StartFormat(FormatV1). They must be exactly what the
// codec of v0.1.0 wrote, byte for byte the committed fixture, so a v0.1.0 node reads them.
func TestEncoderWritesV1DuringUpgrade(t *testing.T) {
	const fixture = "testdata/shards-v1"
	content, err := os.ReadFile(filepath.Join(fixture, "content.bin"))
	if err != nil {
		t.Fatal(err)
	}
	g := Geometry{Data: 2, Parity: 1}
	c, err := NewCodec(g, 1024)
	if err != nil {
		t.Fatal(err)
	}
	seg := SegmentID{File: "FILv1fixture", Segment: 0}
	enc := c.NewBlockEncoder()
	defer c.PutBlockEncoder(enc)
	shards := make([][]byte, g.Total())
	for _, format := range []uint16{FormatV1, FormatV2} {
		for i := range shards {
			shards[i] = nil
			if format == FormatV2 {
				shards[i] = AppendShardHeader(nil, seg.Shard(i))
			}
		}
		enc.StartFormat(seg, format)
		for off := 0; off < len(content); off += 1024 {
			frames, err := enc.Encode(content[off:min(off+1024, len(content))])
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range frames {
				shards[i] = append(shards[i], f...)
			}
		}
		for i, got := range shards {
			want, err := os.ReadFile(filepath.Join(fixture, seg.Shard(i).String()))
			if err != nil {
				t.Fatal(err)
			}
			if same := bytes.Equal(got, want); same != (format == FormatV1) {
				t.Errorf("format v%d shard %d: equal to the v1 fixture = %v", format, i, same)
			}
			if stored := storedFormat(got); stored != format {
				t.Errorf("format v%d shard %d: stored format reads as v%d", format, i, stored)
			}
		}
	}
}
