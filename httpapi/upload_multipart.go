package httpapi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"path/filepath"
	"strings"
)

// formReader reads a multipart/form-data body part by part, as mime/multipart's Reader does,
// with one difference that matters for speed: a large Read of a part (the file part's, from
// core's block reader) takes the bytes from the socket straight into the caller's buffer and
// finds the boundary there. mime/multipart stages everything through its own 4 KiB bufio.Reader,
// so each byte of a 4 MiB upload was copied twice more (body buffer -> 4 KiB buffer -> frame) in
// 1,024 rounds of Peek and scan per upload: 7-8 % of a node's CPU on PUT 4 MiB (httpapi/DESIGN.md).
//
// Everything else follows mime/multipart (Go 1.26) line for line, so that a body means the same
// to both: the boundary scan (scanUntilBoundary, matchAfterPrefix), the preamble and delimiter
// lines (at most multipartLineLen bytes, like its 4 KiB buffer), transport padding, a first
// delimiter line ending in a bare "\n", quoted-printable parts, FormName and FileName (the base
// name only). Part headers are parsed by net/textproto. FuzzFormReaderMatchesMimeMultipart holds
// the two to the same parts, bytes and failures. A read error of the body is kept (wrapped) so
// bodyError still tells a body over its limit or stalled from a malformed one.
type formReader struct {
	src        io.Reader
	err        error  // the body's first error; it is never read again after one (a sticky error)
	emptyReads int    // reads in a row that returned nothing and no error
	buf        []byte // staging buffer: buf[r:w] is read and not yet consumed
	r, w       int

	cur       *formPart
	partsRead int
	hdr       []byte        // the current part's header block, reused
	hdrReader *bufio.Reader // parses hdr, reused

	nl               []byte // "\r\n" or "\n" (set after seeing the first boundary line)
	nlDashBoundary   []byte // nl + "--boundary"
	dashBoundaryDash []byte // "--boundary--"
	dashBoundary     []byte // "--boundary"
}

const (
	// formBufferLen is the staging buffer: headers, text parts and the boundary's neighbourhood
	// go through it, and it bounds one direct read (what follows the boundary in that read must
	// fit back into it).
	formBufferLen = 64 << 10
	// multipartLineLen is the longest preamble or delimiter line, as in mime/multipart (whose
	// buffer is 4 KiB).
	multipartLineLen = 4096
	// maxPartHeaderBytes bounds one part's header block, as mime/multipart bounds it (10 MiB).
	maxPartHeaderBytes = 10 << 20
	// maxPartHeaders bounds the header lines of one part, as mime/multipart does.
	maxPartHeaders = 10000
	// directReadMin is the smallest Read of a part that goes straight to the body: below it, the
	// staging buffer saves syscalls.
	directReadMin = 16 << 10
)

// errPartHeaderTooLarge is a part header over maxPartHeaderBytes or maxPartHeaders.
var errPartHeaderTooLarge = errors.New("multipart: message too large")

// newFormReader reads the form in src, delimited by boundary, through buf (formBufferLen bytes
// when nil).
func newFormReader(src io.Reader, boundary string, buf []byte) *formReader {
	if buf == nil {
		buf = make([]byte, formBufferLen)
	}
	fr := &formReader{src: src, buf: buf[:cap(buf)]}
	fr.setBoundary(boundary)
	return fr
}

func (fr *formReader) setBoundary(boundary string) {
	b := []byte("\r\n--" + boundary + "--")
	fr.nl = b[:2]
	fr.nlDashBoundary = b[:len(b)-2]
	fr.dashBoundaryDash = b[2:]
	fr.dashBoundary = b[2 : len(b)-2]
}

// empty reports whether the body ended before its first byte; it reads at most one buffer.
func (fr *formReader) empty() bool {
	return fr.w == fr.r && fr.fill() != nil && fr.w == fr.r && errors.Is(fr.err, io.EOF)
}

