package httpapi

import (
	"errors"
	"fmt"
	"github.com/cairn-dev/cairn/core"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// httpMetrics are the per-route request metrics. Labels are the route pattern, never the raw path:
// paths carry tokens (secrets) and would make cardinality unbounded.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg *prometheus.Registry) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_http_requests_total",
			Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cairn_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("httpapi: register metrics: %w", err)
		}
	}
	// The runtime collectors describe the process, not this package; another component of the same
	// node may have registered them first, which is fine.
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			return nil, fmt.Errorf("httpapi: register runtime collectors: %w", err)
		}
	}
	return m, nil
}

// methodLabel bounds the method label: clients can send any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// middleware is what wraps every route: panic recovery, metrics and one debug log line.
type middleware struct {
	log     *slog.Logger
	metrics *httpMetrics
	// bodyIdle is the idle deadline of every request body (Config.UploadIdleTimeout; 0: none).
	// The server has no ReadTimeout (an upload may take long), so without it a client that
	// declares a body and never sends it held a handler and a connection for ever, on any route
	// that reads a body, with or without credentials.
	bodyIdle time.Duration
}

// serverError writes a front-end's own 500 answer: each API passes its writer to wrap, so one
// panic handler serves both and each answers in its own format.
type serverError func(w http.ResponseWriter)

// wrap instruments h under the route label and recovers its panics, answering them with
// answer500. Recovery sits inside the instrumentation so that a recovered panic is counted as the
// 500 it became.
func (m *middleware) wrap(label string, h http.Handler, answer500 serverError) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if m.bodyIdle > 0 && r.Body != nil && r.Body != http.NoBody {
			// On a shallow copy: the server inspects its own request's Body after the handler to
			// decide between draining an unread body and closing the connection, and would
			// drain (without a deadline) a body it no longer recognises.
			r = r.WithContext(r.Context())
			r.Body = &idleBody{idleReader: idleReader{r: r.Body, rc: http.NewResponseController(w), idle: m.bodyIdle}, Closer: r.Body}
		}
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			p := recover()
			if p != nil {
				p = m.recovered(rec, r, label, p, answer500)
			}
			status := rec.status
			if status == 0 { // a handler that wrote nothing answered 200
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			method := methodLabel(r.Method)
			m.metrics.requests.WithLabelValues(label, method, strconv.Itoa(status)).Inc()
			m.metrics.duration.WithLabelValues(label, method).Observe(elapsed.Seconds())
			m.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
				slog.String("route", label), slog.String("method", method),
				slog.Int("status", status), slog.Duration("duration", elapsed))
			if p != nil {
				panic(p)
			}
		}()
		// One request, one read index: the use cases it calls share it (see core.WithReadScope).
		h.ServeHTTP(rec, r.WithContext(core.WithReadScope(r.Context())))
	})
}

// recovered turns a handler panic into a 500, or, when the response has already started, into an
// aborted connection so that the client never mistakes a truncated body for success. It returns
// what must be re-panicked (nil when the panic was handled). http.ErrAbortHandler is the deliberate
// way to abort and propagates untouched.
func (m *middleware) recovered(rec *statusRecorder, r *http.Request, label string, p any, answer500 serverError) any {
	if p == http.ErrAbortHandler {
		return p
	}
	m.log.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
		slog.String("route", label), slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
	if rec.status != 0 {
		return http.ErrAbortHandler
	}
	clear(rec.Header()) // whatever the handler had prepared belongs to the answer that never went out
	answer500(rec)
	return nil
}

// statusRecorder remembers the status a handler sent; Unwrap keeps http.ResponseController working.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 && code >= 200 { // 1xx informational headers are not the final status
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// failureLevel is the log level of a failed request: an unexpected server error is an error; a
// request the cluster could not serve (503, counted in the metrics) or whose client went away is
// routine and logged at debug, so that a partition or a load test does not flood the log.
func failureLevel(r *http.Request, status int) slog.Level {
	if r.Context().Err() != nil || status == http.StatusServiceUnavailable {
		return slog.LevelDebug
	}
	return slog.LevelError
}
