package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// One panic handler serves both front-ends: each answers a panic in its own format while nothing
// was sent, and the connection is aborted once the answer has started.
func TestPanicAnswersInTheFrontEndsFormat(t *testing.T) {
	metrics, err := newHTTPMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mw := &middleware{log: slog.New(slog.DiscardHandler), metrics: metrics}
	for _, tc := range []struct {
		name      string
		answer500 serverError
		check     func(body map[string]any) bool
	}{
		{"files/v1", filesV1ServerError, func(b map[string]any) bool { return b["code"] == float64(1) && b["name"] == "SERVER_EXCEPTION" }},
		{"api/v2", enmeshedServerError, func(b map[string]any) bool {
			e, _ := b["error"].(map[string]any)
			return e["code"] == codeUnexpected
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mw.wrap("/p", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("X-Prepared", "yes")
				panic("early")
			}), tc.answer500)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/p", nil))
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusInternalServerError || !tc.check(body) {
				t.Fatalf("panic before the answer: %d %s (%v)", rec.Code, rec.Body, err)
			}
			if rec.Header().Get("X-Prepared") != "" {
				t.Error("headers the handler prepared went out with the error")
			}

			late := mw.wrap("/p", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusOK)
				panic("late")
			}), tc.answer500)
			defer func() {
				if p := recover(); p != http.ErrAbortHandler {
					t.Fatalf("panic after the answer started: recovered %v, want http.ErrAbortHandler", p)
				}
			}()
			late.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/p", nil))
			t.Fatal("no panic after the answer started")
		})
	}
}
