package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"mime/multipart"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/coretest"
)

// formPart is one part of a test form: a file part when filename is set.
type formPart struct{ name, filename, value string }

func formBody(t *testing.T, parts []formPart, truncate bool) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w interface{ Write([]byte) (int, error) }
		var err error
		if p.filename != "" {
			w, err = mw.CreateFormFile(p.name, p.filename)
		} else {
			w, err = mw.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(p.value))
	}
	if !truncate {
		_ = mw.Close()
	}
	return buf.Bytes(), mw.Boundary()
}

// The one upload-form reader serves both front-ends; each words its problems in its own format,
// exactly as the contracts (and the SDKs) expect.
func TestUploadFormProblemsInEachFormat(t *testing.T) {
	file := formPart{"file", "a.txt", "hello"}
	tags := make([]formPart, maxTags+1)
	for i := range tags {
		tags[i] = formPart{name: "tags[]", value: "t"}
	}
	long := strings.Repeat("x", maxFieldBytes+1)
	for _, tc := range []struct {
		name     string
		v1Parts  []formPart // nil: same as v2Parts
		v2Parts  []formPart
		truncate bool
		v1Code   int
		v1Msg    string
		v2Msg    string
	}{
		{name: "two file parts", v2Parts: []formPart{file, file}, v1Code: 22,
			v1Msg: "the upload has more than one file part", v2Msg: msgOneFilePart},
		{name: "repeated single field", v1Parts: []formPart{{name: "name", value: "a"}, {name: "name", value: "b"}, file},
			v2Parts: []formPart{{name: "title", value: "a"}, {name: "title", value: "b"}, file}, v1Code: 22,
			v1Msg: "the upload has more than one name part", v2Msg: "title must be string"},
		{name: "no file part", v2Parts: []formPart{{name: "tags", value: "x"}}, v1Code: 14,
			v1Msg: "the upload has no file part", v2Msg: msgContentRequired},
		{name: "too many tags", v2Parts: append([]formPart{file}, tags...), v1Code: 15,
			v1Msg: fmt.Sprintf("an upload has at most %d tags", maxTags), v2Msg: fmt.Sprintf("tags must NOT have more than %d items", maxTags)},
		{name: "field too long", v2Parts: []formPart{file, {name: "tags", value: long}}, v1Code: 15,
			v1Msg: fmt.Sprintf("the tags part exceeds %d bytes", maxFieldBytes), v2Msg: fmt.Sprintf("the tags part exceeds %d bytes", maxFieldBytes)},
		{name: "filename too long", v2Parts: []formPart{{"file", long, "x"}}, v1Code: 15,
			v1Msg: fmt.Sprintf("the filename of the file part exceeds %d bytes", maxFilenameBytes),
			v2Msg: fmt.Sprintf("the filename of the file part exceeds %d bytes", maxFilenameBytes)},
		{name: "truncated body", v2Parts: []formPart{{name: "tags", value: "x"}}, truncate: true, v1Code: 22,
			v1Msg: "the multipart body is malformed or truncated", v2Msg: "the multipart body is malformed or truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := coretest.New(t, coretest.Options{})
			for _, api := range []string{"files/v1", "api/v2"} {
				parts, form := tc.v2Parts, enmeshedForm(time.Now())
				if api == "files/v1" {
					form = filesV1Form
					if tc.v1Parts != nil {
						parts = tc.v1Parts
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
					if e := filesV1ErrorFor(err); e.status != 400 || e.Code != tc.v1Code || e.Message != tc.v1Msg {
						t.Errorf("files/v1: %d %d %q, want 400 %d %q", e.status, e.Code, e.Message, tc.v1Code, tc.v1Msg)
					}
					continue
				}
				if e := enmeshedErrorFor(err, "File"); e.status != 400 || e.code != codeInvalidPropertyValue || e.message != tc.v2Msg {
					t.Errorf("api/v2: %d %s %q, want 400 %s %q", e.status, e.code, e.message, codeInvalidPropertyValue, tc.v2Msg)
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
		parts []formPart
		want  string
	}{
		{"files/v1 name part first wins", filesV1Form, []formPart{{name: "name", value: "n"}, {"file", "f.txt", "x"}}, "n"},
		{"files/v1 name part after the file wins", filesV1Form, []formPart{{"file", "f.txt", "x"}, {name: "name", value: "n"}}, "n"},
		{"files/v1 empty name part wins", filesV1Form, []formPart{{name: "name", value: ""}, {"file", "f.txt", "x"}}, ""},
		{"files/v1 filename without a name part", filesV1Form, []formPart{{"file", "f.txt", "x"}}, "f.txt"},
		{"api/v2 filename", enmeshedForm(time.Now()), []formPart{{name: "file", value: "plain field"}, {"file", "f.txt", "x"}}, "f.txt"},
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
