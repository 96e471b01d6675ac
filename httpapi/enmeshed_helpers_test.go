package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// enmeshedEnv is /api/v2 (and /files/v1) under test, over the real core; its requests go as alice.
type enmeshedEnv struct{ *env }

func newEnmeshedEnv(t testing.TB, opts ...stackOption) *enmeshedEnv {
	t.Helper()
	return &enmeshedEnv{startEnv(t, mounts{enmeshed: true}, opts...)}
}

// do sends a request as alice unless header names another key (an empty X-API-KEY sends none).
func (e *enmeshedEnv) do(t testing.TB, method, path string, body io.Reader, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-KEY", keyAlice)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if req.Header.Get("X-API-KEY") == "" {
		req.Header.Del("X-API-KEY")
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

var (
	errorIDPattern      = regexp.MustCompile(`^ERR[A-Za-z0-9]{17}$`)
	enmeshedTimePattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
)

// wantEnmeshedError checks an error answer: status, code, message (when not empty) and the envelope's
// exact shape.
func wantEnmeshedError(t testing.TB, r response, status int, code, message string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want JSON", ct)
	}
	env := jsonObject(t, r.body, "error")
	raw, err := json.Marshal(env["error"])
	if err != nil {
		t.Fatal(err)
	}
	e := jsonObject(t, raw, "code", "message", "id", "time", "docs")
	if e["code"] != code {
		t.Fatalf("code = %v, want %s (body %s)", e["code"], code, r.body)
	}
	if message != "" && e["message"] != message {
		t.Fatalf("message = %q, want %q", e["message"], message)
	}
	if id, _ := e["id"].(string); !errorIDPattern.MatchString(id) {
		t.Fatalf("id = %q, want ERR + 17 alphanumerics", id)
	}
	ts, _ := e["time"].(string)
	if !enmeshedTimePattern.MatchString(ts) {
		t.Fatalf("time = %q, want UTC with milliseconds", ts)
	}
	if at, err := time.Parse(time.RFC3339, ts); err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Minute {
		t.Fatalf("time = %q is not now", ts)
	}
	if e["docs"] != "https://enmeshed.eu/integrate/error-codes#"+strings.ToLower(code) {
		t.Fatalf("docs = %v", e["docs"])
	}
}

// result decodes a success envelope {"result": ...} into v, checking it is the only key.
func result(t testing.TB, r response, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d (body %s)", r.status, status, r.body)
	}
	env := jsonObject(t, r.body, "result")
	raw, err := json.Marshal(env["result"])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("result %s: %v", raw, err)
	}
}

// resultObject decodes a success envelope whose result is an object with exactly keys.
func resultObject(t testing.TB, r response, status int, keys ...string) map[string]any {
	t.Helper()
	var raw json.RawMessage
	result(t, r, status, &raw)
	return jsonObject(t, raw, keys...)
}

var (
	fileDTOKeys     = []string{"id", "isOwn", "filename", "tags", "filesize", "createdAt", "createdBy", "createdByDevice", "expiresAt", "mimetype", "title", "description", "truncatedReference"}
	fileDTOBareKeys = []string{"id", "isOwn", "filename", "filesize", "createdAt", "createdBy", "createdByDevice", "expiresAt", "mimetype", "title", "truncatedReference"}
	tokenDTOKeys    = []string{"id", "isOwn", "createdBy", "createdAt", "expiresAt", "content", "truncatedReference", "isEphemeral", "createdByDevice"}
)
