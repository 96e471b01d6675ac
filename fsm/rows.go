package fsm

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-dev/cairn/erasure"
)

// File and token rows, the bulk of the store, are kept in a compact binary form: JSON's field
// names, RFC 3339 times and hex ETags made them 480 and 237 bytes for a typical upload (DESIGN.md,
// "Numbers"). The form is positional: a version byte, then every field in declaration order.
// Its rules:
//   - strings and byte strings: uvarint length, bytes;
//   - integers: varint;
//   - times: 0 for the zero time, else 1, varint Unix seconds, varint nanoseconds, varint zone
//     offset in seconds (a time decodes in UTC or a fixed zone of that offset, which is what
//     decoding its JSON gives, so snapshots stay byte-identical);
//   - slices: uvarint 0 for nil, else 1 + length, then the elements (nil and empty differ in
//     JSON where the field has no omitempty);
//   - the ETag: 1 and 32 raw bytes when it is a lower-case hex SHA-256, else 0 and the string.
//
// A new field means a new row version here, with the old version's decoder kept (rowcodec_test
// fails when File or Token gain a field the codec does not know).
const (
	fileRowV1  = 1
	tokenRowV1 = 1
)

type rowWriter struct{ b []byte }

func (w *rowWriter) str(s string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *rowWriter) int(v int64) { w.b = binary.AppendVarint(w.b, v) }

func (w *rowWriter) time(t time.Time) {
	if t.IsZero() {
		w.b = append(w.b, 0)
		return
	}
	_, offset := t.Zone()
	w.b = append(w.b, 1)
	w.int(t.Unix())
	w.int(int64(t.Nanosecond()))
	w.int(int64(offset))
}

// count writes a slice header: 0 for nil, 1+n otherwise.
func (w *rowWriter) count(isNil bool, n int) {
	if isNil {
		w.b = append(w.b, 0)
		return
	}
	w.b = binary.AppendUvarint(w.b, uint64(n)+1)
}

func (w *rowWriter) strs(ss []string) {
	w.count(ss == nil, len(ss))
	for _, s := range ss {
		w.str(s)
	}
}

type rowReader struct {
	b   []byte
	err error
}

func (r *rowReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("row: bad %s", what)
	}
}

func (r *rowReader) uvarint(what string) uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rowReader) int(what string) int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rowReader) bytes(what string, n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.fail(what)
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *rowReader) str(what string) string { return string(r.bytes(what, r.uvarint(what))) }

func (r *rowReader) byte(what string) byte {
	b := r.bytes(what, 1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *rowReader) time(what string) time.Time {
	if r.byte(what) == 0 {
		return time.Time{}
	}
	sec, nsec, offset := r.int(what), r.int(what), r.int(what)
	t := time.Unix(sec, nsec)
	if offset == 0 {
		return t.UTC()
	}
	return t.In(time.FixedZone("", int(offset)))
}

// count reads a slice header: nil, or a length bounded by the bytes left (each element takes at
// least one byte), so a damaged row cannot ask for a huge allocation.
func (r *rowReader) count(what string) (n int, isNil bool) {
	c := r.uvarint(what)
	if c == 0 {
		return 0, true
	}
	if c-1 > uint64(len(r.b)) {
		r.fail(what)
		r.b = nil
		return 0, true
	}
	return int(c - 1), false
}

func (r *rowReader) strs(what string) []string {
	n, isNil := r.count(what)
	if isNil {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = r.str(what)
	}
	return out
}

func (r *rowReader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("row: trailing bytes")
	}
	return r.err
}

