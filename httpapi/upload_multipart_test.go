package httpapi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"slices"
	"strings"
	"testing"
)

// formOutcome is what a multipart reader made of a body: each part's header, names and bytes
// (read in reads of readLen), then how the walk ended.
type formOutcome struct {
	parts []string
	end   string
}

func (o formOutcome) String() string {
	return strings.Join(o.parts, "\n") + "\nend: " + o.end
}

// outcomeClass reduces an error to what callers act on: none, the closing delimiter, or a failure.
func outcomeClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case err == io.EOF:
		return "EOF"
	default:
		return "error"
	}
}

func headerText(h textproto.MIMEHeader) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q;", k, h[k])
	}
	return b.String()
}

type partLike interface {
	io.Reader
	FormName() string
	FileName() string
}

func readPartBytes(p io.Reader, buf []byte) ([]byte, error) {
	var out []byte
	for range 1 << 20 {
		n, err := p.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
	return out, errors.New("no progress")
}

func describePart(p partLike, h textproto.MIMEHeader, buf []byte) string {
	data, err := readPartBytes(p, buf)
	return fmt.Sprintf("name=%q file=%q header=%s data=%q read=%s", p.FormName(), p.FileName(), headerText(h), data, outcomeClass(err))
}

func stdlibOutcome(body []byte, boundary string, readLen int) formOutcome {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	buf := make([]byte, readLen)
	var o formOutcome
	for range 10000 {
		p, err := mr.NextPart()
		if err != nil {
			o.end = outcomeClass(err)
			return o
		}
		o.parts = append(o.parts, describePart(p, p.Header, buf))
	}
	o.end = "too many parts"
	return o
}

func formReaderOutcome(src io.Reader, boundary string, readLen int) formOutcome {
	fr := newFormReader(src, boundary, nil)
	buf := make([]byte, readLen)
	var o formOutcome
	for range 10000 {
		p, err := fr.NextPart()
		if err != nil {
			o.end = outcomeClass(err)
			return o
		}
		o.parts = append(o.parts, describePart(p, p.Header, buf))
	}
	o.end = "too many parts"
	return o
}

// chunkReader returns at most the next of sizes bytes per Read, cycling through sizes: bodies
// arrive from a socket in arbitrary pieces.
type chunkReader struct {
	r     io.Reader
	sizes []int
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	n := c.sizes[c.i%len(c.sizes)]
	c.i++
	return c.r.Read(p[:min(len(p), n)])
}

// checkFormReaderMatches compares formReader with mime/multipart on one body: the same parts with
// the same headers, names and bytes, and the same ending, for small reads (buffered) and large ones
// (straight from the body), whatever pieces the body arrives in.
func checkFormReaderMatches(t *testing.T, body []byte, boundary string, chunks []int) {
	t.Helper()
	for _, readLen := range []int{1, 7, 4096, directReadMin, 512 << 10} {
		want := stdlibOutcome(body, boundary, readLen)
		for _, src := range []io.Reader{
			bytes.NewReader(body),
			&chunkReader{r: bytes.NewReader(body), sizes: chunks},
		} {
			if got := formReaderOutcome(src, boundary, readLen); got.String() != want.String() {
				t.Fatalf("read length %d, body %q:\nformReader:\n%s\nmime/multipart:\n%s", readLen, body, got, want)
			}
		}
	}
}

func formFixture(t testing.TB, boundary string, parts ...part) []byte {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.SetBoundary(boundary); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.filename != "" {
			w, err = mw.CreateFormFile(p.name, p.filename)
		} else {
			w, err = mw.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, p.body)
	}
	mw.Close()
	return buf.Bytes()
}

