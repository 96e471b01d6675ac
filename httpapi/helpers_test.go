package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// env is /files/v1 under test, over the real core.
type env struct {
	*stack
	ops  *opsStub
	reg  *prometheus.Registry
	logs *testutil.SyncBuffer
	h    http.Handler
	srv  *httptest.Server
}

// opsStub is an OpsService with a settable readiness: the ops endpoints' data comes from node,
// which this package cannot import.
type opsStub struct {
	mu       sync.Mutex
	notReady error
}

func (o *opsStub) Status(context.Context) Status {
	return Status{NodeID: "n1", LeaderID: "n2", RaftState: "Follower", Term: 3, Erasure: "4+2", WriteQuorum: 5,
		Members: []MemberStatus{{ID: "n1", State: "alive", Suffrage: "voter"}}}
}

func (o *opsStub) Ready(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notReady
}

func (o *opsStub) setNotReady(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.notReady = err
}

func newEnv(t testing.TB, opts ...stackOption) *env {
	t.Helper()
	return startEnv(t, mounts{}, opts...)
}

// mounts names the front-ends served next to /files/v1 and the ops endpoints.
type mounts struct {
	enmeshed, admin bool
	downloadStall   time.Duration // Config.DownloadStallTimeout
}

// startEnv serves /files/v1 and what m names over a new stack.
func startEnv(t testing.TB, m mounts, opts ...stackOption) *env {
	t.Helper()
	e := &env{stack: newStack(t, opts...), ops: &opsStub{}, reg: prometheus.NewRegistry(), logs: &testutil.SyncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{FilesV1: e.svc, Ops: e.ops, Registry: e.reg, Logger: logger, DownloadStallTimeout: m.downloadStall}
	if m.enmeshed {
		cfg.Enmeshed = e.svc
	}
	if m.admin {
		cfg.Admin = e.svc
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.h = h
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// addFile uploads a file of alice's through core and returns its full token.
func (e *env) addFile(t testing.TB, name, mimetype, data string) string {
	t.Helper()
	_, full := e.upload(t, "alice", core.FileAttrs{Name: name, MimeType: mimetype}, data)
	return full.Secret
}

// response is what a test inspects of an answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t testing.TB, method, path string, body io.Reader, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{res.StatusCode, res.Header, b}
}

// jsonObject decodes b as an object and checks its keys are exactly keys.
func jsonObject(t testing.TB, b []byte, keys ...string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", b, err)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v (body %s)", got, want, b)
	}
	return m
}

// wantError checks an error answer: HTTP status, code, name, and the exact error shape.
func wantError(t testing.TB, r response, status, code int, name string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d (body %s)", r.status, status, r.body)
	}
	m := jsonObject(t, r.body, "code", "name", "message")
	if m["code"] != float64(code) || m["name"] != name {
		t.Fatalf("error = %v %v, want %d %s", m["code"], m["name"], code, name)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want JSON", ct)
	}
}

// part is one multipart part of a test upload.
type part struct {
	name, filename, contentType, body string
}

func multipartBody(t testing.TB, parts ...part) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		disp := fmt.Sprintf(`form-data; name=%q`, p.name)
		if p.filename != "" {
			disp += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", disp)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, p.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

// chunked hides the length of r so the client sends Transfer-Encoding: chunked, like the SDK.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkFuzzedUpload is the verdict of both APIs' upload fuzz targets on a begun upload: it is
// committed exactly when the answer is okStatus (and then the body was well formed), aborted
// otherwise, and an aborted upload leaves no shard behind.
func (e *env) checkFuzzedUpload(t *testing.T, up *recordedUpload, body []byte, status, okStatus int) {
	t.Helper()
	committed, aborted, _, _ := up.state()
	if committed != (status == okStatus) || committed == aborted {
		t.Fatalf("status %d, committed %v, aborted %v", status, committed, aborted)
	}
	if committed && !wellFormedUpload(body) {
		t.Fatalf("committed a malformed body %q", body)
	}
	if !committed {
		e.waitNoStrayShards(t)
	}
}