func encodeFile(f *File) []byte {
	w := rowWriter{b: make([]byte, 0, 256)}
	w.b = append(w.b, fileRowV1)
	w.str(f.ID)
	w.str(f.Name)
	w.str(f.MimeType)
	w.str(f.CreatorID)
	w.str(f.CreatedBy)
	w.int(f.Size)
	w.strs(f.Tags)
	w.str(f.Title)
	w.str(f.Description)
	w.time(f.ExpiresAt)
	w.time(f.CreatedAt)
	w.time(f.UpdatedAt)
	if isSHA256Hex(f.ETag) {
		raw, _ := hex.DecodeString(f.ETag)
		w.b = append(append(w.b, 1), raw...)
	} else {
		w.b = append(w.b, 0)
		w.str(f.ETag)
	}
	l := f.Layout
	w.int(int64(l.Geometry.Data))
	w.int(int64(l.Geometry.Parity))
	w.int(int64(l.BlockSize))
	w.count(l.Segments == nil, len(l.Segments))
	for _, s := range l.Segments {
		w.int(s.Offset)
		w.int(s.Size)
		w.strs(s.Nodes)
	}
	return w.b
}

func decodeFile(b []byte) (*File, error) {
	r := rowReader{b: b}
	if v := r.byte("version"); v != fileRowV1 {
		return nil, fmt.Errorf("file row: unknown version %d", v)
	}
	f := &File{
		ID: r.str("id"), Name: r.str("name"), MimeType: r.str("mimeType"), CreatorID: r.str("creatorId"),
		CreatedBy: r.str("createdBy"), Size: r.int("size"), Tags: r.strs("tags"), Title: r.str("title"),
		Description: r.str("description"), ExpiresAt: r.time("expiresAt"), CreatedAt: r.time("createdAt"),
		UpdatedAt: r.time("updatedAt"),
	}
	if r.byte("etag") == 1 {
		f.ETag = hex.EncodeToString(r.bytes("etag", 32))
	} else {
		f.ETag = r.str("etag")
	}
	f.Layout.Geometry = erasure.Geometry{Data: int(r.int("geometry")), Parity: int(r.int("geometry"))}
	f.Layout.BlockSize = int(r.int("blockSize"))
	if n, isNil := r.count("segments"); !isNil {
		f.Layout.Segments = make([]Segment, n)
		for i := range f.Layout.Segments {
			f.Layout.Segments[i] = Segment{Offset: r.int("offset"), Size: r.int("size"), Nodes: r.strs("nodes")}
		}
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return f, nil
}

func encodeToken(t *Token) []byte {
	w := rowWriter{b: make([]byte, 0, 160)}
	w.b = append(w.b, tokenRowV1)
	w.str(t.ID)
	w.str(t.Secret)
	w.str(t.FileID)
	w.str(string(t.Access))
	w.str(t.CreatorID)
	w.time(t.CreatedAt)
	w.time(t.ExpiresAt)
	w.str(t.CreatedBy)
	return w.b
}

func decodeToken(b []byte) (*Token, error) {
	r := rowReader{b: b}
	if v := r.byte("version"); v != tokenRowV1 {
		return nil, fmt.Errorf("token row: unknown version %d", v)
	}
	t := &Token{
		ID: r.str("id"), Secret: r.str("secret"), FileID: r.str("fileId"), Access: AccessLevel(r.str("access")),
		CreatorID: r.str("creatorId"), CreatedAt: r.time("createdAt"), ExpiresAt: r.time("expiresAt"),
		CreatedBy: r.str("createdBy"),
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return t, nil
}

// requestRowV1 is the first version of the binary de-duplication row: id, code, index, time.
const requestRowV1 = 1

func encodeRequest(r *requestRow) []byte {
	w := rowWriter{b: make([]byte, 0, 64)}
	w.b = append(w.b, requestRowV1)
	w.str(r.ID)
	w.str(r.Code)
	w.b = binary.AppendUvarint(w.b, r.Index)
	w.time(r.Time)
	return w.b
}

func decodeRequest(b []byte) (*requestRow, error) {
	r := rowReader{b: b}
	if v := r.byte("version"); v != requestRowV1 {
		return nil, fmt.Errorf("request row: unknown version %d", v)
	}
	row := &requestRow{ID: r.str("id"), Code: r.str("code"), Index: r.uvarint("index"), Time: r.time("time")}
	if err := r.done(); err != nil {
		return nil, err
	}
	return row, nil
}
