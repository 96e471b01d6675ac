package erasure

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Shard format versions. Every version ever written stays readable.
const (
	// FormatV1 is the original shard: frames of chunk || CRC-32C(chunk), no header. Its checksums
	// do not bind a frame to its place, so a misplaced frame or shard reads as good data; only the
	// file's SHA-256 on a full read catches that. Still read; written only while a Raft server
	// speaks a protocol older than fsm.ProtocolShardFormatV2 (a rolling upgrade from v0.1.0).
	FormatV1 uint16 = 1
	// FormatV2 starts with a ShardHeaderLen-byte header naming the shard, and each frame's
	// CRC-32C is seeded with the frame's identity (file, segment, shard index, block index).
	FormatV2 uint16 = 2
	// FormatCurrent is what writers produce.
	FormatCurrent = FormatV2
)

// ShardHeaderLen is the length of the header at the start of every shard stream as readers see
// it: stored in v2 shards, synthesised by the store for v1 shards, so that a reader always learns
// the format from the first bytes of the stream it opened.
const ShardHeaderLen = 96

// shardMagic opens every v2 shard file.
var shardMagic = [8]byte{'C', 'A', 'I', 'R', 'N', 'S', 'H', 'D'}

// Header layout (big-endian):
//
//	[0:8)   magic "CAIRNSHD"
//	[8:10)  format version
//	[10:12) header length (96)
//	[12:16) segment
//	[16:18) shard index
//	[18]    file id length
//	[19:83) file id, zero-padded
//	[83:92) reserved, zero
//	[92:96) CRC-32C of [0:92), seeded with the shard's identity
const (
	hdrVersion  = 8
	hdrLen      = 10
	hdrSegment  = 12
	hdrIndex    = 16
	hdrFileLen  = 18
	hdrFile     = 19
	hdrChecksum = 92
)

// AppendShardHeader appends the v2 header of shard id to dst.
func AppendShardHeader(dst []byte, id ShardID) []byte {
	var h [ShardHeaderLen]byte
	copy(h[:], shardMagic[:])
	binary.BigEndian.PutUint16(h[hdrVersion:], FormatV2)
	binary.BigEndian.PutUint16(h[hdrLen:], ShardHeaderLen)
	binary.BigEndian.PutUint32(h[hdrSegment:], uint32(id.Segment))
	binary.BigEndian.PutUint16(h[hdrIndex:], uint16(id.Index))
	h[hdrFileLen] = byte(len(id.File))
	copy(h[hdrFile:hdrFile+maxFileIDLen], id.File)
	binary.BigEndian.PutUint32(h[hdrChecksum:], crc32.Update(shardSeed(id), castagnoli, h[:hdrChecksum]))
	return append(dst, h[:]...)
}

// LegacyShardHeader is the header a reader puts in front of a v1 shard stream that came without
// one (a peer of protocol 1 serves raw frames), so that every reader learns the format the same way.
func LegacyShardHeader() []byte { return legacyHeader() }

// legacyHeader is what the store puts in front of a v1 shard's frames: the magic and version 1,
// nothing else (a v1 shard does not know its identity).
func legacyHeader() []byte {
	h := make([]byte, ShardHeaderLen)
	copy(h, shardMagic[:])
	binary.BigEndian.PutUint16(h[hdrVersion:], FormatV1)
	return h
}

// storedFormat tells whether a shard file's first bytes are a well-formed v2 header. Anything
// else is a v1 shard (which has no header), or a v2 shard whose header is damaged: its frames
// then fail their checksums as v1 frames, so it still reads as corrupt.
func storedFormat(first []byte) uint16 {
	if len(first) < ShardHeaderLen || !bytes.Equal(first[:8], shardMagic[:]) ||
		binary.BigEndian.Uint16(first[hdrVersion:]) != FormatV2 ||
		binary.BigEndian.Uint16(first[hdrLen:]) != ShardHeaderLen {
		return FormatV1
	}
	return FormatV2
}

// readerHeader is what a reader of a stored shard sees first, given the shard's first bytes: its
// own header for v2, a synthesised legacy one for v1, and where its frames start.
func readerHeader(first []byte) (header []byte, framesAt int64) {
	if storedFormat(first) == FormatV1 {
		return legacyHeader(), 0
	}
	return first[:ShardHeaderLen], ShardHeaderLen
}

