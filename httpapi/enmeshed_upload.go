package httpapi

import (
	"context"
	"fmt"
	"io"
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
	body, err := a.bounds.body(w, r, a.svc.MaxFileSize()+uploadOverhead)
	if err != nil {
		return err
	}
	release, err := a.bounds.acquire()
	if err != nil {
		return err
	}
	defer release() // deferred before the abort below, so it runs after it
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		// Without a multipart body there is no file, which is how the Connector sees it too.
		return invalidProperty(msgContentRequired)
	}
	rd := &v2UploadReader{svc: a.svc, p: p, now: time.Now()}
	defer rd.abort()
	attrs, err := rd.readParts(r.Context(), multipart.NewReader(body, params["boundary"]))
	if err != nil {
		return err
	}
	info, _, err := rd.up.Commit(r.Context(), attrs)
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

// v2UploadReader walks the parts of one upload. The upload in core begins only when the file part
// arrives, so a body that fails validation before it costs core nothing.
type v2UploadReader struct {
	svc EnmeshedService
	p   core.Principal
	now time.Time
	up  core.Upload
}

// abort ends an upload that was begun; it is a no-op after Commit.
func (u *v2UploadReader) abort() {
	if u.up != nil {
		u.up.Abort()
	}
}

// readParts streams the one file part into core and collects the attributes. It stops at the first
// failure, in the order the parts arrive; a missing file part is known, and reported, only at the
// end.
func (u *v2UploadReader) readParts(ctx context.Context, mr *multipart.Reader) (core.FileAttrs, error) {
	var (
		attrs   core.FileAttrs
		sawFile bool
		seen    = map[string]bool{}
	)
	for {
		part, err := mr.NextPart()
		if err == io.EOF { // only a bare io.EOF is the closing delimiter; a wrapped one is truncation
			break
		}
		if err != nil {
			return core.FileAttrs{}, bodyError(err)
		}
		name := part.FormName()
		// A part without a filename is a plain field, even when named "file", as in the Connector.
		if name == "file" && part.FileName() != "" {
			if sawFile {
				return core.FileAttrs{}, invalidProperty(msgOneFilePart)
			}
			sawFile = true
			if err := checkFilename(part.FileName()); err != nil {
				return core.FileAttrs{}, err
			}
			attrs.Name = strings.ToValidUTF8(part.FileName(), "\uFFFD")
			attrs.MimeType = partMimetype(part.Header.Get("Content-Type"))
			if err := u.stream(ctx, part); err != nil {
				return core.FileAttrs{}, err
			}
			continue
		}
		switch name {
		case "title", "description", "expiresAt":
			if seen[name] { // the Connector's parser makes a repeated field an array
				return core.FileAttrs{}, invalidProperty(name + " must be string")
			}
			seen[name] = true
			v, err := readField(part, name)
			if err != nil {
				return core.FileAttrs{}, err
			}
			if err := setUploadAttr(&attrs, name, v, u.now); err != nil {
				return core.FileAttrs{}, err
			}
		case "tags", "tags[]":
			if len(attrs.Tags) == maxTags {
				return core.FileAttrs{}, invalidProperty(fmt.Sprintf("tags must NOT have more than %d items", maxTags))
			}
			tag, err := readField(part, "tags")
			if err != nil {
				return core.FileAttrs{}, err
			}
			attrs.Tags = append(attrs.Tags, tag)
		default: // unknown fields are ignored, within the same bound as known ones
			if _, err := readField(part, "field"); err != nil {
				return core.FileAttrs{}, err
			}
		}
	}
	if !sawFile {
		return core.FileAttrs{}, invalidProperty(msgContentRequired)
	}
	return attrs, nil
}

// stream begins the upload in core and copies the file part into it.
func (u *v2UploadReader) stream(ctx context.Context, part io.Reader) error {
	up, err := u.svc.BeginUpload(ctx, u.p)
	if err != nil {
		return err
	}
	u.up = up
	src := &sourceReader{r: part}
	if _, err := up.ReadFrom(src); err != nil {
		if src.err != nil { // the body failed (truncated, too large, client gone), not core
			return bodyError(src.err)
		}
		return err
	}
	return nil
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