// fill reads more of the body into the buffer, after what is buffered (slid to the front, as
// bufio does); it returns the body's error when it read nothing, bufio.ErrBufferFull when the
// buffer is full of unconsumed bytes.
func (fr *formReader) fill() error {
	if fr.r > 0 {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	if fr.w == len(fr.buf) {
		return bufio.ErrBufferFull
	}
	for {
		var n int
		n, fr.err = fr.read(fr.buf[fr.w:])
		fr.w += n
		if n > 0 {
			return nil
		}
		if fr.err != nil {
			return fr.err
		}
	}
}

// read reads the body once, the sticky error aside. A body that keeps returning nothing and no
// error is broken (io.ErrNoProgress, as bufio says).
func (fr *formReader) read(p []byte) (int, error) {
	if fr.err != nil {
		return 0, fr.err
	}
	n, err := fr.src.Read(p)
	if n < 0 || n > len(p) {
		return 0, errors.New("multipart: invalid read count")
	}
	if n == 0 && err == nil {
		if fr.emptyReads++; fr.emptyReads >= 100 {
			return 0, io.ErrNoProgress
		}
	} else {
		fr.emptyReads = 0
	}
	return n, err
}

// readSlice returns the next line, "\n" included, as bufio.Reader.ReadSlice does over a
// multipartLineLen buffer: bufio.ErrBufferFull for a longer line, the body's error (with what it
// read) when the body ends first. The bytes are valid until the next read.
func (fr *formReader) readSlice() ([]byte, error) {
	for {
		avail := fr.buf[fr.r:min(fr.w, fr.r+multipartLineLen)]
		if i := bytes.IndexByte(avail, '\n'); i >= 0 {
			fr.r += i + 1
			return avail[:i+1], nil
		}
		if len(avail) == multipartLineLen {
			fr.r += len(avail)
			return avail, bufio.ErrBufferFull
		}
		if err := fr.fill(); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			line := fr.buf[fr.r:fr.w]
			fr.r = fr.w
			return line, err
		}
	}
}

// NextPart returns the next part, or io.EOF after the closing delimiter. The part before it is
// skipped.
func (fr *formReader) NextPart() (*formPart, error) {
	if fr.cur != nil {
		fr.cur.discard()
	}
	if string(fr.dashBoundary) == "--" {
		return nil, fmt.Errorf("multipart: boundary is empty")
	}
	expectNewPart := false
	for {
		line, err := fr.readSlice()
		if errors.Is(err, io.EOF) && fr.isFinalBoundary(line) {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: NextPart: %w", err)
		}
		if fr.isBoundaryDelimiterLine(line) {
			fr.partsRead++
			p, err := fr.newPart()
			if err != nil {
				return nil, err
			}
			fr.cur = p
			return p, nil
		}
		if fr.isFinalBoundary(line) {
			return nil, io.EOF // a closing delimiter: the rest (the epilogue) is ignored
		}
		if expectNewPart {
			return nil, fmt.Errorf("multipart: expecting a new Part; got line %q", line)
		}
		if fr.partsRead == 0 {
			continue // the preamble
		}
		if bytes.Equal(line, fr.nl) {
			// Consume the "\n" or "\r\n" between a part's body and the next delimiter.
			expectNewPart = true
			continue
		}
		return nil, fmt.Errorf("multipart: unexpected line in Next(): %q", line)
	}
}

func (fr *formReader) isFinalBoundary(line []byte) bool {
	if !bytes.HasPrefix(line, fr.dashBoundaryDash) {
		return false
	}
	rest := skipLWSPChar(line[len(fr.dashBoundaryDash):])
	return len(rest) == 0 || bytes.Equal(rest, fr.nl)
}

func (fr *formReader) isBoundaryDelimiterLine(line []byte) bool {
	if !bytes.HasPrefix(line, fr.dashBoundary) {
		return false
	}
	rest := skipLWSPChar(line[len(fr.dashBoundary):])
	// The first delimiter line decides whether lines end in "\r\n" or a bare "\n" (a non-standard
	// body, accepted as mime/multipart accepts it).
	if fr.partsRead == 0 && len(rest) == 1 && rest[0] == '\n' {
		fr.nl = fr.nl[1:]
		fr.nlDashBoundary = fr.nlDashBoundary[1:]
	}
	return bytes.Equal(rest, fr.nl)
}

