package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/fsm"
)

var metadataKeys = []string{"name", "mimetype", "creatorId", "size", "tags", "tokens", "creationTimestamp", "updateTimestamp"}

func TestUploadSuccess(t *testing.T) {
	tests := []struct {
		name        string
		anon        bool
		header      map[string]string
		parts       []part
		chunked     bool
		wantName    string
		wantMime    string
		wantCreator string
		wantTags    []string
		wantData    string
	}{
		{
			name:   "SDK order: name, file, tags after the file",
			header: map[string]string{"Authorization": "Bearer key-alice"},
			parts: []part{{name: "name", body: "report.pdf"},
				{name: "file", filename: "r.pdf", contentType: "application/pdf", body: "%PDF-1.7"},
				{name: "tags[]", body: "ecg-report"}, {name: "tags[]", body: "2026"}},
			chunked:  true,
			wantName: "report.pdf", wantMime: "application/pdf", wantCreator: "alice",
			wantTags: []string{"ecg-report", "2026"}, wantData: "%PDF-1.7",
		},
		{
			// No part Content-Type and no extension: the type comes from the content (the contract's
			// "derived from the content or the name").
			name:     "name falls back to the filename; tags without brackets; X-API-KEY; type from the content",
			header:   map[string]string{"X-API-KEY": "key-alice"},
			parts:    []part{{name: "tags", body: "a"}, {name: "file", filename: "data", body: "hello"}, {name: "tags", body: "b"}},
			wantName: "data", wantMime: "text/plain", wantCreator: "alice",
			wantTags: []string{"a", "b"}, wantData: "hello",
		},
		{
			name:     "anonymous when allowed; no tags is an empty array; unknown fields ignored",
			anon:     true,
			parts:    []part{{name: "file", filename: "x.txt", contentType: "text/plain", body: ""}, {name: "color", body: "red"}},
			wantName: "x.txt", wantMime: "text/plain", wantCreator: "anonymous", wantTags: []string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []stackOption
			if tc.anon {
				opts = append(opts, anonymousUploads)
			}
			e := newEnv(t, opts...)
			body, ct := multipartBody(t, tc.parts...)
			var r io.Reader = body
			if tc.chunked {
				r = chunked{body}
			}
			header := map[string]string{"Content-Type": ct}
			for k, v := range tc.header {
				header[k] = v
			}
			res := e.do(t, http.MethodPost, "/files/v1/", r, header)
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			m := jsonObject(t, res.body, metadataKeys...)
			if m["name"] != tc.wantName || m["mimetype"] != tc.wantMime || m["creatorId"] != tc.wantCreator ||
				m["size"] != float64(len(tc.wantData)) || m["creationTimestamp"] != "2026-02-09T11:03:27.179Z" ||
				m["updateTimestamp"] != "2026-02-09T11:03:27.179Z" {
				t.Fatalf("metadata = %v", m)
			}
			var tags []string
			for _, tag := range m["tags"].([]any) {
				tags = append(tags, tag.(string))
			}
			if !slices.Equal(tags, tc.wantTags) || m["tags"] == nil {
				t.Fatalf("tags = %v, want %v", m["tags"], tc.wantTags)
			}
			tokens := m["tokens"].([]any)
			if len(tokens) != 1 {
				t.Fatalf("tokens = %v", tokens)
			}
			tok := jsonObject(t, mustJSON(t, tokens[0]), "token", "accessLevel")
			if tok["accessLevel"] != "full" {
				t.Fatalf("token = %v", tok)
			}
			committed, _, attrs, data := e.svc.lastUpload().state()
			if !committed || string(data) != tc.wantData || !slices.Equal(attrs.Tags, tc.wantTags) {
				t.Fatalf("upload committed=%v data=%q attrs=%+v", committed, data, attrs)
			}
			// The new token works.
			if r := e.do(t, http.MethodGet, "/files/v1/"+tok["token"].(string)+"/file", nil, nil); string(r.body) != tc.wantData {
				t.Fatalf("download = %q", r.body)
			}
		})
	}
}

func TestUploadWithoutTrailingSlash(t *testing.T) {
	e := newEnv(t, anonymousUploads)
	body, ct := multipartBody(t, part{name: "file", filename: "a", body: "x"})
	res := e.do(t, http.MethodPost, "/files/v1", body, map[string]string{"Content-Type": ct})
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
}

