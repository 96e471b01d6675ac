package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/coretest"
)

// formBody is a test upload's multipart body and boundary; truncate drops the closing delimiter.
func formBody(t *testing.T, parts []part, truncate bool) ([]byte, string) {
	t.Helper()
	buf, contentType := multipartBody(t, parts...)
	boundary, err := multipartBoundary(contentType)
	if err != nil {
		t.Fatal(err)
	}
	body := buf.Bytes()
	if truncate {
		body = bytes.TrimSuffix(body, []byte("--"+boundary+"--\r\n"))
	}
	return body, boundary
}

// The one upload-form reader serves both front-ends; each words its problems in its own format,
// exactly as the contracts (and the SDKs) expect.
func TestUploadFormProblemsInEachFormat(t *testing.T) {
	file := part{name: "file", filename: "a.txt", body: "hello"}
	tags := make([]part, maxTags+1)
	for i := range tags {
		tags[i] = part{name: "tags[]", body: "t"}
	}
	long := strings.Repeat("x", maxFieldBytes+1)
	for _, tc := range []struct {
		name          string
		filesV1Parts  []part // nil: same as enmeshedParts
		enmeshedParts []part
		truncate      bool
		filesV1Code   int
		filesV1Msg    string
		enmeshedMsg   string
	}{
		{name: "two file parts", enmeshedParts: []part{file, file}, filesV1Code: 22,
			filesV1Msg: "the upload has more than one file part", enmeshedMsg: msgOneFilePart},
		{name: "repeated single field", filesV1Parts: []part{{name: "name", body: "a"}, {name: "name", body: "b"}, file},
			enmeshedParts: []part{{name: "title", body: "a"}, {name: "title", body: "b"}, file}, filesV1Code: 22,
			filesV1Msg: "the upload has more than one name part", enmeshedMsg: "title must be string"},
		{name: "no file part", enmeshedParts: []part{{name: "tags", body: "x"}}, filesV1Code: 14,
			filesV1Msg: "the upload has no file part", enmeshedMsg: msgContentRequired},
		{name: "too many tags", enmeshedParts: append([]part{file}, tags...), filesV1Code: 15,
			filesV1Msg: fmt.Sprintf("an upload has at most %d tags", maxTags), enmeshedMsg: fmt.Sprintf("tags must NOT have more than %d items", maxTags)},
		{name: "field too long", enmeshedParts: []part{file, {name: "tags", body: long}}, filesV1Code: 15,
			filesV1Msg: fmt.Sprintf("the tags part exceeds %d bytes", maxFieldBytes), enmeshedMsg: fmt.Sprintf("the tags part exceeds %d bytes", maxFieldBytes)},
		{name: "filename too long", enmeshedParts: []part{{name: "file", filename: long, body: "x"}}, filesV1Code: 15,
			filesV1Msg:  fmt.Sprintf("the filename of the file part exceeds %d bytes", maxFilenameBytes),
			enmeshedMsg: fmt.Sprintf("the filename of the file part exceeds %d bytes", maxFilenameBytes)},
		{name: "mimetype too long", enmeshedParts: []part{{name: "file", filename: "a.bin", contentType: "application/" + long, body: "x"}}, filesV1Code: 15,
			filesV1Msg:  fmt.Sprintf("the Content-Type of the file part exceeds %d bytes", core.MaxMimeTypeLen),
			enmeshedMsg: fmt.Sprintf("the Content-Type of the file part exceeds %d bytes", core.MaxMimeTypeLen)},
		{name: "truncated body", enmeshedParts: []part{{name: "tags", body: "x"}}, truncate: true, filesV1Code: 22,
			filesV1Msg: "the multipart body is malformed or truncated", enmeshedMsg: "the multipart body is malformed or truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := coretest.New(t, coretest.Options{})
			for _, api := range []string{"files/v1", "api/v2"} {
				parts, form := tc.enmeshedParts, enmeshedForm(time.Now())
				if api == "files/v1" {
					form = filesV1Form
					if tc.filesV1Parts != nil {
						parts = tc.filesV1Parts
					}
				}
				body, boundary := formBody(t, parts, tc.truncate)
				var up core.Upload
				_, err := readUploadForm(multipart.NewReader(bytes.NewReader(body), boundary), form, func() (core.Upload, error) {
					var err error
					up, err = h.Service.BeginUpload(context.Background(), h.Root)
					return up, err
				})
				if up != nil {
					up.Abort()
				}
				if err == nil {
					t.Fatalf("%s: the form was accepted", api)
				}
				if api == "files/v1" {
					if e := filesV1ErrorFor(err); e.status != 400 || e.Code != tc.filesV1Code || e.Message != tc.filesV1Msg {
						t.Errorf("files/v1: %d %d %q, want 400 %d %q", e.status, e.Code, e.Message, tc.filesV1Code, tc.filesV1Msg)
					}
					continue
				}
				if e := enmeshedErrorFor(err, "File"); e.status != 400 || e.code != codeInvalidPropertyValue || e.message != tc.enmeshedMsg {
					t.Errorf("api/v2: %d %s %q, want 400 %s %q", e.status, e.code, e.message, codeInvalidPropertyValue, tc.enmeshedMsg)
				}
			}
		})
	}
}

