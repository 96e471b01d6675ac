package erasure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Volume format versions. Every version ever written stays readable (testdata/volume-v1).
const (
	// VolumeFormatV1 is a 32-byte volume header followed by records (volume_format.go).
	VolumeFormatV1 uint16 = 1
	// recordVersion1 is the only record layout so far.
	recordVersion1 = 1
)

// volumeMagic opens every volume file, recordMagic every record in it.
var (
	volumeMagic = [8]byte{'C', 'A', 'I', 'R', 'N', 'V', 'O', 'L'}
	recordMagic = [4]byte{'C', 'R', 'E', 'C'}
)

// Volume header layout (big-endian):
//
//	[0:8)   magic "CAIRNVOL"
//	[8:10)  volume format version
//	[10:12) header length (32)
//	[12:16) volume id
//	[16:24) creation time, Unix nanoseconds
//	[24:28) reserved, zero
//	[28:32) CRC-32C of [0:28)
const volumeHeaderLen = 32

// Record layout (big-endian), recordFixedLen bytes, then the file id, then a CRC, then the body:
//
//	[0:4)   magic "CREC"
//	[4]     record version (1)
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
//	[40+n:44+n)    CRC-32C of [0:40+n), seeded with the shard's identity
//
// The body is the shard's bytes exactly as a shard file holds them (format v2: the 96-byte shard
// header, then frames), so the per-frame checksums bind a frame to its place inside a volume as
// they do in a file of its own.
const (
	recordFixedLen = 40
	recordShard    = 1
	recordTomb     = 2
	// maxRecordBody bounds what a record header may claim, so a damaged length cannot make the
	// scan at open read far past the record.
	maxRecordBody = 16 << 20
)

// errBadRecord is why bytes at an offset are not a record; the scan at open then looks for the
// next record (a damaged one in the middle) or truncates (a torn tail).
var errBadRecord = errors.New("not a valid volume record")

// recordHeaderLen is the length of a record header whose file id has n bytes.
func recordHeaderLen(n int) int { return recordFixedLen + n + 4 }

// volumeRecord is one decoded record header.
type volumeRecord struct {
	id      ShardID
	kind    byte
	seq     uint64
	mtime   int64 // Unix nanoseconds
	bodyLen int
	bodyCRC uint32
}

// appendVolumeHeader appends the header of volume id, created at created, to dst.
func appendVolumeHeader(dst []byte, id uint32, created time.Time) []byte {
	var h [volumeHeaderLen]byte
	copy(h[:], volumeMagic[:])
	binary.BigEndian.PutUint16(h[8:], VolumeFormatV1)
	binary.BigEndian.PutUint16(h[10:], volumeHeaderLen)
	binary.BigEndian.PutUint32(h[12:], id)
	binary.BigEndian.PutUint64(h[16:], uint64(created.UnixNano()))
	binary.BigEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return append(dst, h[:]...)
}

// parseVolumeHeader checks a volume header and returns the volume id it names.
func parseVolumeHeader(h []byte) (uint32, error) {
	if len(h) < volumeHeaderLen || !bytes.Equal(h[:8], volumeMagic[:]) {
		return 0, errors.New("no volume header")
	}
	if v := binary.BigEndian.Uint16(h[8:]); v != VolumeFormatV1 {
		return 0, fmt.Errorf("unknown volume format version %d", v)
	}
	if binary.BigEndian.Uint16(h[10:]) != volumeHeaderLen || crc32.Checksum(h[:28], castagnoli) != binary.BigEndian.Uint32(h[28:]) {
		return 0, errors.New("volume header checksum mismatch")
	}
	return binary.BigEndian.Uint32(h[12:]), nil
}

// appendRecord appends a record of the given kind for id, with body (nil for a tombstone), to dst.
func appendRecord(dst []byte, kind byte, id ShardID, seq uint64, mtime time.Time, body []byte) []byte {
	seed := shardSeed(id)
	start := len(dst)
	dst = append(dst, recordMagic[:]...)
	dst = append(dst, recordVersion1, kind, byte(len(id.File)), 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(id.Segment))
	dst = binary.BigEndian.AppendUint32(dst, uint32(id.Index))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(mtime.UnixNano()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Update(seed, castagnoli, body))
	dst = append(dst, id.File...)
	dst = binary.BigEndian.AppendUint32(dst, crc32.Update(seed, castagnoli, dst[start:]))
	return append(dst, body...)
}

// setRecordSeq rewrites the sequence number of the record of id at the start of rec, and its
// header checksum. The flusher applies records in the order they queue, and the scan at open in
// sequence order, so the number is given when the record queues, not when it is encoded.
func setRecordSeq(rec []byte, id ShardID, seq uint64) {
	hl := recordHeaderLen(len(id.File))
	binary.BigEndian.PutUint64(rec[16:], seq)
	binary.BigEndian.PutUint32(rec[hl-4:], crc32.Update(shardSeed(id), castagnoli, rec[:hl-4]))
}

// parseRecordHeader decodes the record header at the start of b (which must hold at least
// recordFixedLen bytes; more are needed for the file id and CRC, and the length is checked).
// It verifies everything but the body.
func parseRecordHeader(b []byte) (volumeRecord, error) {
	if len(b) < recordFixedLen || !bytes.Equal(b[:4], recordMagic[:]) {
		return volumeRecord{}, fmt.Errorf("%w: no record magic", errBadRecord)
	}
	if b[4] != recordVersion1 {
		return volumeRecord{}, fmt.Errorf("%w: unknown record version %d", errBadRecord, b[4])
	}
	kind, n := b[5], int(b[6])
	if (kind != recordShard && kind != recordTomb) || n == 0 || n > maxFileIDLen {
		return volumeRecord{}, fmt.Errorf("%w: kind %d, file id length %d", errBadRecord, kind, n)
	}
	hl := recordHeaderLen(n)
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
	if crc32.Update(shardSeed(r.id), castagnoli, b[:hl-4]) != binary.BigEndian.Uint32(b[hl-4:]) {
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