func TestUploadErrors(t *testing.T) {
	file := part{name: "file", filename: "f.bin", body: "data"}
	auth := map[string]string{"Authorization": "Bearer key-alice"}
	big := strings.Repeat("x", testMaxFileSize+1)
	manyTags := make([]part, 0, 1001)
	for range 1001 {
		manyTags = append(manyTags, part{name: "tags[]", body: "t"})
	}
	// Tags that stay under the 64 KiB field limit but overflow the whole-body limit (MaxFileSize+1 MiB).
	floodTags := make([]part, 0, 40)
	for range 40 {
		floodTags = append(floodTags, part{name: "tags[]", body: strings.Repeat("t", 60<<10)})
	}

	tests := []struct {
		name       string
		anon       bool
		header     map[string]string
		body       func(t *testing.T) (io.Reader, string) // body and Content-Type
		failCommit error                                  // what the cluster answers the upload's commit
		status     int
		code       int
		errName    string
		wantUpload bool // BeginUpload was reached, so Abort must have been called
	}{
		{"no key, anonymous not allowed", false, nil, parts(file), nil, 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION", false},
		{"unknown key even though anonymous allowed", true, map[string]string{"X-API-KEY": "nope"}, parts(file), nil, 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION", false},
		{"non-bearer Authorization", true, map[string]string{"Authorization": "Basic a2V5"}, parts(file), nil, 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION", false},
		{"empty bearer", true, map[string]string{"Authorization": "Bearer "}, parts(file), nil, 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION", false},
		{"empty body", false, auth, raw("", "multipart/form-data; boundary=x"), nil, 400, 13, "EMPTY_BODY_EXCEPTION", false},
		{"empty chunked body", false, auth, func(*testing.T) (io.Reader, string) {
			return chunked{strings.NewReader("")}, "multipart/form-data; boundary=x"
		}, nil, 400, 13, "EMPTY_BODY_EXCEPTION", false},
		{"not multipart", false, auth, raw(`{"a":1}`, "application/json"), nil, 400, 22, "BODY_FORMAT_EXCEPTION", false},
		{"no boundary", false, auth, raw("--x\r\n", "multipart/form-data"), nil, 400, 22, "BODY_FORMAT_EXCEPTION", false},
		{"garbage multipart", false, auth, raw("this is not multipart at all", "multipart/form-data; boundary=x"), nil, 400, 22, "BODY_FORMAT_EXCEPTION", true},
		{"truncated in the file part", false, auth, truncated(file), nil, 400, 22, "BODY_FORMAT_EXCEPTION", true},
		{"truncated after the file part", false, auth, truncated(file, part{name: "tags[]", body: "abcdefgh"}), nil, 400, 22, "BODY_FORMAT_EXCEPTION", true},
		{"no file part", false, auth, parts(part{name: "name", body: "n"}), nil, 400, 14, "MISSING_REQUIRED_FIELDS_EXCEPTION", true},
		{"no parts at all", false, auth, raw("--x--\r\n", "multipart/form-data; boundary=x"), nil, 400, 14, "MISSING_REQUIRED_FIELDS_EXCEPTION", true},
		{"second file part", false, auth, parts(file, file), nil, 400, 22, "BODY_FORMAT_EXCEPTION", true},
		{"second name part", false, auth, parts(part{name: "name", body: "a"}, part{name: "name", body: "b"}, file), nil, 400, 22, "BODY_FORMAT_EXCEPTION", true},
		{"file over MaxFileSize, chunked", false, auth, chunkedParts(part{name: "file", filename: "big", body: big}), nil, 400, 2610, "FILE_TOO_LARGE_EXCEPTION", true},
		{"non-file parts overflow the body limit", false, auth, chunkedParts(append(floodTags, file)...), nil, 400, 2610, "FILE_TOO_LARGE_EXCEPTION", true},
		{"name over 64 KiB", false, auth, parts(part{name: "name", body: strings.Repeat("n", 64<<10+1)}, file), nil, 400, 15, "FIELD_FORMAT_EXCEPTION", true},
		{"unknown field over 64 KiB", false, auth, parts(file, part{name: "junk", body: strings.Repeat("n", 64<<10+1)}), nil, 400, 15, "FIELD_FORMAT_EXCEPTION", true},
		{"more than 1000 tags", false, auth, parts(append(manyTags, file)...), nil, 400, 15, "FIELD_FORMAT_EXCEPTION", true},
		{"name not UTF-8", false, auth, parts(part{name: "name", body: "\xff\xfe"}, file), nil, 400, 15, "FIELD_FORMAT_EXCEPTION", true},
		{"cluster unavailable", false, auth, parts(file), errors.New("no leader"), 503, 1, "SERVICE_UNAVAILABLE_EXCEPTION", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []stackOption
			if tc.anon {
				opts = append(opts, anonymousUploads)
			}
			e := newEnv(t, opts...)
			if tc.failCommit != nil {
				e.fail(false, fsm.CmdCreateFile, tc.failCommit)
			}
			body, ct := tc.body(t)
			header := map[string]string{"Content-Type": ct}
			for k, v := range tc.header {
				header[k] = v
			}
			res := e.do(t, http.MethodPost, "/files/v1/", body, header)
			wantError(t, res, tc.status, tc.code, tc.errName)
			if tc.status == 503 && res.header.Get("Retry-After") != "1" {
				t.Fatalf("Retry-After = %q", res.header.Get("Retry-After"))
			}
			up := e.svc.lastUpload()
			if (up != nil) != tc.wantUpload {
				t.Fatalf("BeginUpload called = %v, want %v", up != nil, tc.wantUpload)
			}
			if up != nil {
				if committed, aborted, _, _ := up.state(); committed || !aborted {
					t.Fatalf("committed=%v aborted=%v, want an aborted upload", committed, aborted)
				}
			}
			if n := e.core.Files(); n != 0 {
				t.Fatalf("%d files committed", n)
			}
			if tc.failCommit != nil {
				// The commit's outcome is unknown (it may still apply): its shards stay for the GC.
				if e.core.Stray() == 0 {
					t.Fatal("the shards of a commit of unknown outcome were deleted")
				}
				return
			}
			e.waitNoStrayShards(t)
		})
	}
}

// TestUploadBeforeClusterInit: a node whose cluster is not initialised cannot begin an upload.
func TestUploadBeforeClusterInit(t *testing.T) {
	e := newEnv(t, anonymousUploads, uninitialized)
	body, ct := multipartBody(t, part{name: "file", filename: "a", body: "x"})
	res := e.do(t, http.MethodPost, "/files/v1/", body, map[string]string{"Content-Type": ct})
	wantError(t, res, 503, 1, "SERVICE_UNAVAILABLE_EXCEPTION")
	if res.header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After = %q", res.header.Get("Retry-After"))
	}
	if e.svc.lastUpload() != nil {
		t.Fatal("an upload was begun")
	}
}

func TestUploadCommitFailureIsMapped(t *testing.T) {
	e := newEnv(t, anonymousUploads)
	e.fail(false, fsm.CmdCreateFile, fmt.Errorf("append: %w", clusterapi.ErrLogStoreFull))
	body, ct := multipartBody(t, part{name: "file", filename: "a", body: "x"})
	res := e.do(t, http.MethodPost, "/files/v1/", body, map[string]string{"Content-Type": ct})
	wantError(t, res, 507, 1, "INSUFFICIENT_STORAGE_EXCEPTION")
	if _, aborted, _, _ := e.svc.lastUpload().state(); !aborted {
		t.Fatal("a failed commit must abort")
	}
	if e.core.Files() != 0 {
		t.Fatal("a refused commit created a file")
	}
	e.waitNoStrayShards(t)
}

// errDisconnect stands for the client going away mid-upload.
var errDisconnect = errors.New("client disconnected")

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, f.err
	}
	return n, err
}