// skipLWSPChar drops leading spaces and tabs (transport padding).
func skipLWSPChar(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// newPart reads a part's header block (up to its empty line) and parses it with net/textproto.
// When the body ends or fails inside the block, textproto meets the same error at the same byte
// as it would in mime/multipart, and it is returned as is: a body that ends in a part's header is
// io.EOF there, a clean end of the form (the form reader then finds the file part missing).
func (fr *formReader) newPart() (*formPart, error) {
	fr.hdr = fr.hdr[:0]
	var bodyErr error
	for lines := 0; ; {
		i := bytes.IndexByte(fr.buf[fr.r:fr.w], '\n')
		end := fr.w
		if i >= 0 {
			end = fr.r + i + 1
		}
		if len(fr.hdr)+end-fr.r > maxPartHeaderBytes {
			return nil, errPartHeaderTooLarge
		}
		fr.hdr = append(fr.hdr, fr.buf[fr.r:end]...)
		fr.r = end
		if i < 0 {
			if bodyErr = fr.fill(); bodyErr != nil {
				break
			}
			continue
		}
		if lines++; lines > maxPartHeaders+1 {
			return nil, errPartHeaderTooLarge
		}
		// A line just ended; an empty one ("\n" or "\r\n") ends the block.
		if n := len(fr.hdr); (n == 1 || fr.hdr[n-2] == '\n') ||
			(n >= 2 && fr.hdr[n-2] == '\r' && (n == 2 || fr.hdr[n-3] == '\n')) {
			break
		}
	}
	if fr.hdrReader == nil {
		fr.hdrReader = bufio.NewReader(nil)
	}
	var src io.Reader = bytes.NewReader(fr.hdr)
	if bodyErr != nil {
		src = io.MultiReader(src, errorReader{bodyErr})
	}
	fr.hdrReader.Reset(src)
	header, err := textproto.NewReader(fr.hdrReader).ReadMIMEHeader()
	fr.hdrReader.Reset(nil)
	if err != nil {
		return nil, err
	}
	p := &formPart{Header: header, fr: fr}
	p.r = partReader{p}
	const cte = "Content-Transfer-Encoding"
	if strings.EqualFold(p.Header.Get(cte), "quoted-printable") {
		p.Header.Del(cte)
		p.r = quotedprintable.NewReader(p.r)
	}
	return p, nil
}

// errorReader fails every Read with err.
type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

// formPart is one part of a form: its header, and its body through Read.
type formPart struct {
	Header textproto.MIMEHeader

	fr                *formReader
	r                 io.Reader // partReader, or a quoted-printable decoder over it
	disposition       string
	dispositionParams map[string]string

	n       int   // data bytes known to wait in fr.buf[fr.r:]
	total   int64 // data bytes read so far
	err     error // the error once n is 0
	readErr error // the body's error, as seen by this part
}

// FormName is the name parameter of a form-data Content-Disposition, else "".
func (p *formPart) FormName() string {
	p.parseContentDisposition()
	if p.disposition != "form-data" {
		return ""
	}
	return p.dispositionParams["name"]
}

// FileName is the base name of the Content-Disposition's filename (RFC 7578 4.2: never a path).
func (p *formPart) FileName() string {
	p.parseContentDisposition()
	filename := p.dispositionParams["filename"]
	if filename == "" {
		return ""
	}
	return filepath.Base(filename)
}

func (p *formPart) parseContentDisposition() {
	if p.dispositionParams != nil {
		return
	}
	var err error
	p.disposition, p.dispositionParams, err = mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		p.dispositionParams = map[string]string{}
	}
}

// Read reads the part's (decoded) body.
func (p *formPart) Read(d []byte) (int, error) { return p.r.Read(d) }

// discard skips what is left of the part, without copying it out of the buffer.
func (p *formPart) discard() {
	for {
		if p.n > 0 {
			p.fr.r += p.n
			p.total += int64(p.n)
			p.n = 0
		}
		if p.err != nil {
			return
		}
		p.scan(nil)
	}
}

// partReader reads a part's raw body.
type partReader struct{ p *formPart }

func (pr partReader) Read(d []byte) (int, error) {
	p := pr.p
	for p.n == 0 && p.err == nil {
		if n, ok := p.scan(d); ok && (n > 0 || p.err != nil) {
			return n, p.err
		}
	}
	if p.n == 0 {
		return 0, p.err
	}
	n := copy(d, p.fr.buf[p.fr.r:p.fr.r+min(len(d), p.n)])
	p.fr.r += n
	p.total += int64(n)
	p.n -= n
	if p.n == 0 {
		return n, p.err
	}
	return n, nil
}