func TestFormReaderMatchesMimeMultipart(t *testing.T) {
	const b = "xYz-boundary"
	// Data that keeps almost matching the delimiter, across every read boundary.
	tricky := strings.Repeat("\r\n--xYz-boundar\r\n-\r", 5000) + "\r\n--xYz-boundaryy" + strings.Repeat("z", 70000)
	big := strings.Repeat("0123456789abcdef", 300000) // 4.6 MiB: many direct reads
	cases := map[string][]byte{
		"file and fields": formFixture(t, b, part{name: "name", body: "n"}, part{name: "file", filename: "dir/f.bin", body: big}, part{name: "tags[]", body: "t"}),
		"near misses":     formFixture(t, b, part{name: "file", filename: "f", body: tricky}, part{name: "tags", body: tricky[:100]}),
		"empty parts":     formFixture(t, b, part{name: "file", filename: "f"}, part{name: "tags"}),
		"truncated":       formFixture(t, b, part{name: "file", filename: "f", body: big})[:len(big)/2],
		"truncated at the delimiter": bytes.TrimSuffix(formFixture(t, b, part{name: "file", filename: "f", body: big}),
			[]byte("--"+b+"--\r\n")),
		"bare newlines": []byte("preamble\n--" + b + "\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\n\nabc\n--" + b + "--\n"),
		"padding and epilogue": []byte("--" + b + " \t\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\nv\r\n--" + b +
			"--  \r\nepilogue"),
		"quoted-printable":   []byte("--" + b + "\r\nContent-Disposition: form-data; name=\"tags\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db=\r\nc\r\n--" + b + "--\r\n"),
		"long preamble line": []byte(strings.Repeat("p", 5000) + "\r\n--" + b + "--\r\n"),
		"long header line": []byte("--" + b + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + strings.Repeat("n", 70000) +
			"\"\r\n\r\nx\r\n--" + b + "--\r\n"),
		"header without end": []byte("--" + b + "\r\nContent-Disposition: form-data; name=\"file\""),
		"bad header":         []byte("--" + b + "\r\n Content-Disposition: form-data\r\n\r\nx\r\n--" + b + "--\r\n"),
		"garbage after part": []byte("--" + b + "\r\n\r\nx\r\n--" + b + "\r\n\r\ny\r\n--" + b + "x\r\n"),
		"no delimiter":       []byte(strings.Repeat("garbage ", 20000)),
		"empty":              nil,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			checkFormReaderMatches(t, body, b, []int{1, 3, 4096, 65536, 100000, 13})
		})
	}
}

func FuzzFormReaderMatchesMimeMultipart(f *testing.F) {
	f.Add(formFixture(f, fuzzBoundary, part{name: "file", filename: "f", body: strings.Repeat("\r\n--fuzzbo", 3000)}), uint16(7), uint16(4096))
	f.Add(formFixture(f, fuzzBoundary, part{name: "name", body: "n"}, part{name: "tags", body: "x"}), uint16(1), uint16(60000))
	f.Add([]byte("--"+fuzzBoundary+"\nContent-Disposition: form-data; name=\"file\"\n\nx\n--"+fuzzBoundary+"--"), uint16(2), uint16(3))
	f.Fuzz(func(t *testing.T, body []byte, chunkA, chunkB uint16) {
		if len(body) > 256<<10 {
			t.Skip("bodies this large add nothing the delimiter logic has not seen at 256 KiB")
		}
		checkFormReaderMatches(t, body, fuzzBoundary, []int{int(chunkA) + 1, int(chunkB) + 1})
	})
}

// socketReader hands out at most 64 KiB per Read, like a loopback socket's receive buffer.
type socketReader struct{ r *bytes.Reader }

func (s socketReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 64<<10)]) }

// BenchmarkFormFilePart reads the file part of a 4 MiB upload into 512 KiB buffers (the frames
// of 2+1 with 1 MiB blocks), through mime/multipart over a 64 KiB bufio.Reader (the reader before
// formReader) and through formReader.
func BenchmarkFormFilePart(b *testing.B) {
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i*7919 + i>>13) // '\r' and '-' all over, like any binary file
	}
	body := formFixture(b, fuzzBoundary, part{name: "file", filename: "f", body: string(data)}, part{name: "tags", body: "t"})
	frame := make([]byte, 512<<10)
	readPart := func(b *testing.B, p io.Reader) {
		var n int
		for {
			m, err := io.ReadFull(p, frame)
			n += m
			if err != nil {
				break
			}
		}
		if n != len(data) {
			b.Fatalf("read %d bytes of %d", n, len(data))
		}
	}
	b.Run("mime-multipart", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		br := bufio.NewReaderSize(nil, 64<<10)
		for b.Loop() {
			br.Reset(socketReader{bytes.NewReader(body)})
			p, err := multipart.NewReader(br, fuzzBoundary).NextPart()
			if err != nil {
				b.Fatal(err)
			}
			readPart(b, p)
		}
	})
	b.Run("formReader", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		buf := make([]byte, formBufferLen)
		for b.Loop() {
			p, err := newFormReader(socketReader{bytes.NewReader(body)}, fuzzBoundary, buf).NextPart()
			if err != nil {
				b.Fatal(err)
			}
			readPart(b, p)
		}
	})
}
