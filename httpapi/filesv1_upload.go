package httpapi

import (
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn/core"
)

func (v *filesV1API) upload(w http.ResponseWriter, r *http.Request) {
	md, err := v.receive(w, r)
	if err != nil {
		v.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, md)
}

// filesV1Form is the contract's upload form: the file part (any part named file), an optional
// name that wins over its filename, and tags. core normalises the file part's Content-Type, and
// derives one when it is empty or unusable.
var filesV1Form = uploadForm{
	fields:    map[string]func(*core.FileAttrs, string) error{"name": func(a *core.FileAttrs, v string) error { a.Name = v; return nil }},
	nameField: "name",
	filename:  func(s string) string { return s },
	mimeType:  strings.TrimSpace,
}

// receive streams one multipart upload into core: BeginUpload, the file part through ReadFrom, then
// Commit with the attributes of every part (tags usually follow the file). The file is never
// buffered here, and every failure after BeginUpload aborts the upload.
func (v *filesV1API) receive(w http.ResponseWriter, r *http.Request) (fileMetadata, error) {
	p, err := principal(r, v.files)
	if err == nil {
		err = v.files.AuthorizeUpload(p)
	}
	if err != nil {
		return fileMetadata{}, err
	}
	// A declared length over the limit is refused unread; chunked bodies (the SDK sends those) meet
	// the limit while streaming. The slot is held until the answer, Abort included.
	body, bodyDone, err := v.bounds.body(w, r, v.files.MaxFileSize()+uploadOverhead)
	if err != nil {
		return fileMetadata{}, err
	}
	defer bodyDone()
	release, err := v.bounds.acquire()
	if err != nil {
		return fileMetadata{}, err
	}
	defer release()
	if _, err := body.Peek(1); errors.Is(err, io.EOF) {
		return fileMetadata{}, errEmptyBody("the upload has no body")
	}
	boundary, err := multipartBoundary(r.Header.Get("Content-Type"))
	if err != nil {
		return fileMetadata{}, err
	}
	// /files/v1 begins the upload before it reads a part, so core's refusals (no cluster config
	// yet, say) come before the form's.
	up, err := v.files.BeginUpload(r.Context(), p)
	if err != nil {
		return fileMetadata{}, err
	}
	defer up.Abort() // a no-op after Commit

	attrs, err := readUploadForm(multipart.NewReader(body, boundary), filesV1Form,
		func() (core.Upload, error) { return up, nil })
	if err != nil {
		return fileMetadata{}, err
	}
	info, tokens, err := up.Commit(r.Context(), attrs)
	if err != nil {
		return fileMetadata{}, err
	}
	return metadataJSON(info, tokens), nil
}
