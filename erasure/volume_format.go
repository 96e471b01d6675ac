package erasure

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"sync"
	"time"
)

// Volume format versions. Every version ever written stays readable (testdata/volume-v1,
// testdata/volume-v2).
const (
	// VolumeFormatV1 is a 32-byte volume header followed by records whose header checksum is a
	// CRC-32C seeded with the shard's identity: public, so a client can write bytes that pass as
	// a record. Still read, never appended to (see volumeFormat.afterDamage).
	VolumeFormatV1 uint16 = 1
	// VolumeFormatV2 is a 64-byte volume header holding a random per-volume key, followed by
	// records whose header carries an HMAC-SHA256 tag under that key: no bytes a client uploads
	// can pass as a record, because no client ever learns the key.
	VolumeFormatV2 uint16 = 2
	// volumeFormatCurrent is what new volumes are written in.
	volumeFormatCurrent = VolumeFormatV2
)

// volumeMagic opens every volume file, recordMagic every record in it.
var (
	volumeMagic = [8]byte{'C', 'A', 'I', 'R', 'N', 'V', 'O', 'L'}
	recordMagic = [4]byte{'C', 'R', 'E', 'C'}
)

// Volume header layout, v1 (big-endian):
//
//	[0:8)   magic "CAIRNVOL"
//	[8:10)  volume format version (1)
//	[10:12) header length (32)
//	[12:16) volume id
//	[16:24) creation time, Unix nanoseconds
//	[24:28) reserved, zero
//	[28:32) CRC-32C of [0:28)
//
// v2 (big-endian):
//
//	[0:24)  as v1, version 2, header length 64
//	[24:56) the volume's record key: 32 random bytes, written once at creation
//	[56:60) reserved, zero
//	[60:64) CRC-32C of [0:60)
const (
	volumeHeaderLenV1 = 32
	volumeHeaderLenV2 = 64
	// maxVolumeHeaderLen is the longest volume header of any version: a file no longer than this
	// holds no record.
	maxVolumeHeaderLen = volumeHeaderLenV2
	volumeKeyLen       = 32
)

// Record layout (big-endian), recordFixedLen bytes, then the file id, then the header's
// checksum (v1) or tag (v2), then the body:
//
//	[0:4)   magic "CREC"
//	[4]     record version: the volume's format version (1 or 2); any other is not a record
//	[5]     kind: 1 shard, 2 tombstone
//	[6]     file id length n (1..64)
//	[7]     reserved, zero
//	[8:12)  segment
//	[12:16) shard index
//	[16:24) sequence number: store-wide, increasing; the highest one of an id wins at open
//	[24:32) write time, Unix nanoseconds (ShardInfo.ModTime, which the GC's grace period reads)
//	[32:36) body length (0 for a tombstone)
//	[36:40) CRC-32C of the body, seeded with the shard's identity (shardSeed)
//	[40:40+n)      file id
//	v1: [40+n:44+n)  CRC-32C of [0:40+n), seeded with the shard's identity
//	v2: [40+n:56+n)  the first 16 bytes of HMAC-SHA256(volume key, [0:40+n))
//
// The body is the shard's bytes exactly as a shard file holds them (format v2: the 96-byte shard
// header, then frames), so the per-frame checksums bind a frame to its place inside a volume as
// they do in a file of its own. In v2 the tag covers the body's CRC, so the body is bound to an
// authentic header too.
const (
	recordFixedLen = 40
	recordShard    = 1
	recordTomb     = 2
	// recordTagLen is the length of a v2 record's tag: 2^-128 per forged header.
	recordTagLen = 16
	// maxRecordBody bounds what a record header may claim, so a damaged length cannot make the
	// scan at open read far past the record.
	maxRecordBody = 16 << 20
)

// maxRecordStart is where no record can start: offsets are 4 bytes in the index and index
// files, and a volume is rotated long before (maxVolumeSize). Bytes past it are not the store's.
const maxRecordStart = 1 << 32

// errBeyondRecords is why bytes at or past maxRecordStart are not a record.
var errBeyondRecords = errors.New("past the last offset a record can start at")

// errBadRecord is why bytes at an offset are not a record; the scan at open then decides what
// the bytes after them are (volumeFormat.afterDamage).
var errBadRecord = errors.New("not a valid volume record")

// volumeRecord is one decoded record header.
type volumeRecord struct {
	id      ShardID
	kind    byte
	seq     uint64
	mtime   int64 // Unix nanoseconds
	bodyLen int
	bodyCRC uint32
}

