package httpapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/core"
)

// uploadBounds are the per-node limits that every upload passes through, on /files/v1 and /api/v2
// alike: a cap on concurrent uploads, a refusal of declared bodies over the size limit before a
// byte is read, and an idle deadline on the body. A hostile or broken client can then hold at most
// `slots` uploads, each for at most `idle` between two bytes.
type uploadBounds struct {
	slots    chan struct{} // nil: no cap
	idle     time.Duration // 0: no idle deadline
	inFlight prometheus.Gauge
	refused  *prometheus.CounterVec // by reason: busy, declared_too_large, idle
	// readers pools the bodies' read buffers (uploadReadBuffer bytes each).
	readers sync.Pool
}

// uploadReadBuffer is the read buffer under the multipart reader. mime/multipart reads through
// its own 4 KiB buffer; without a larger one beneath it, every 4 KiB of a body cost a read
// syscall, the idle deadline's update and the body limit's bookkeeping (27 % of a node's CPU
// on PUT 4 MiB). With it, one read takes up to 64 KiB from the socket.
const uploadReadBuffer = 64 << 10

func newUploadBounds(reg prometheus.Registerer, maxConcurrent int, idle time.Duration) (*uploadBounds, error) {
	b := &uploadBounds{
		idle: idle,
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cairn_http_uploads_in_flight",
			Help: "Uploads this node is receiving now.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_http_uploads_refused_total",
			Help: "Uploads refused or cut off by a per-node bound, by reason (busy, declared_too_large, idle).",
		}, []string{"reason"}),
	}
	if maxConcurrent > 0 {
		b.slots = make(chan struct{}, maxConcurrent)
	}
	for _, c := range []prometheus.Collector{b.inFlight, b.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("httpapi: register upload metrics: %w", err)
		}
	}
	return b, nil
}

// acquire takes an upload slot, or fails at once with core.ErrUnavailable (503 with Retry-After in
// either API's format) when every slot is taken: waiting would hold the client's connection and
// its memory anyway, and a load balancer or the client's retry can pick a node with room.
func (b *uploadBounds) acquire() (release func(), err error) {
	if b.slots != nil {
		select {
		case b.slots <- struct{}{}:
		default:
			b.refused.WithLabelValues("busy").Inc()
			return nil, fmt.Errorf("%w: %d uploads in progress on this node", core.ErrUnavailable, cap(b.slots))
		}
	}
	b.inFlight.Inc()
	return func() {
		b.inFlight.Dec()
		if b.slots != nil {
			<-b.slots
		}
	}, nil
}

// body returns the request body bounded to limit bytes and to the idle deadline, read through a
// pooled buffer that done returns (call it once nothing reads the body any more). A declared
// Content-Length over limit is refused before any byte is read (core.ErrFileTooLarge: 2610 on
// /files/v1); chunked bodies, which declare nothing, meet the same limit while streaming.
func (b *uploadBounds) body(w http.ResponseWriter, r *http.Request, limit int64) (body *bufio.Reader, done func(), err error) {
	if r.ContentLength > limit {
		b.refused.WithLabelValues("declared_too_large").Inc()
		// The body stays unread; the server closes the connection rather than drain it.
		return nil, nil, fmt.Errorf("declared Content-Length %d over the limit of %d: %w", r.ContentLength, limit, core.ErrFileTooLarge)
	}
	var src io.Reader = r.Body
	if ib, ok := r.Body.(*idleBody); ok {
		ib.refused = b.refused // the middleware's deadline, counted as an upload's
	} else if b.idle > 0 {
		src = &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: b.idle, refused: b.refused}
	}
	src = http.MaxBytesReader(w, readCloser{src, r.Body}, limit)
	br, ok := b.readers.Get().(*bufio.Reader)
	if ok {
		br.Reset(src)
	} else {
		br = bufio.NewReaderSize(src, uploadReadBuffer)
	}
	return br, func() {
		br.Reset(nil) // drop the request's readers, so the pool pins nothing of it
		b.readers.Put(br)
	}, nil
}

// readCloser pairs a wrapped reader with the body's Close, as MaxBytesReader wants a ReadCloser.
type readCloser struct {
	io.Reader
	io.Closer
}

// idleReader moves the connection's read deadline forward before every read, so a body that sends
// nothing for idle fails with os.ErrDeadlineExceeded (reported as errBodyStalled), while a slow but
// steady one is never cut off. Where the connection cannot take a deadline (HTTP/2 without support,
// a test recorder) the reader passes through unbounded.
type idleReader struct {
	r       io.Reader
	rc      *http.ResponseController
	idle    time.Duration
	refused *prometheus.CounterVec // nil: stalls are not counted (bodies other than uploads)
	off     bool                   // SetReadDeadline is not supported here
}

// idleBody is the request body the middleware gives every route: the body behind an idleReader.
type idleBody struct {
	idleReader
	io.Closer
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if !ir.off {
		if err := ir.rc.SetReadDeadline(time.Now().Add(ir.idle)); err != nil {
			ir.off = true
		}
	}
	n, err := ir.r.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if ir.refused != nil {
			ir.refused.WithLabelValues("idle").Inc()
		}
		return n, fmt.Errorf("%w (no data for %s)", errStalled, ir.idle)
	}
	return n, err
}

// errStalled marks a body that sent nothing for the idle deadline; bodyError maps it.
var errStalled = errors.New("the request body stalled")

// tooLargeMessage states the limit an upload went over, for both front-ends: core reports it with
// a core.FileTooLargeError, the body limit (the file limit plus the multipart overhead) with an
// http.MaxBytesError.
func tooLargeMessage(err error) string {
	var (
		fromCore *core.FileTooLargeError
		fromBody *http.MaxBytesError
		limit    int64
	)
	switch {
	case errors.As(err, &fromCore):
		limit = fromCore.Limit
	case errors.As(err, &fromBody):
		limit = fromBody.Limit - uploadOverhead
	}
	if limit <= 0 {
		return "the file exceeds the maximum file size"
	}
	return fmt.Sprintf("the file exceeds the maximum file size of %s (%d bytes)", sizeText(limit), limit)
}

// sizeText renders n in the largest binary unit that divides it exactly: 8 MiB, 1536 KiB, 1000 B.
func sizeText(n int64) string {
	for _, u := range []struct {
		unit string
		mult int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.mult == 0 {
			return fmt.Sprintf("%d %s", n/u.mult, u.unit)
		}
	}
	return fmt.Sprintf("%d B", n)
}