func TestUploadFormNamesTheFile(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	for _, tc := range []struct {
		name  string
		form  uploadForm
		parts []part
		want  string
	}{
		{"files/v1 name part first wins", filesV1Form, []part{{name: "name", body: "n"}, {name: "file", filename: "f.txt", body: "x"}}, "n"},
		{"files/v1 name part after the file wins", filesV1Form, []part{{name: "file", filename: "f.txt", body: "x"}, {name: "name", body: "n"}}, "n"},
		{"files/v1 empty name part wins", filesV1Form, []part{{name: "name", body: ""}, {name: "file", filename: "f.txt", body: "x"}}, ""},
		{"files/v1 filename without a name part", filesV1Form, []part{{name: "file", filename: "f.txt", body: "x"}}, "f.txt"},
		{"api/v2 filename", enmeshedForm(time.Now()), []part{{name: "file", body: "plain field"}, {name: "file", filename: "f.txt", body: "x"}}, "f.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, boundary := formBody(t, tc.parts, false)
			up, err := h.Service.BeginUpload(context.Background(), h.Root)
			if err != nil {
				t.Fatal(err)
			}
			defer up.Abort()
			attrs, err := readUploadForm(multipart.NewReader(bytes.NewReader(body), boundary), tc.form,
				func() (core.Upload, error) { return up, nil })
			if err != nil || attrs.Name != tc.want {
				t.Fatalf("name %q (%v), want %q", attrs.Name, err, tc.want)
			}
		})
	}
}

// TestUploadMimetypeLongerThanRFC6838IsRefusedOnBothAPIs: the file part's Content-Type is the
// stored mimetype, which every listing and download header carries, so a type/subtype over
// core.MaxMimeTypeLen (127 + "/" + 127, RFC 6838 §4.2) is refused in each API's own format and
// nothing is stored; one of exactly that length is kept as sent. It was bounded only by the body.
func TestUploadMimetypeLongerThanRFC6838IsRefusedOnBothAPIs(t *testing.T) {
	e := &enmeshedEnv{startEnv(t, mounts{enmeshed: true})}
	longest := "application/" + strings.Repeat("a", core.MaxMimeTypeLen-len("application/"))
	for _, api := range []string{"/files/v1/", "/api/v2/Files/Own"} {
		t.Run(api, func(t *testing.T) {
			upload := func(mimetype string) response {
				body, ct := multipartBody(t, part{name: "file", filename: "a.bin", contentType: mimetype + "; charset=utf-8", body: "x"})
				return e.do(t, http.MethodPost, api, body, map[string]string{"Content-Type": ct, "Authorization": "Bearer " + keyAlice})
			}
			res := upload(longest + "a")
			msg := fmt.Sprintf("the Content-Type of the file part exceeds %d bytes", core.MaxMimeTypeLen)
			if api == "/files/v1/" {
				wantError(t, res, 400, 15, "FIELD_FORMAT_EXCEPTION")
			} else {
				wantEnmeshedError(t, res, 400, codeInvalidPropertyValue, msg)
			}
			if !strings.Contains(string(res.body), msg) {
				t.Fatalf("body %s does not say %q", res.body, msg)
			}
			res = upload(longest)
			if (res.status != http.StatusOK && res.status != http.StatusCreated) || !strings.Contains(string(res.body), `"mimetype":"`+longest+`"`) {
				t.Fatalf("a %d-byte mimetype: %d %.300s", len(longest), res.status, res.body)
			}
		})
	}
	if files := e.core.Files(); files != 2 {
		t.Fatalf("%d files stored, want the 2 accepted ones", files)
	}
}
