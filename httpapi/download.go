package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/prometheus/client_golang/prometheus"
)

// serveFile streams a file's content as the answer to a download, for both front-ends, with
// http.ServeContent (Range, HEAD, conditional requests). disposition is the front-end's
// Content-Disposition. It returns nil once the answer is complete, and the content's error while
// nothing of the body has gone out: the headers prepared here are cleared, so the front-end can
// still answer it in its own format. A failure after the first body byte is logged (without the
// request's secrets) and aborts the connection, so a short body never looks like a success.
func (b *downloadBounds) serveFile(w http.ResponseWriter, r *http.Request, log *slog.Logger, info core.FileInfo, content core.Content, disposition string) error {
	mimetype := info.MimeType
	if mimetype == "" {
		mimetype = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", mimetype) // set, so ServeContent never sniffs (which would read the body early)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", disposition)
	if info.ETag != "" {
		h.Set("ETag", `"`+info.ETag+`"`)
	}
	normalizeRange(r, info.Size)

	src := newContentReader(r.Context(), content, info.Size)
	defer src.Close()
	dw := &deferredHeaderWriter{ResponseWriter: w, stall: b.stall, rc: http.NewResponseController(w)}
	http.ServeContent(dw, r, "", info.UpdatedAt, src)
	switch {
	case src.err == nil:
		dw.flush()
		if dw.refused != 0 {
			// ServeContent's own answer (text/plain, or nothing) is held back: the front-end
			// answers in its format, keeping only what says why (Content-Range: bytes */size).
			contentRange := h.Get("Content-Range")
			clear(h)
			if contentRange != "" {
				h.Set("Content-Range", contentRange)
			}
			return &downloadRefusedError{status: dw.refused}
		}
		return nil
	case !dw.wroteBody:
		clear(h)
		return src.err
	case dw.stalled:
		b.stalled.Inc()
		log.LogAttrs(r.Context(), slog.LevelInfo, "download cut off: the client accepted nothing for the stall timeout",
			slog.String("route", r.Pattern), slog.Duration("stall_timeout", b.stall))
		panic(http.ErrAbortHandler)
	default:
		// A client that hangs up is routine; any other cause (a digest mismatch, lost shards) is
		// a fault the operator must see.
		level := slog.LevelWarn
		if r.Context().Err() != nil {
			level = slog.LevelDebug
		}
		log.LogAttrs(r.Context(), level, "download aborted after the response started",
			slog.String("route", r.Pattern),
			slog.String("error", redact(src.err.Error(), requestSecrets(r)...)))
		panic(http.ErrAbortHandler)
	}
}

// normalizeRange prepares the Range header for http.ServeContent, which both download routes use:
//   - several ranges would make ServeContent read from its own goroutine; a server may ignore Range
//     (RFC 9110 §14.2), so such requests get the whole file;
//   - a Range in another unit than bytes, or without a unit, is ignored (RFC 9110 §14.2 says it
//     must be): the whole file, where ServeContent would answer 416;
//   - a suffix range of length zero ("bytes=-0") is unsatisfiable (RFC 9110 §14.1.2), but
//     ServeContent answers it 206 with an empty, inverted Content-Range. It is rewritten to a range
//     that starts at the end of the file, which ServeContent answers 416 with "bytes */size", as any
//     other unsatisfiable range (If-Range still applies first);
//   - a range whose positions are not 1*DIGIT is unsatisfiable (416 "bytes */size");
//   - on an empty file any range is ignored: 200 with the empty body. ServeContent
//     does so itself for a range from a first-pos (clients send Range with every request), but
//     answered a suffix range 206 "bytes 0--1/0", which no 206 can state: a suffix of non-zero
//     length selects the whole, empty representation (§14.1.1);
//   - a position of more digits than an int64 holds is valid syntax (1*DIGIT) that ServeContent
//     answers 416 "invalid range" without Content-Range: a last-pos that large means to the end
//     (§14.1.1), a suffix that large the whole file (§14.1.2), a first-pos that large lies past
//     the end (416 "bytes */size").
func normalizeRange(r *http.Request, size int64) {
	spec := r.Header.Get("Range")
	if strings.Contains(spec, ",") {
		r.Header.Del("Range")
		return
	}
	unit, ranges, ok := strings.Cut(spec, "=")
	if !ok || strings.TrimSpace(unit) != "bytes" {
		// A range unit the server does not understand must be ignored (RFC 9110 §14.2);
		// ServeContent would answer it 416.
		r.Header.Del("Range")
		return
	}
	first, last, ok := strings.Cut(strings.TrimSpace(ranges), "-")
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	wellFormed := ok && (first != "" || last != "") && (first == "" || allDigits(first)) && (last == "" || allDigits(last))
	if size == 0 {
		r.Header.Del("Range")
		return
	}
	unsatisfiable := "bytes=" + strconv.FormatInt(size, 10) + "-"
	if !wellFormed {
		// Not 1*DIGIT (ServeContent's ParseInt took "+0" and "-+0", and served the latter 206
		// "bytes 0--1/0" on an empty file): unsatisfiable, 416 "bytes */size".
		r.Header.Set("Range", unsatisfiable)
		return
	}
	if first == "" { // suffix-range
		n, err := strconv.ParseInt(last, 10, 64)
		switch {
		case err == nil && n == 0:
			r.Header.Set("Range", unsatisfiable)
		case err != nil || n >= size: // the whole file
			r.Header.Set("Range", "bytes=0-")
		}
		return
	}
	if _, err := strconv.ParseInt(first, 10, 64); err != nil {
		r.Header.Set("Range", unsatisfiable)
		return
	}
	if _, err := strconv.ParseInt(last, 10, 64); last != "" && err != nil {
		r.Header.Set("Range", "bytes="+first+"-")
	}
}

