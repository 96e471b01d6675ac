package erasure

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// A volume's index file (NNNNNNNN.idx beside NNNNNNNN.vol) lists the volume's records in the
// order they lie in it, one small entry per record, so that a start reads the entries instead of
// every volume byte (see DESIGN.md, "Index files"). It is a cache of the volume and never the only
// copy of anything: it is written after the fdatasync that made its records durable, without a
// sync of its own, and whatever of it cannot be trusted is found again by scanning the volume.
//
// Layout (index format 1), big-endian:
//
//	header, 52 bytes: magic "CAIRNIDX", format (2), reserved (2), volume id (4),
//	                  SHA-256 of the volume's header (32), CRC-32C of the bytes before it (4)
//	entry:            kind (1), reserved (1), file id length n (2), segment (4), index (4),
//	                  sequence number (8), record offset (4), body length (4),
//	                  write time in Unix seconds rounded up (4), file id (n),
//	                  CRC-32C of the entry's bytes before it (4)
//
// The one invariant everything rests on: the entries are a prefix of the volume's records, in
// offset order. Entries are only appended, for records at or past the end of the last one listed;
// a load stops at the first entry that fails its checks, and the volume is scanned from the end of
// the last good one.
const (
	indexSuffix        = ".idx"
	indexCompactSuffix = ".idx.compact"
	indexHeaderLen     = 52
	indexEntryFixedLen = 32
	// indexEntryTypicalLen is an entry's length for a file id of 20 bytes, as the API makes them
	// ("FIL" and 17 alphanumerics).
	indexEntryTypicalLen = indexEntryFixedLen + 20 + 4
)

// IndexFormatV1 is the only index file format so far.
const IndexFormatV1 uint16 = 1

var indexMagic = [8]byte{'C', 'A', 'I', 'R', 'N', 'I', 'D', 'X'}

// volumeIndexFile is an open index file being appended to.
type volumeIndexFile struct {
	f       *os.File
	path    string
	end     int64 // where the next entry goes in the index file
	covered int64 // end of the last record listed, in the volume: later records go past it
}

// indexEntry is one record as its index file lists it.
type indexEntry struct {
	kind    byte
	key     volumeKey
	seq     uint64
	off     int64 // the record's start in the volume
	bodyLen int
	mtime   uint32 // as volumeEntry.mtime
}

// indexPathOf is the index file of the volume at volPath (a volume being compacted has one being
// written beside it).
func indexPathOf(volPath string) string {
	if base, ok := strings.CutSuffix(volPath, compactSuffix); ok {
		return base + indexCompactSuffix
	}
	return strings.TrimSuffix(volPath, volumeSuffix) + indexSuffix
}

