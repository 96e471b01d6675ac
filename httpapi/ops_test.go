package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewValidatesConfig(t *testing.T) {
	files, ops, reg := newStack(t).svc, &opsStub{}, prometheus.NewRegistry()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no files", Config{Ops: ops, Registry: reg}},
		{"no ops", Config{FilesV1: files, Registry: reg}},
		{"no registry", Config{FilesV1: files, Ops: ops}},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	// A nil logger is allowed; a second front-end on the same registry is refused (duplicate metrics).
	if _, err := New(Config{FilesV1: files, Ops: ops, Registry: reg}); err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := New(Config{FilesV1: files, Ops: ops, Registry: reg}); err == nil {
		t.Fatal("second New on one registry succeeded")
	}
}

func TestOpsEndpoints(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name     string
		path     string
		notReady error
		status   int
		keys     []string
		want     map[string]any
	}{
		{"healthz", "/healthz", nil, 200, []string{"status"}, map[string]any{"status": "ok"}},
		{"ready", "/readyz", nil, 200, []string{"status"}, map[string]any{"status": "ready"}},
		{"not ready", "/readyz", errors.New("no leader"), 503, []string{"status", "reason"},
			map[string]any{"status": "unavailable", "reason": "no leader"}},
		{"not ready with a reason", "/readyz", reasonedErr{"raft_log_write_failed", "no space left on device"}, 503,
			[]string{"status", "reason", "detail"},
			map[string]any{"status": "unavailable", "reason": "raft_log_write_failed", "detail": "no space left on device"}},
		{"status", "/v1/status", nil, 200, []string{"nodeId", "leaderId", "raftState", "term", "commitIndex",
			"appliedIndex", "erasure", "writeQuorum", "members", "storage"}, map[string]any{"nodeId": "n1", "erasure": "4+2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.ops.setNotReady(tc.notReady)
			res := e.do(t, http.MethodGet, tc.path, nil, nil)
			if res.status != tc.status {
				t.Fatalf("status = %d, want %d", res.status, tc.status)
			}
			m := jsonObject(t, res.body, tc.keys...)
			for k, v := range tc.want {
				if m[k] != v {
					t.Fatalf("%s = %v, want %v", k, m[k], v)
				}
			}
		})
	}
}

// TestMetricsAndLogsNeverCarrySecrets checks the route label is the pattern and that neither
// /metrics nor the request log holds a token, a path or an API key.
func TestMetricsAndLogsNeverCarrySecrets(t *testing.T) {
	e := newEnv(t)
	full := e.addFile(t, "a", "text/plain", "hello")
	read := readToken(t, e, full)
	e.do(t, http.MethodGet, "/files/v1/"+full+"/details", nil, nil)
	e.do(t, http.MethodGet, "/files/v1/"+read+"/file", nil, nil)
	e.do(t, http.MethodDelete, "/files/v1/"+full+"/tokens/"+read, nil, nil)
	e.do(t, http.MethodGet, "/files/v1/unknown-token-zzz/details", nil, nil)
	e.do(t, http.MethodGet, "/no/such/path-qqq", nil, nil)
	e.do(t, "BREW", "/healthz", nil, nil)
	body, ct := multipartBody(t, part{name: "file", filename: "f", body: "x"})
	e.do(t, http.MethodPost, "/files/v1/", body, map[string]string{"Content-Type": ct, "X-API-KEY": "key-alice"})

	res := e.do(t, http.MethodGet, "/metrics", nil, nil)
	metrics := string(res.body)
	for _, want := range []string{
		`cairn_http_requests_total{code="200",method="GET",route="/files/v1/{token}/details"} 1`,
		`cairn_http_requests_total{code="200",method="GET",route="/files/v1/{token}/file"} 1`,
		`cairn_http_requests_total{code="200",method="DELETE",route="/files/v1/{token}/tokens/{tokenToDelete}"} 1`,
		`cairn_http_requests_total{code="400",method="GET",route="/files/v1/{token}/details"} 1`,
		`cairn_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`cairn_http_requests_total{code="404",method="OTHER",route="/healthz"} 1`,
		`cairn_http_requests_total{code="200",method="POST",route="/files/v1/"} 1`,
		`cairn_http_request_duration_seconds_bucket{method="GET",route="/files/v1/{token}/file",le="+Inf"} 1`,
		"go_goroutines", "process_",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"route":"/files/v1/{token}/details"`) {
		t.Errorf("no debug request line with the route pattern: %s", logs)
	}
	for _, secret := range []string{full, read, "unknown-token-zzz", "path-qqq", "key-alice"} {
		if strings.Contains(metrics, secret) || strings.Contains(logs, secret) {
			t.Errorf("%q leaked into metrics or logs", secret)
		}
	}
}

// reasonedErr is a readiness error with a stable reason apart from its detail, as node's is.
type reasonedErr struct{ reason, detail string }

func (e reasonedErr) Error() string                        { return e.reason + ": " + e.detail }
func (e reasonedErr) ReadyReason() (reason, detail string) { return e.reason, e.detail }