// allDigits reports whether s is 1*DIGIT, the only form RFC 9110 gives a range position.
func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// contentReader adapts core.Content to the io.ReadSeeker that http.ServeContent wants. Seek only
// records the offset. ServeContent copies the body with io.CopyN into deferredHeaderWriter, whose
// ReadFrom recognises the contentReader and runs ReadRange straight into the response on the
// request's goroutine (writeRange). Read is the general io.Reader for any other caller: its first
// call after a Seek starts ReadRange(off, size-off) into a pipe; Close stops that stream and waits
// for it, so no goroutine outlives the request.
type contentReader struct {
	ctx     context.Context
	content core.Content
	size    int64
	off     int64
	stream  *rangeStream
	err     error // the first failure of the content (not io.EOF)
}

// rangeStream is one running ReadRange.
type rangeStream struct {
	pr     *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
}

func newContentReader(ctx context.Context, content core.Content, size int64) *contentReader {
	return &contentReader{ctx: ctx, content: content, size: size}
}

// errSeekOutOfRange reports a Seek before the start of the file.
var errSeekOutOfRange = errors.New("seek before start of file")

func (c *contentReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = c.off + offset
	case io.SeekEnd:
		abs = c.size + offset
	default:
		return 0, fmt.Errorf("seek: invalid whence %d", whence)
	}
	if abs < 0 {
		return 0, errSeekOutOfRange
	}
	if abs != c.off {
		c.stop()
	}
	c.off = abs
	return abs, nil
}

func (c *contentReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.stream == nil {
		if c.off >= c.size {
			return 0, io.EOF
		}
		c.start()
	}
	n, err := c.stream.pr.Read(p)
	c.off += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return n, err
}

// writeRange writes up to n bytes from the current offset to w by running ReadRange on the
// caller's goroutine: no pipe, no goroutine and no intermediate buffer, so the codec's
// chunk-sized writes reach the response whole. A failure is kept in err, as Read keeps it.
func (c *contentReader) writeRange(w io.Writer, n int64) (int64, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.stop()
	n = min(n, c.size-c.off)
	if n <= 0 {
		return 0, nil
	}
	cw := &countingWriter{w: w}
	err := c.content.ReadRange(c.ctx, cw, c.off, n)
	c.off += cw.n
	if err == nil && cw.n != n {
		err = fmt.Errorf("read range: got %d of %d bytes: %w", cw.n, n, io.ErrUnexpectedEOF)
	}
	if err != nil {
		c.err = err
	}
	return cw.n, err
}

// start runs ReadRange for [off, size) into a pipe. A ReadRange that returns early without an error
// would look like a clean EOF, so the writer side turns a short range into io.ErrUnexpectedEOF.
func (c *contentReader) start() {
	ctx, cancel := context.WithCancel(c.ctx)
	pr, pw := io.Pipe()
	s := &rangeStream{pr: pr, cancel: cancel, done: make(chan struct{})}
	off, n := c.off, c.size-c.off
	go func() {
		defer close(s.done)
		cw := &countingWriter{w: pw}
		err := c.content.ReadRange(ctx, cw, off, n)
		if err == nil && cw.n != n {
			err = fmt.Errorf("read range: got %d of %d bytes: %w", cw.n, n, io.ErrUnexpectedEOF)
		}
		pw.CloseWithError(err)
	}()
	c.stream = s
}