func TestUploadClientDisconnectAborts(t *testing.T) {
	e := newEnv(t, anonymousUploads)
	body, ct := multipartBody(t, part{name: "file", filename: "a", body: strings.Repeat("z", 500)})
	half := body.Bytes()[:body.Len()/2]
	req := httptest.NewRequest(http.MethodPost, "/files/v1/", &failingReader{bytes.NewReader(half), errDisconnect})
	req.Header.Set("Content-Type", ct)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status = %d", rec.Code)
	}
	committed, aborted, _, _ := e.svc.lastUpload().state()
	if committed || !aborted || e.core.Files() != 0 {
		t.Fatalf("committed=%v aborted=%v", committed, aborted)
	}
	e.waitNoStrayShards(t)
}

func parts(ps ...part) func(t *testing.T) (io.Reader, string) {
	return func(t *testing.T) (io.Reader, string) {
		b, ct := multipartBody(t, ps...)
		return b, ct
	}
}

func chunkedParts(ps ...part) func(t *testing.T) (io.Reader, string) {
	return func(t *testing.T) (io.Reader, string) {
		b, ct := multipartBody(t, ps...)
		return chunked{b}, ct
	}
}

// truncated cuts the well-formed body a few bytes into its last part.
func truncated(ps ...part) func(t *testing.T) (io.Reader, string) {
	return func(t *testing.T) (io.Reader, string) {
		b, ct := multipartBody(t, ps...)
		last := ps[len(ps)-1].body
		cut := bytes.LastIndex(b.Bytes(), []byte(last)) + len(last)/2
		return bytes.NewReader(b.Bytes()[:cut]), ct
	}
}

func raw(body, contentType string) func(t *testing.T) (io.Reader, string) {
	return func(*testing.T) (io.Reader, string) { return strings.NewReader(body), contentType }
}
