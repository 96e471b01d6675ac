package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const fuzzBoundary = "fuzzboundary"

// wellFormedUpload reports whether body is a complete multipart form with exactly one file part:
// the only kind of body that may ever commit.
func wellFormedUpload(body []byte) bool {
	mr := multipart.NewReader(bytes.NewReader(body), fuzzBoundary)
	files := 0
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return files == 1
		}
		if err != nil {
			return false
		}
		if p.FormName() == "file" {
			files++
		}
		if _, err := io.Copy(io.Discard, p); err != nil {
			return false
		}
	}
}

func FuzzFilesV1Upload(f *testing.F) {
	seed := func(parts ...part) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		if err := mw.SetBoundary(fuzzBoundary); err != nil {
			f.Fatal(err)
		}
		for _, p := range parts {
			var w io.Writer
			var err error
			if p.filename != "" {
				w, err = mw.CreateFormFile(p.name, p.filename)
			} else {
				w, err = mw.CreateFormField(p.name)
			}
			if err != nil {
				f.Fatal(err)
			}
			io.WriteString(w, p.body)
		}
		mw.Close()
		f.Add(buf.Bytes())
		f.Add(buf.Bytes()[:buf.Len()/2])
	}
	seed(part{name: "name", body: "n"}, part{name: "file", filename: "f", body: "data"}, part{name: "tags[]", body: "t"})
	seed(part{name: "file", filename: "a", body: ""}, part{name: "file", filename: "b", body: "x"})
	seed(part{name: "tags", body: "x"})
	seed(part{name: "file", filename: "big", body: strings.Repeat("z", 300)})
	f.Add([]byte(""))
	f.Add([]byte("--" + fuzzBoundary + "--"))
	f.Add([]byte("--" + fuzzBoundary + "\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--" + fuzzBoundary))

	e := newEnv(f, anonymousUploads, maxFileSize(256))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/files/v1/", bytes.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+fuzzBoundary)
		rec := httptest.NewRecorder()
		before := e.svc.lastUpload()
		e.h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		up := e.svc.lastUpload()
		if up == before { // rejected before BeginUpload: only an empty body may do that
			if len(body) != 0 {
				t.Fatalf("no upload begun for a %d-byte body (status %d)", len(body), rec.Code)
			}
			return
		}
		e.checkFuzzedUpload(t, up, body, rec.Code, http.StatusOK)
	})
}

func FuzzParseTokenRequest(f *testing.F) {
	for _, s := range []string{"", "{}", `{"accessLevel":"read"}`, `{"accessLevel":"full","expiresAt":"2030-01-01T00:00:00.000Z"}`,
		`{"accessLevel":1}`, `{"expiresAt":"2020-01-01T00:00:00Z"}`, `null`, `[]`, `{"accessLevel":null}`, `{`} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 2, 9, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseTokenRequest(body, now)
		if err != nil {
			var ve *filesV1Error
			if !errors.As(err, &ve) || (ve.Code != 15 && ve.Code != 22) {
				t.Fatalf("error %v is not a 15 or 22", err)
			}
			return
		}
		if !req.access.Valid() || (!req.expiresAt.IsZero() && !req.expiresAt.After(now)) {
			t.Fatalf("accepted %+v", req)
		}
		if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

// FuzzNormalizeRange: whatever Range a client sends, on a file of any size (0 included), what
// normalizeRange hands http.ServeContent is answered 200, a 206 whose Content-Range is a
// well-formed range inside the file, or a 416 that, when it names the size, is "bytes */size".
func FuzzNormalizeRange(f *testing.F) {
	for _, seed := range []string{"bytes=0-0", "bytes=-1", "bytes=-0", "bytes=5-", "bytes=0-99999999999999999999",
		"bytes=-99999999999999999999", "bytes=99999999999999999999-", "bytes=5-2", "items=0-1", "bytes=0-0,1-1", "bytes= 1 - 2", "bytes=-", "bytes=-+0", "bytes=+0-"} {
		f.Add(seed, uint8(0))
		f.Add(seed, uint8(11))
	}
	contentRange := regexp.MustCompile(`^bytes (\d+)-(\d+)/(\d+)$`)
	f.Fuzz(func(t *testing.T, rangeHeader string, size uint8) {
		req := httptest.NewRequest(http.MethodGet, "/f", nil)
		req.Header.Set("Range", rangeHeader)
		normalizeRange(req, int64(size))
		rec := httptest.NewRecorder()
		http.ServeContent(rec, req, "", time.Time{}, bytes.NewReader(make([]byte, size)))
		cr := rec.Header().Get("Content-Range")
		switch rec.Code {
		case http.StatusOK:
		case http.StatusPartialContent:
			m := contentRange.FindStringSubmatch(cr)
			if m == nil {
				t.Fatalf("Range %q on %d bytes: 206 with Content-Range %q", rangeHeader, size, cr)
			}
			first, _ := strconv.Atoi(m[1])
			last, _ := strconv.Atoi(m[2])
			if first > last || last >= int(size) || m[3] != strconv.Itoa(int(size)) {
				t.Fatalf("Range %q on %d bytes: 206 with Content-Range %q", rangeHeader, size, cr)
			}
		case http.StatusRequestedRangeNotSatisfiable:
			if cr != "" && cr != "bytes */"+strconv.Itoa(int(size)) {
				t.Fatalf("Range %q on %d bytes: 416 with Content-Range %q", rangeHeader, size, cr)
			}
		default:
			t.Fatalf("Range %q on %d bytes: status %d", rangeHeader, size, rec.Code)
		}
	})
}
