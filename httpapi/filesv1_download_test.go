package httpapi

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
)

func TestDownload(t *testing.T) {
	data := "0123456789abcdefghijklmnopqrstuvwxyz"
	e := newEnv(t)
	full := e.addFile(t, "report.pdf", "application/pdf", data)
	read := readToken(t, e, full)
	path := "/files/v1/" + read + "/file"
	etag := `"` + fmt.Sprintf("%x", sha256.Sum256([]byte(data))) + `"` // core's ETag is the content's SHA-256

	tests := []struct {
		name       string
		method     string
		header     map[string]string
		status     int
		body       string
		wantHeader map[string]string
	}{
		{"whole file", http.MethodGet, nil, 200, data, map[string]string{
			"Content-Type": "application/pdf", "Content-Length": "36", "ETag": etag, "Accept-Ranges": "bytes",
			"Last-Modified": "Mon, 09 Feb 2026 11:03:27 GMT", "Content-Disposition": `attachment; filename="report.pdf"`}},
		{"HEAD has headers, no body", http.MethodHead, nil, 200, "", map[string]string{
			"Content-Length": "36", "ETag": etag, "Content-Type": "application/pdf"}},
		{"single range", http.MethodGet, map[string]string{"Range": "bytes=10-19"}, 206, data[10:20], map[string]string{
			"Content-Range": "bytes 10-19/36", "Content-Length": "10"}},
		{"suffix range", http.MethodGet, map[string]string{"Range": "bytes=-3"}, 206, "xyz", nil},
		{"open range", http.MethodGet, map[string]string{"Range": "bytes=30-"}, 206, data[30:], nil},
		{"unsatisfiable range", http.MethodGet, map[string]string{"Range": "bytes=100-200"}, 416, "", map[string]string{
			"Content-Range": "bytes */36"}},
		{"several ranges get the whole file", http.MethodGet, map[string]string{"Range": "bytes=0-1,5-6"}, 200, data, nil},
		{"If-None-Match matches", http.MethodGet, map[string]string{"If-None-Match": etag}, 304, "", map[string]string{"ETag": etag}},
		{"If-None-Match differs", http.MethodGet, map[string]string{"If-None-Match": `"other"`}, 200, data, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(t, tc.method, path, nil, tc.header)
			if res.status != tc.status {
				t.Fatalf("status = %d, want %d (%s)", res.status, tc.status, res.body)
			}
			if tc.status != 416 && string(res.body) != tc.body {
				t.Fatalf("body = %q, want %q", res.body, tc.body)
			}
			for k, v := range tc.wantHeader {
				if got := res.header.Get(k); got != v {
					t.Fatalf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestDownloadEmptyFileAndDefaultType(t *testing.T) {
	e := newEnv(t)
	tok := e.addFile(t, "empty", "", "")
	res := e.do(t, http.MethodGet, "/files/v1/"+tok+"/file", nil, nil)
	if res.status != 200 || len(res.body) != 0 || res.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("%d %q %v", res.status, res.body, res.header)
	}
}

func TestContentDisposition(t *testing.T) {
	tests := []struct{ name, want string }{
		{"report.pdf", `attachment; filename="report.pdf"`},
		{"my report.pdf", `attachment; filename="my report.pdf"`},
		{`a"b\c.txt`, `attachment; filename="a_b_c.txt"`},
		{"résumé.pdf", `attachment; filename="r_sum_.pdf"; filename*=utf-8''r%C3%A9sum%C3%A9.pdf`},
		{"evil\r\nSet-Cookie: x", `attachment; filename="evil__Set-Cookie: x"; filename*=utf-8''evil%0D%0ASet-Cookie%3A%20x`},
		{"", "attachment"},
	}
	for _, tc := range tests {
		if got := contentDisposition(core.FileInfo{Name: tc.name}); got != tc.want {
			t.Errorf("contentDisposition(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestDownloadContentFailure loses shards on the nodes: too few left for a read is a 503 (the
// contract's "too few shard nodes for a read") while nothing was sent, and a cut connection once
// bytes went out.
func TestDownloadContentFailure(t *testing.T) {
	t.Run("before the first byte: JSON error", func(t *testing.T) {
		e := newEnv(t)
		tok := e.addFile(t, "broken", "text/plain", strings.Repeat("b", 100))
		// 2+1: with two of a segment's three shards gone, it cannot be rebuilt.
		e.core.Shards.Remove(func(_ string, id erasure.ShardID) bool { return id.Index > 0 })
		res := e.do(t, http.MethodGet, "/files/v1/"+tok+"/file", nil, nil)
		wantError(t, res, 503, 1, "SERVICE_UNAVAILABLE_EXCEPTION")
		if res.header.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After = %q", res.header.Get("Retry-After"))
		}
		if res.header.Get("ETag") != "" || res.header.Get("Content-Disposition") != "" {
			t.Fatalf("file headers leaked into the error: %v", res.header)
		}
	})
	t.Run("after bytes were sent: connection aborted", func(t *testing.T) {
		// Large enough that the status line and the first segments leave the server's buffers
		// before the read reaches the lost ones (a segment is 16 KiB here).
		const size = 256 << 10
		e := newEnv(t, maxFileSize(size))
		tok := e.addFile(t, "broken", "text/plain", strings.Repeat("b", size))
		e.core.Shards.Remove(func(_ string, id erasure.ShardID) bool { return id.Segment >= 8 && id.Index > 0 })
		res, err := e.srv.Client().Get(e.srv.URL + "/files/v1/" + tok + "/file")
		if err != nil {
			t.Fatalf("the response should have started: %v", err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if res.StatusCode != 200 || err == nil || len(b) == 0 || len(b) >= size {
			t.Fatalf("status %d, read %d bytes, err %v: want a started 200 cut short with an error", res.StatusCode, len(b), err)
		}
	})
}
