package testcluster

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestErrorsSayWhatIsWrong: each front-end's refusals name what is wrong, in its own wire format:
// the size limit, the missing multipart field, the unknown filter key, the missing permission.
func TestErrorsSayWhatIsWrong(t *testing.T) {
	c := New(t, Options{MaxFileSize: 48 << 10})
	validateAgainstSpec(t, c)
	_, plain := createKey(t, c, 0)
	root := "Bearer " + c.RootKey
	big := "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n" + strings.Repeat("z", 60_000) + "\r\n--B--\r\n"
	noFile := "--B\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n--B--\r\n"
	mp := "multipart/form-data; boundary=B"

	v1 := []struct {
		name, method, path, body string
		header                   http.Header
		status, code             int
		message                  string
	}{
		{"too large", "POST", "/files/v1/", big, http.Header{"Content-Type": {mp}, "Authorization": {root}}, 400, 2610,
			"the file exceeds the maximum file size of 48 KiB (49152 bytes)"},
		{"list without VIEW_FILES", "GET", "/files/v1/", "", http.Header{"X-API-KEY": {plain}}, 401, 10,
			"the principal lacks the required permission VIEW_FILES"},
		{"settings without VIEW_FILE_SERVICE_SETTINGS", "GET", "/files/v1/settings", "", http.Header{"X-API-KEY": {plain}}, 401, 10,
			"the principal lacks the required permission VIEW_FILE_SERVICE_SETTINGS"},
		{"api keys without MANAGE_API_KEYS", "GET", "/v1/apikeys", "", http.Header{"X-API-KEY": {plain}}, 401, 10,
			"the principal lacks the required permission MANAGE_API_KEYS"},
		{"rotate without MANAGE_CLUSTER", "POST", "/v1/signing-key/rotate", "", http.Header{"X-API-KEY": {plain}}, 401, 10,
			"the principal lacks the required permission MANAGE_CLUSTER"},
	}
	for _, row := range v1 {
		resp, err := c.Client(1).Do(row.method, row.path, strings.NewReader(row.body), row.header)
		if err != nil {
			t.Fatalf("%s: %v", row.name, err)
		}
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(resp.Body, &e) != nil || resp.Status != row.status || e.Code != row.code || e.Message != row.message {
			t.Errorf("%s: %d %s, want %d code %d %q", row.name, resp.Status, resp.Body, row.status, row.code, row.message)
		}
	}

	v2 := []struct {
		name, method, path, body string
		header                   http.Header
		status                   int
		message                  string
	}{
		{"too large", "POST", "/api/v2/Files/Own", big, http.Header{"Content-Type": {mp}, "X-API-KEY": {c.RootKey}}, 400,
			"file content exceeds the maximum file size of 48 KiB (49152 bytes)"},
		{"no file part", "POST", "/api/v2/Files/Own", noFile, http.Header{"Content-Type": {mp}, "X-API-KEY": {c.RootKey}}, 400,
			"must have required property 'content': send the file as the multipart field 'file'"},
		{"unknown filter", "GET", "/api/v2/Files?colour=red", "", http.Header{"X-API-KEY": {c.RootKey}}, 400,
			"query must NOT have additional properties: unknown key 'colour' (known: createdAt, createdBy, createdByDevice, description, expiresAt, filename, filesize, mimetype, tags, title)"},
	}
	for _, row := range v2 {
		resp, err := c.Client(2).Do(row.method, row.path, strings.NewReader(row.body), row.header)
		if err != nil {
			t.Fatalf("%s: %v", row.name, err)
		}
		var env struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(resp.Body, &env) != nil || resp.Status != row.status ||
			env.Error.Code != "error.runtime.validation.invalidPropertyValue" || env.Error.Message != row.message {
			t.Errorf("%s: %d %s, want %d %q", row.name, resp.Status, resp.Body, row.status, row.message)
		}
	}
}