// volumeFormat is how the records of one volume are laid out and authenticated: its format
// version and, from v2, its key. The zero value is not valid; use v1Format or newV2Format.
type volumeFormat struct {
	version uint16
	key     []byte     // v2: the volume's record key
	macs    *sync.Pool // v2: *recordMAC keyed with key (a read must not allocate one)
}

// v1Format is the format of v1 volumes, which have no key.
func v1Format() volumeFormat { return volumeFormat{version: VolumeFormatV1} }

// newV2Format is the format of a v2 volume whose record key is key.
func newV2Format(key []byte) volumeFormat {
	key = bytes.Clone(key)
	return volumeFormat{version: VolumeFormatV2, key: key, macs: &sync.Pool{New: func() any { return &recordMAC{h: hmac.New(sha256.New, key)} }}}
}

// newVolumeKey returns a fresh random record key.
func newVolumeKey() []byte {
	key := make([]byte, volumeKeyLen)
	rand.Read(key) // never fails (crypto/rand: it crashes the program instead)
	return key
}

// headerLen is the length of the volume header: where the first record starts.
func (f volumeFormat) headerLen() int64 {
	if f.version == VolumeFormatV1 {
		return volumeHeaderLenV1
	}
	return volumeHeaderLenV2
}

// sealLen is the length of a record header's checksum (v1) or tag (v2).
func (f volumeFormat) sealLen() int {
	if f.version == VolumeFormatV1 {
		return 4
	}
	return recordTagLen
}

// recordHeaderLen is the length of a record header whose file id has n bytes.
func (f volumeFormat) recordHeaderLen(n int) int { return recordFixedLen + n + f.sealLen() }

// appendVolumeHeader appends the header of volume id, created at created, to dst.
func (f volumeFormat) appendVolumeHeader(dst []byte, id uint32, created time.Time) []byte {
	hl := f.headerLen()
	h := make([]byte, hl)
	copy(h, volumeMagic[:])
	binary.BigEndian.PutUint16(h[8:], f.version)
	binary.BigEndian.PutUint16(h[10:], uint16(hl))
	binary.BigEndian.PutUint32(h[12:], id)
	binary.BigEndian.PutUint64(h[16:], uint64(created.UnixNano()))
	if f.version == VolumeFormatV2 {
		copy(h[24:24+volumeKeyLen], f.key)
	}
	binary.BigEndian.PutUint32(h[hl-4:], crc32.Checksum(h[:hl-4], castagnoli))
	return append(dst, h...)
}

// parseVolumeHeader checks the volume header at the start of h (up to maxVolumeHeaderLen bytes
// of the file, fewer if it is shorter) and returns the volume id it names and its format.
func parseVolumeHeader(h []byte) (uint32, volumeFormat, error) {
	if len(h) < volumeHeaderLenV1 || !bytes.Equal(h[:8], volumeMagic[:]) {
		return 0, volumeFormat{}, errors.New("no volume header")
	}
	var f volumeFormat
	switch v := binary.BigEndian.Uint16(h[8:]); v {
	case VolumeFormatV1:
		f = v1Format()
	case VolumeFormatV2:
		f = volumeFormat{version: VolumeFormatV2}
	default:
		return 0, volumeFormat{}, fmt.Errorf("unknown volume format version %d", v)
	}
	hl := f.headerLen()
	if int64(len(h)) < hl || int64(binary.BigEndian.Uint16(h[10:])) != hl || crc32.Checksum(h[:hl-4], castagnoli) != binary.BigEndian.Uint32(h[hl-4:]) {
		return 0, volumeFormat{}, errors.New("volume header checksum mismatch")
	}
	if f.version == VolumeFormatV2 {
		f = newV2Format(h[24 : 24+volumeKeyLen])
	}
	return binary.BigEndian.Uint32(h[12:]), f, nil
}

// appendRecord appends a whole record of the given kind for id, with body (nil for a
// tombstone), to dst.
func (f volumeFormat) appendRecord(dst []byte, kind byte, id ShardID, seq uint64, mtime time.Time, body []byte) []byte {
	start := len(dst)
	dst = f.appendUnsealed(dst, kind, id, seq, mtime, body)
	f.seal(dst[start:], id)
	return dst
}