// appendIndexHeader appends the header binding an index file to volume id, whose header bytes
// are volHeader: an index of another volume, or of an earlier volume with the same id, does not
// match (a v2 volume header holds a random key).
func appendIndexHeader(dst []byte, id uint32, volHeader []byte) []byte {
	start := len(dst)
	dst = append(dst, indexMagic[:]...)
	dst = binary.BigEndian.AppendUint16(dst, IndexFormatV1)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, id)
	sum := sha256.Sum256(volHeader)
	dst = append(dst, sum[:]...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// appendIndexEntry appends e to dst.
func appendIndexEntry(dst []byte, e indexEntry) []byte {
	start := len(dst)
	dst = append(dst, e.kind, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(e.key.file)))
	dst = binary.BigEndian.AppendUint32(dst, e.key.segment)
	dst = binary.BigEndian.AppendUint32(dst, e.key.index)
	dst = binary.BigEndian.AppendUint64(dst, e.seq)
	dst = binary.BigEndian.AppendUint32(dst, uint32(e.off))
	dst = binary.BigEndian.AppendUint32(dst, uint32(e.bodyLen))
	dst = binary.BigEndian.AppendUint32(dst, e.mtime)
	dst = append(dst, e.key.file...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// errIndexEntry ends a load: the entry and everything after it are not trusted.
var errIndexEntry = errors.New("index entry not valid")

// parseIndexEntry decodes the entry at the start of r, checking it against the volume it
// describes: format f, size bytes long, whose previous listed record ended at prevEnd.
func parseIndexEntry(r *bufio.Reader, f volumeFormat, prevEnd, size int64) (indexEntry, int, error) {
	fixed, err := r.Peek(indexEntryFixedLen)
	if err != nil {
		return indexEntry{}, 0, err // io.EOF: the end of the list
	}
	n := int(binary.BigEndian.Uint16(fixed[2:]))
	if n == 0 || n > maxFileIDLen {
		return indexEntry{}, 0, fmt.Errorf("%w: file id length %d", errIndexEntry, n)
	}
	total := indexEntryFixedLen + n + 4
	b, err := r.Peek(total)
	if err != nil {
		return indexEntry{}, 0, fmt.Errorf("%w: cut short", errIndexEntry)
	}
	if crc32.Checksum(b[:total-4], castagnoli) != binary.BigEndian.Uint32(b[total-4:]) {
		return indexEntry{}, 0, fmt.Errorf("%w: checksum mismatch", errIndexEntry)
	}
	e := indexEntry{
		kind:    b[0],
		key:     volumeKey{file: string(b[indexEntryFixedLen : indexEntryFixedLen+n]), segment: binary.BigEndian.Uint32(b[4:]), index: binary.BigEndian.Uint32(b[8:])},
		seq:     binary.BigEndian.Uint64(b[12:]),
		off:     int64(binary.BigEndian.Uint32(b[20:])),
		bodyLen: int(binary.BigEndian.Uint32(b[24:])),
		mtime:   binary.BigEndian.Uint32(b[28:]),
	}
	if (e.kind != recordShard && e.kind != recordTomb) || (e.kind == recordTomb && e.bodyLen != 0) || e.bodyLen > maxRecordBody {
		return indexEntry{}, 0, fmt.Errorf("%w: kind %d, body length %d", errIndexEntry, e.kind, e.bodyLen)
	}
	if e.key.id().validate() != nil {
		return indexEntry{}, 0, fmt.Errorf("%w: invalid shard id", errIndexEntry)
	}
	if e.off < prevEnd || e.off+e.recordLen(f) > size {
		return indexEntry{}, 0, fmt.Errorf("%w: record at %d outside the volume's unlisted bytes %d..%d", errIndexEntry, e.off, prevEnd, size)
	}
	if _, err := r.Discard(total); err != nil {
		return indexEntry{}, 0, err
	}
	return e, total, nil
}

// recordLen is the length of the record e lists, in a volume of format f.
func (e indexEntry) recordLen(f volumeFormat) int64 {
	return int64(f.recordHeaderLen(len(e.key.file))) + int64(e.bodyLen)
}

// loadIndex reads the index file of the volume at volPath (id, header bytes volHeader, format
// f, size bytes), calling each for every entry it trusts, in order. It returns the index file's
// length that those entries take (0 when the file is missing or its header does not match) and
// the end of the last record they list (the volume's header length when none).
func loadIndex(volPath string, id uint32, volHeader []byte, f volumeFormat, size int64, each func(indexEntry)) (fileEnd, covered int64, err error) {
	covered = f.headerLen()
	// Not through a symlink, and not blocked by a FIFO: the open removes both beforehand, and a
	// read-only open takes them as absent.
	file, err := os.OpenFile(indexPathOf(volPath), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ELOOP) {
		return 0, covered, nil
	}
	if err != nil {
		return 0, covered, err
	}
	defer file.Close()
	if fi, err := file.Stat(); err != nil || !fi.Mode().IsRegular() {
		return 0, covered, err
	}
	r := bufio.NewReaderSize(file, 1<<20)
	hdr := make([]byte, indexHeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, covered, nil // cut short before its header was written: rewritten
	}
	if string(appendIndexHeader(nil, id, volHeader)) != string(hdr) {
		return 0, covered, nil // another volume's, a damaged header, or an unknown format
	}
	fileEnd = indexHeaderLen
	for {
		e, n, err := parseIndexEntry(r, f, covered, size)
		if err != nil {
			return fileEnd, covered, nil // the end, or the first entry not trusted
		}
		each(e)
		fileEnd += int64(n)
		covered = e.off + e.recordLen(f)
	}
}

// openIndexForAppend opens the index file of the volume at volPath for appending after its
// first fileEnd bytes (cutting anything after them), or creates it afresh when fileEnd is 0.
func openIndexForAppend(volPath string, id uint32, volHeader []byte, fileEnd, covered int64) (*volumeIndexFile, error) {
	path := indexPathOf(volPath)
	flag := os.O_RDWR | os.O_CREATE | unix.O_NOFOLLOW | unix.O_NONBLOCK
	if fileEnd == 0 {
		flag |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("index file %s is not a regular file", path)
	}
	if fileEnd == 0 {
		_, err = f.WriteAt(appendIndexHeader(nil, id, volHeader), 0)
		fileEnd = indexHeaderLen
	} else if err = f.Truncate(fileEnd); err == nil {
		// Synced, so that a crash cannot bring back the entries cut here once later ones (never
		// synced) are lost: they could fit a volume that grew again since.
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &volumeIndexFile{f: f, path: path, end: fileEnd, covered: covered}, nil
}

// add appends entries (encoded by appendIndexEntry, for records starting at or past covered and
// ending at end) in one write.
func (x *volumeIndexFile) add(entries []byte, end int64) error {
	if _, err := x.f.WriteAt(entries, x.end); err != nil {
		return err
	}
	x.end += int64(len(entries))
	x.covered = end
	return nil
}

// drop closes and removes the index file: the next open scans the volume and writes a new one.
func (x *volumeIndexFile) drop() {
	x.f.Close()
	os.Remove(x.path)
}