// checkHeader validates the header at the start of a shard stream opened for shard id and returns
// the shard's format. A v2 header must name id and carry a valid checksum.
func checkHeader(h []byte, id ShardID) (uint16, error) {
	if len(h) != ShardHeaderLen || !bytes.Equal(h[:8], shardMagic[:]) {
		return 0, fmt.Errorf("%w: shard %s: no shard header", ErrCorrupt, id)
	}
	switch v := binary.BigEndian.Uint16(h[hdrVersion:]); v {
	case FormatV1:
		return v, nil
	case FormatV2:
		n := int(h[hdrFileLen])
		got := ShardID{
			File:    string(h[hdrFile : hdrFile+min(n, maxFileIDLen)]),
			Segment: int(binary.BigEndian.Uint32(h[hdrSegment:])),
			Index:   int(binary.BigEndian.Uint16(h[hdrIndex:])),
		}
		if crc32.Update(shardSeed(got), castagnoli, h[:hdrChecksum]) != binary.BigEndian.Uint32(h[hdrChecksum:]) {
			return 0, fmt.Errorf("%w: shard %s: header checksum mismatch", ErrCorrupt, id)
		}
		if got != id {
			return 0, fmt.Errorf("%w: shard %s holds shard %s", ErrCorrupt, id, got)
		}
		return v, nil
	default:
		return 0, fmt.Errorf("%w: shard %s: unknown format version %d", ErrCorrupt, id, v)
	}
}

// shardSeed is the CRC-32C state after the shard's identity: "cairn-shard", 0, the file id, 0,
// then segment and index as 4 bytes each. A frame's checksum continues it with the block index
// (4 bytes) and then the chunk. Identities that differ only in one fixed-width field always give
// different seeds (a CRC detects every error burst up to 32 bits), so within a file no two frames
// of different places share a seed; across files a collision is a 2^-32 chance, which is the
// strength of the CRC anyway. A seed is not a MAC: this guards against misplaced data, not
// against someone who writes shards on purpose.
func shardSeed(id ShardID) uint32 {
	var b [64 + maxFileIDLen]byte
	p := append(b[:0], "cairn-shard\x00"...)
	p = append(p, id.File...)
	p = append(p, 0)
	p = binary.BigEndian.AppendUint32(p, uint32(id.Segment))
	p = binary.BigEndian.AppendUint32(p, uint32(id.Index))
	return crc32.Update(0, castagnoli, p)
}

// frameSeed is the seed of block j's frame in the shard whose seed is shard: the CRC-32C state
// continued with the block index as 4 big-endian bytes. It is crc32.Update written out for four
// bytes, because a slice handed to crc32.Update escapes and would cost an allocation per frame.
func frameSeed(shard uint32, block int) uint32 {
	crc := ^shard
	for shift := 24; shift >= 0; shift -= 8 {
		crc = castagnoli[byte(crc)^byte(uint32(block)>>shift)] ^ (crc >> 8)
	}
	return ^crc
}

// frameChecker verifies the frames of one shard in its format.
type frameChecker struct {
	format uint16
	seed   uint32 // shardSeed, for v2
}

// check verifies block j's frame and returns its chunk.
func (fc frameChecker) check(frame []byte, j int) ([]byte, bool) {
	cl := len(frame) - crcLen
	chunk := frame[:cl]
	var sum uint32
	if fc.format == FormatV1 {
		sum = crc32.Checksum(chunk, castagnoli)
	} else {
		sum = crc32.Update(frameSeed(fc.seed, j), castagnoli, chunk)
	}
	return chunk, sum == binary.BigEndian.Uint32(frame[cl:])
}

// appendFrameCRCv1 writes the v1 checksum (CRC-32C of the chunk alone) into the 4 bytes after it.
func appendFrameCRCv1(chunk []byte) []byte {
	return binary.BigEndian.AppendUint32(chunk, crc32.Checksum(chunk, castagnoli))
}

// appendFrameCRC writes the v2 checksum of block j's chunk into the 4 bytes after it; chunk must
// have the capacity.
func appendFrameCRC(chunk []byte, shard uint32, j int) []byte {
	return binary.BigEndian.AppendUint32(chunk, crc32.Update(frameSeed(shard, j), castagnoli, chunk))
}