// scan finds out how many buffered bytes belong to the part (p.n) and what ends it (p.err),
// reading more of the body when the buffer cannot tell yet. When d is a large read and the
// buffer holds no more than a possible beginning of the delimiter, the body is read straight
// into d and scanned there: ok says d[:n] is the part's data read that way (what followed the
// part's data in that read went back to the buffer).
func (p *formPart) scan(d []byte) (n int, ok bool) {
	fr := p.fr
	p.n, p.err = scanUntilBoundary(fr.buf[fr.r:fr.w], fr.dashBoundary, fr.nlDashBoundary, p.total, p.readErr)
	if p.n != 0 || p.err != nil {
		return 0, false
	}
	pending := fr.w - fr.r
	if p.readErr == nil && fr.err == nil && len(d) >= directReadMin && pending < min(len(d), len(fr.buf))/2 {
		return p.readDirect(d), true
	}
	p.readErr = fr.fill()
	if errors.Is(p.readErr, io.EOF) {
		p.readErr = io.ErrUnexpectedEOF
	}
	return 0, false
}

// readDirect reads the body into d, after the few buffered bytes, scans it for the delimiter and
// puts what is not the part's data back into the (then empty) buffer. One read takes at most
// len(fr.buf) bytes, so that what follows the delimiter always fits back.
func (p *formPart) readDirect(d []byte) int {
	fr := p.fr
	k := copy(d, fr.buf[fr.r:fr.w])
	fr.r, fr.w = 0, 0
	m, err := fr.read(d[k:min(len(d), len(fr.buf))])
	fr.err = err
	if err != nil {
		p.readErr = err
		if errors.Is(err, io.EOF) {
			p.readErr = io.ErrUnexpectedEOF
		}
	}
	got := d[:k+m]
	n, perr := scanUntilBoundary(got, fr.dashBoundary, fr.nlDashBoundary, p.total, p.readErr)
	fr.w = copy(fr.buf, got[n:])
	p.total += int64(n)
	p.err = perr
	return n
}

// scanUntilBoundary scans buf to identify how much of it can be safely returned as part of the
// Part body: mime/multipart's, unchanged. dashBoundary is "--boundary". nlDashBoundary is
// "\r\n--boundary" or "\n--boundary", depending on what mode we are in. The comments in
// mime/multipart explain the handling of the boundary. total is the number of bytes read out so
// far. If readErr is non-nil, it's the error to return after the data.
func scanUntilBoundary(buf, dashBoundary, nlDashBoundary []byte, total int64, readErr error) (int, error) {
	if total == 0 {
		// At the beginning of the body, allow dashBoundary.
		if bytes.HasPrefix(buf, dashBoundary) {
			switch matchAfterPrefix(buf, dashBoundary, readErr) {
			case -1:
				return len(dashBoundary), nil
			case 0:
				return 0, nil
			case +1:
				return 0, io.EOF
			}
		}
		if bytes.HasPrefix(dashBoundary, buf) {
			return 0, readErr
		}
	}
	// Search for "\n--boundary".
	if i := bytes.Index(buf, nlDashBoundary); i >= 0 {
		switch matchAfterPrefix(buf[i:], nlDashBoundary, readErr) {
		case -1:
			return i + len(nlDashBoundary), nil
		case 0:
			return i, nil
		case +1:
			return i, io.EOF
		}
	}
	if bytes.HasPrefix(nlDashBoundary, buf) {
		return 0, readErr
	}
	// Otherwise, anything up to the final \n is not part of the boundary and so must be part of
	// the body. Also, if the section from the final \n onward is not a prefix of the boundary, it
	// too must be part of the body.
	i := bytes.LastIndexByte(buf, nlDashBoundary[0])
	if i >= 0 && bytes.HasPrefix(nlDashBoundary, buf[i:]) {
		return i, nil
	}
	return len(buf), readErr
}

// matchAfterPrefix checks whether buf should be considered to match the boundary (mime/multipart's,
// unchanged): -1 not a boundary, +1 a boundary, 0 not enough bytes to tell (only when readErr is
// nil).
func matchAfterPrefix(buf, prefix []byte, readErr error) int {
	if len(buf) == len(prefix) {
		if readErr != nil {
			return +1
		}
		return 0
	}
	c := buf[len(prefix)]
	if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
		return +1
	}
	// Try to detect boundaryDash.
	if c == '-' {
		if len(buf) == len(prefix)+1 {
			if readErr != nil {
				// Prefix + "-" does not match.
				return -1
			}
			return 0
		}
		if buf[len(prefix)+1] == '-' {
			return +1
		}
	}
	return -1
}