// appendUnsealed appends a record whose header checksum or tag is left zero: a writer encodes
// its record before it knows which volume (which key) the record lands in, and the flusher
// seals it for that volume. The layout depends on the version alone.
func (f volumeFormat) appendUnsealed(dst []byte, kind byte, id ShardID, seq uint64, mtime time.Time, body []byte) []byte {
	dst = append(dst, recordMagic[:]...)
	dst = append(dst, byte(f.version), kind, byte(len(id.File)), 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(id.Segment))
	dst = binary.BigEndian.AppendUint32(dst, uint32(id.Index))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(mtime.UnixNano()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Update(shardSeed(id), castagnoli, body))
	dst = append(dst, id.File...)
	dst = append(dst, make([]byte, f.sealLen())...)
	return append(dst, body...)
}

// setRecordSeq rewrites the sequence number of the unsealed record at the start of rec. The
// flusher applies records in the order they queue, and the scan at open in sequence order, so the
// number is given when the record queues, not when it is encoded.
func setRecordSeq(rec []byte, seq uint64) { binary.BigEndian.PutUint64(rec[16:], seq) }

// seal writes the header checksum (v1) or tag (v2) of the record of id at the start of rec.
func (f volumeFormat) seal(rec []byte, id ShardID) {
	hl := f.recordHeaderLen(len(id.File))
	f.sum(rec[hl-f.sealLen():hl], rec[:hl-f.sealLen()], id)
}

// recordMAC is a pooled HMAC with room for its sum, so that sealing or checking a record header
// allocates nothing.
type recordMAC struct {
	h   hash.Hash
	out [sha256.Size]byte
}

// sum writes into out (sealLen bytes) the checksum or tag of h, the first bytes of a header of
// a record of id.
func (f volumeFormat) sum(out, h []byte, id ShardID) {
	if f.version == VolumeFormatV1 {
		binary.BigEndian.PutUint32(out, crc32.Update(shardSeed(id), castagnoli, h))
		return
	}
	m := f.macs.Get().(*recordMAC)
	m.h.Reset()
	m.h.Write(h)
	copy(out, m.h.Sum(m.out[:0]))
	f.macs.Put(m)
}

// parseRecordHeader decodes the record header at the start of b (which must hold at least
// recordFixedLen bytes; more are needed for the file id and its seal, and the length is
// checked). It verifies everything but the body: in a v2 volume, that the header is one this
// store wrote into this volume.
func (f volumeFormat) parseRecordHeader(b []byte) (volumeRecord, error) {
	if len(b) < recordFixedLen || !bytes.Equal(b[:4], recordMagic[:]) {
		return volumeRecord{}, fmt.Errorf("%w: no record magic", errBadRecord)
	}
	if uint16(b[4]) != f.version {
		return volumeRecord{}, fmt.Errorf("%w: record version %d in a v%d volume", errBadRecord, b[4], f.version)
	}
	kind, n := b[5], int(b[6])
	if (kind != recordShard && kind != recordTomb) || n == 0 || n > maxFileIDLen {
		return volumeRecord{}, fmt.Errorf("%w: kind %d, file id length %d", errBadRecord, kind, n)
	}
	hl := f.recordHeaderLen(n)
	if len(b) < hl {
		return volumeRecord{}, fmt.Errorf("%w: header cut short", errBadRecord)
	}
	r := volumeRecord{
		id: ShardID{
			File:    string(b[recordFixedLen : recordFixedLen+n]),
			Segment: int(binary.BigEndian.Uint32(b[8:])),
			Index:   int(binary.BigEndian.Uint32(b[12:])),
		},
		kind:    kind,
		seq:     binary.BigEndian.Uint64(b[16:]),
		mtime:   int64(binary.BigEndian.Uint64(b[24:])),
		bodyLen: int(binary.BigEndian.Uint32(b[32:])),
		bodyCRC: binary.BigEndian.Uint32(b[36:]),
	}
	if r.id.validate() != nil {
		return volumeRecord{}, fmt.Errorf("%w: invalid shard id", errBadRecord)
	}
	var want [recordTagLen]byte
	sl := f.sealLen()
	f.sum(want[:sl], b[:hl-sl], r.id)
	if !hmac.Equal(want[:sl], b[hl-sl:hl]) {
		return volumeRecord{}, fmt.Errorf("%w: header checksum mismatch", errBadRecord)
	}
	if r.bodyLen > maxRecordBody || (kind == recordTomb && r.bodyLen != 0) {
		return volumeRecord{}, fmt.Errorf("%w: body length %d", errBadRecord, r.bodyLen)
	}
	return r, nil
}

// bodyOK reports whether body is the one the record header promised.
func (r volumeRecord) bodyOK(body []byte) bool {
	return len(body) == r.bodyLen && crc32.Update(shardSeed(r.id), castagnoli, body) == r.bodyCRC
}