// stop ends the running stream, if any, and waits for its goroutine.
func (c *contentReader) stop() {
	if c.stream == nil {
		return
	}
	c.stream.cancel()
	c.stream.pr.CloseWithError(context.Canceled)
	<-c.stream.done
	c.stream = nil
}

// Close releases the stream; it never fails.
func (c *contentReader) Close() error {
	c.stop()
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// downloadRefusedError is a download http.ServeContent refused from the request's headers alone:
// an unsatisfiable Range (416) or a failed If-Match or If-Unmodified-Since (412). Both front-ends
// answer it in their own error format, as every other non-2xx.
type downloadRefusedError struct{ status int }

func (e *downloadRefusedError) Error() string {
	if e.status == http.StatusPreconditionFailed {
		return "a precondition of the request (If-Match, If-Unmodified-Since) does not hold"
	}
	return "the requested range is not satisfiable"
}

// deferredHeaderWriter holds back the status line until the first body byte, so that a content
// failure before any byte can still become a JSON error instead of a committed 200. A 412 or 416
// is never sent: it is kept in refused, and what ServeContent writes with it is dropped.
type deferredHeaderWriter struct {
	http.ResponseWriter
	status    int
	sent      bool
	wroteBody bool
	refused   int

	// stall > 0 moves the connection's write deadline forward before every downloadWriteChunk
	// of the body (rc), so a client that takes nothing for stall fails the write; stalled says it
	// did. Where the connection takes no deadline (a test recorder) writes are unbounded.
	stall       time.Duration
	rc          *http.ResponseController
	noDeadlines bool
	stalled     bool
}

func (d *deferredHeaderWriter) WriteHeader(code int) {
	if !d.sent && d.status == 0 {
		d.status = code
	}
}

func (d *deferredHeaderWriter) Write(p []byte) (int, error) {
	d.flush()
	if d.refused != 0 {
		return len(p), nil
	}
	d.wroteBody = true
	if d.stall <= 0 || d.noDeadlines {
		return d.ResponseWriter.Write(p)
	}
	written := 0
	for written < len(p) {
		chunk := p[written:min(len(p), written+downloadWriteChunk)]
		if err := d.rc.SetWriteDeadline(time.Now().Add(d.stall)); err != nil {
			d.noDeadlines = true
			n, err := d.ResponseWriter.Write(p[written:])
			return written + n, err
		}
		n, err := d.ResponseWriter.Write(chunk)
		written += n
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				d.stalled = true
			}
			return written, err
		}
	}
	return written, nil
}

// downloadWriteChunk is the most a download writes under one deadline: a client must take this
// much per DownloadStallTimeout (64 KiB per 60 s by default, about 1 KiB/s) to keep its download.
const downloadWriteChunk = 64 << 10

// downloadBounds are the per-node limits on downloads, on both APIs.
type downloadBounds struct {
	stall   time.Duration // 0: no deadline
	stalled prometheus.Counter
}

func newDownloadBounds(reg prometheus.Registerer, stall time.Duration) (*downloadBounds, error) {
	b := &downloadBounds{
		stall: stall,
		stalled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_http_downloads_stalled_total",
			Help: "Downloads cut off because the client accepted nothing for the download stall timeout.",
		}),
	}
	if err := reg.Register(b.stalled); err != nil {
		return nil, fmt.Errorf("httpapi: register download metrics: %w", err)
	}
	return b, nil
}

// ReadFrom is where http.ServeContent's io.CopyN lands. When the source is a contentReader
// (behind the io.LimitedReader CopyN wraps it in), the content writes itself into d
// (contentReader.writeRange); any other source is copied.
func (d *deferredHeaderWriter) ReadFrom(src io.Reader) (int64, error) {
	if lr, ok := src.(*io.LimitedReader); ok {
		if c, ok := lr.R.(*contentReader); ok {
			n, err := c.writeRange(d, lr.N)
			lr.N -= n
			return n, err
		}
	}
	return io.Copy(writerOnly{d}, src) // writerOnly: io.Copy must not come back to ReadFrom
}

// writerOnly hides every method of a writer but Write.
type writerOnly struct{ io.Writer }

// flush sends the held-back status, if it has not gone out yet.
func (d *deferredHeaderWriter) flush() {
	if d.sent {
		return
	}
	d.sent = true
	if d.status == 0 {
		d.status = http.StatusOK
	}
	if d.status == http.StatusPreconditionFailed || d.status == http.StatusRequestedRangeNotSatisfiable {
		d.refused = d.status
		return
	}
	d.ResponseWriter.WriteHeader(d.status)
}

func (d *deferredHeaderWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
