package httpapi

import (
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/cairn-dev/cairn/core"
)

// Validation messages of the upload, worded as the Connector's runtime words them.
const (
	msgContentRequired  = "must have required property 'content': send the file as the multipart field 'file'"
	msgExpiresAtFormat  = "expiresAt must match ISO8601 datetime format"
	msgExpiresAtFuture  = "'expiresAt' must be in the future"
	msgOneFilePart      = "file must be given exactly once"
	defaultFileMimetype = "text/plain" // what RFC 7578 (and the Connector's parser) assume for a part
)

// upload serves POST /api/v2/Files/Own: a multipart body streamed into core, never buffered. The
// size limit is enforced while streaming, as on /files/v1. Any failure aborts the upload.
func (a *enmeshedAPI) upload(w http.ResponseWriter, r *http.Request, p core.Principal, _ string) error {
	body, bodyDone, err := a.bounds.body(w, r, a.svc.MaxFileSize()+uploadOverhead)
	if err != nil {
		return err
	}
	defer bodyDone()
	release, err := a.bounds.acquire()
	if err != nil {
		return err
	}
	defer release() // deferred before the abort below, so it runs after it
	boundary, err := multipartBoundary(r.Header.Get("Content-Type"))
	if err != nil {
		return err // without a multipart body there is no file, which is how the Connector sees it too
	}
	// The upload begins in core only when the file part arrives, so a body that fails validation
	// before it costs core nothing.
	var up core.Upload
	defer func() {
		if up != nil {
			up.Abort() // a no-op after Commit
		}
	}()
	attrs, err := readUploadForm(multipart.NewReader(body, boundary), enmeshedForm(time.Now()),
		func() (core.Upload, error) {
			var err error
			up, err = a.svc.BeginUpload(r.Context(), p)
			return up, err
		})
	if err != nil {
		return err
	}
	info, _, err := up.Commit(r.Context(), attrs)
	if err != nil {
		return err
	}
	dto, err := a.fileDTO(info, p)
	if err != nil {
		return err
	}
	writeResult(w, http.StatusCreated, dto)
	return nil
}

// enmeshedForm is the Connector's upload form: the file part (named file, with a filename; its
// filename names the file), title, description and expiresAt at most once each (the Connector's
// parser would make a repeat an array, which its schema refuses), and tags.
func enmeshedForm(now time.Time) uploadForm {
	fields := map[string]func(*core.FileAttrs, string) error{}
	for _, name := range []string{"title", "description", "expiresAt"} {
		fields[name] = func(attrs *core.FileAttrs, v string) error { return setUploadAttr(attrs, name, v, now) }
	}
	return uploadForm{
		fileNeedsFilename: true,
		fields:            fields,
		filename:          func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") },
		mimeType:          partMimetype,
	}
}

// setUploadAttr validates and stores one text attribute of the upload.
func setUploadAttr(attrs *core.FileAttrs, name, v string, now time.Time) error {
	switch name {
	case "title":
		attrs.Title = v
	case "description":
		attrs.Description = v
	case "expiresAt":
		t, ok := parseISO8601(v)
		if !ok {
			return invalidProperty(msgExpiresAtFormat)
		}
		if !t.After(now) {
			return invalidProperty(msgExpiresAtFuture)
		}
		attrs.ExpiresAt = t
	}
	return nil
}

// partMimetype reduces a part's Content-Type to lower-case type/subtype, text/plain when it has
// none or an unusable one.
func partMimetype(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return defaultFileMimetype
	}
	return mt
}
