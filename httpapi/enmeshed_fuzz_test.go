package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
)

func FuzzParseTokenCreate(f *testing.F) {
	for _, s := range []string{"", "{}", `{"ephemeral":false}`, `{"expiresAt":"2099"}`, `{"expiresAt":"2000-01-01"}`,
		`{"expiresAt":""}`, `{"ephemeral":"x"}`, `{"expiresAt":null,"ephemeral":null}`, "null", "[]", "{", `{"forIdentity":"x"}`} {
		f.Add("FIL00000000000000001", []byte(s))
		f.Add("FILbad", []byte(s))
	}
	now := time.Date(2026, 2, 9, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, id string, body []byte) {
		req, err := parseTokenCreate(id, body, now)
		if err != nil {
			var e *enmeshedError
			if !errors.As(err, &e) || e.status != http.StatusBadRequest ||
				(e.code != codeInvalidPropertyValue && e.code != codeInvalidJSON) {
				t.Fatalf("error %v is not a 400 validation failure", err)
			}
			return
		}
		if req.fileID != id || !validID(id, "FIL") {
			t.Fatalf("accepted id %q", id)
		}
		if !req.expiresAt.IsZero() && !req.expiresAt.After(now) {
			t.Fatalf("accepted a past expiry %v", req.expiresAt)
		}
		if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

func FuzzParseFileFilter(f *testing.F) {
	for _, s := range []string{"", "filename=a", "filename=!a&filename=^b", "tags=~^q%5Cd$", "filesize=%3E10",
		"createdAt=%3C2026-01-02", "expiresAt=9999", "owner=x", "title=%zz", "title=~(", "&&=&", "mimetype=$/png",
		"filename=~.%7B1000%7D", "filename=~a%7B100%7D&tags=~b%7B100%7D&title=~c%7B100%7D"} {
		f.Add(s)
	}
	files := []core.FileInfo{
		{Name: "a.txt", MimeType: "text/plain", Size: 10, Tags: []string{"q1"}, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Name: "", Title: "t", ExpiresAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	f.Fuzz(func(t *testing.T, query string) {
		filter, err := parseFileFilter(query)
		if err != nil {
			var e *enmeshedError
			if !errors.As(err, &e) || e.status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		n, insts := 0, 0
		for _, kf := range filter {
			n += len(kf.conditions)
			for _, c := range kf.conditions {
				insts += c.reInsts
			}
		}
		if n > maxFilterConditions || insts > maxFilterRegexInsts {
			t.Fatalf("accepted %d conditions with %d regex instructions", n, insts)
		}
		for _, file := range files {
			filter.match(file) // must not panic
		}
	})
}

func FuzzEnmeshedUpload(f *testing.F) {
	seed := func(parts ...part) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		if err := mw.SetBoundary(fuzzBoundary); err != nil {
			f.Fatal(err)
		}
		for _, p := range parts {
			w, err := mw.CreateFormFile(p.name, p.filename)
			if p.filename == "" {
				w, err = mw.CreateFormField(p.name)
			}
			if err != nil {
				f.Fatal(err)
			}
			fmt.Fprint(w, p.body)
		}
		mw.Close()
		f.Add(buf.Bytes())
		f.Add(buf.Bytes()[:buf.Len()/2])
	}
	seed(part{name: "title", body: "t"}, part{name: "file", filename: "f", body: "data"}, part{name: "tags", body: "x"})
	seed(part{name: "file", filename: "a", body: ""}, part{name: "file", filename: "b", body: "x"})
	seed(part{name: "expiresAt", body: "2000"}, part{name: "file", filename: "f", body: "x"})
	seed(part{name: "file", filename: "big", body: strings.Repeat("z", 300)})
	f.Add([]byte(""))
	f.Add([]byte("--" + fuzzBoundary + "--"))

	e := newEnmeshedEnv(f, maxFileSize(256))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/api/v2/Files/Own", bytes.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+fuzzBoundary)
		req.Header.Set("X-API-KEY", keyAlice)
		rec := httptest.NewRecorder()
		before := e.svc.lastUpload()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		up := e.svc.lastUpload()
		if up == before {
			if rec.Code == http.StatusCreated {
				t.Fatal("created a file without beginning an upload")
			}
			return
		}
		e.checkFuzzedUpload(t, up, body, rec.Code, http.StatusCreated)
	})
}

func BenchmarkEnmeshedListFiltered(b *testing.B) {
	e := newEnmeshedEnv(b)
	for i := range 1000 {
		e.upload(b, "alice", core.FileAttrs{Name: fmt.Sprintf("file-%d.txt", i), MimeType: "text/plain",
			Tags: []string{"t" + fmt.Sprint(i%10)}}, "x")
	}
	target := "/api/v2/Files?filename=~-%5Cd*7%5C.txt$&tags=t7&tags=t3&filesize=%3C2"
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		req.Header.Set("X-API-KEY", keyAlice)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
