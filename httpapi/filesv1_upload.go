package httpapi

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/cairn-dev/cairn/core"
)

const (
	// maxFieldBytes bounds each non-file part (name, a tag, an ignored field).
	maxFieldBytes = 64 << 10
	// maxTags bounds the number of tag parts of one upload.
	maxTags = 1000
	// uploadOverhead is what the whole body may exceed MaxFileSize by: multipart framing plus the
	// text parts. Without it, non-file parts could stream forever.
	uploadOverhead = 1 << 20
)

func (v *filesV1) upload(w http.ResponseWriter, r *http.Request) {
	md, err := v.receive(w, r)
	if err != nil {
		v.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, md)
}

// receive streams one multipart upload into core: BeginUpload, the file part through ReadFrom, then
// Commit with the attributes of every part (tags usually follow the file). The file is never
// buffered here, and every failure after BeginUpload aborts the upload.
func (v *filesV1) receive(w http.ResponseWriter, r *http.Request) (fileMetadata, error) {
	p, err := principal(r, v.files)
	if err == nil {
		err = v.files.AuthorizeUpload(p)
	}
	if err != nil {
		return fileMetadata{}, err
	}
	// A declared length over the limit is refused unread; chunked bodies (the SDK sends those) meet
	// the limit while streaming. The slot is held until the answer, Abort included.
	body, err := v.bounds.body(w, r, v.files.MaxFileSize()+uploadOverhead)
	if err != nil {
		return fileMetadata{}, err
	}
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
	up, err := v.files.BeginUpload(r.Context(), p)
	if err != nil {
		return fileMetadata{}, err
	}
	defer up.Abort() // a no-op after Commit

	attrs, err := readParts(multipart.NewReader(body, boundary), up)
	if err != nil {
		return fileMetadata{}, err
	}
	info, tokens, err := up.Commit(r.Context(), attrs)
	if err != nil {
		return fileMetadata{}, err
	}
	return metadataJSON(info, tokens), nil
}

// multipartBoundary checks that the body is multipart/form-data and returns its boundary.
func multipartBoundary(contentType string) (string, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return "", errBodyFormat("the upload must be multipart/form-data")
	}
	if params["boundary"] == "" {
		return "", errBodyFormat("the multipart body has no boundary")
	}
	return params["boundary"], nil
}

// readParts walks every part of the upload, in any order, streaming the one file part into up and
// collecting the attributes for Commit.
func readParts(mr *multipart.Reader, up core.Upload) (core.FileAttrs, error) {
	var (
		attrs            core.FileAttrs
		sawFile, sawName bool
		filename         string
	)
	for {
		part, err := mr.NextPart()
		if err == io.EOF { // only a bare io.EOF is the closing delimiter; a wrapped one is truncation
			break
		}
		if err != nil {
			return core.FileAttrs{}, bodyError(err)
		}
		switch part.FormName() {
		case "file":
			if sawFile {
				return core.FileAttrs{}, errBodyFormat("the upload has more than one file part")
			}
			sawFile = true
			filename = part.FileName()
			if err := checkFilename(filename); err != nil {
				return core.FileAttrs{}, err
			}
			// core normalises it, and derives one when it is empty or unusable.
			attrs.MimeType = strings.TrimSpace(part.Header.Get("Content-Type"))
			src := &sourceReader{r: part}
			if _, err := up.ReadFrom(src); err != nil {
				if src.err != nil { // the body failed (truncated, too large, client gone), not core
					return core.FileAttrs{}, bodyError(src.err)
				}
				return core.FileAttrs{}, err
			}
		case "name":
			if sawName {
				return core.FileAttrs{}, errBodyFormat("the upload has more than one name part")
			}
			sawName = true
			if attrs.Name, err = readField(part, "name"); err != nil {
				return core.FileAttrs{}, err
			}
		case "tags[]", "tags":
			if len(attrs.Tags) == maxTags {
				return core.FileAttrs{}, errFieldFormat(fmt.Sprintf("an upload has at most %d tags", maxTags))
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
		return core.FileAttrs{}, errMissingFields("the upload has no file part")
	}
	if !sawName {
		attrs.Name = filename
	}
	return attrs, nil
}

// readField reads one text part, bounded to maxFieldBytes and required to be UTF-8 (it ends up in
// JSON).
func readField(part *multipart.Part, what string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
	if err != nil {
		return "", bodyError(err)
	}
	if len(b) > maxFieldBytes {
		return "", errFieldFormat(fmt.Sprintf("the %s part exceeds %d bytes", what, maxFieldBytes))
	}
	if !utf8.Valid(b) {
		return "", errFieldFormat(fmt.Sprintf("the %s part is not UTF-8 text", what))
	}
	return string(b), nil
}

// bodyError classifies a failure to read the request body: over the body limit is 2610 (the file
// is what makes a body large), a body idle past its deadline says so, anything else is a malformed
// or truncated multipart body.
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return err
	}
	if errors.Is(err, errStalled) {
		return errBodyFormat("the request body sent no data for too long")
	}
	return errBodyFormat("the multipart body is malformed or truncated")
}

// sourceReader remembers the error the request body returned, so that a failed ReadFrom can be
// blamed on the client or on core.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}
