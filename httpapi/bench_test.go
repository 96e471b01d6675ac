package httpapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func BenchmarkUpload(b *testing.B) {
	e := newEnv(b, anonymousUploads, maxFileSize(1<<20))
	body, ct := multipartBody(b, part{name: "name", body: "bench.bin"},
		part{name: "file", filename: "bench.bin", contentType: "application/octet-stream", body: strings.Repeat("x", 256<<10)},
		part{name: "tags[]", body: "bench"})
	raw := body.Bytes()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/files/v1/", bytes.NewReader(raw))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

func BenchmarkDownloadRange(b *testing.B) {
	e := newEnv(b, maxFileSize(1<<20))
	tok := e.addFile(b, "bench.bin", "application/octet-stream", strings.Repeat("y", 1<<20))
	b.SetBytes(64 << 10)
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/files/v1/"+tok+"/file", nil)
		req.Header.Set("Range", "bytes=65536-131071")
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusPartialContent {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
