package httpapi

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"unicode/utf8"

	"github.com/cairn-dev/cairn/core"
)

// The multipart upload form, read the same way for both front-ends: one streaming reader
// (readUploadForm), one set of bounds, and neutral errors (formError) that each front-end maps to
// its own format.

const (
	// maxFieldBytes bounds each non-file part (name, a tag, an ignored field).
	maxFieldBytes = 64 << 10
	// maxFilenameBytes caps the filename of the file part like every other text field: the name
	// is stored in Raft, held in every node's memory and returned by every listing.
	maxFilenameBytes = maxFieldBytes
	// maxTags bounds the number of tag parts of one upload.
	maxTags = 1000
	// uploadOverhead is what the whole body may exceed MaxFileSize by: multipart framing plus the
	// text parts. Without it, non-file parts could stream forever.
	uploadOverhead = 1 << 20
)

// formProblem is what is wrong with an upload form.
type formProblem int

const (
	formNotMultipart  formProblem = iota // the body is not multipart/form-data with a boundary
	formMalformed                        // broken framing, a truncated body, a stalled body
	formFieldInvalid                     // a text part, the filename or the file's type too long, or not UTF-8
	formTooManyTags                      // more than maxTags tag parts
	formRepeatedFile                     // more than one file part
	formRepeatedField                    // a single-valued field given twice (formError.part)
	formNoFile                           // no file part at all
)

// formError is a malformed upload form found by the shared reader. It belongs to neither
// front-end: filesV1ErrorFor and enmeshedErrorFor each map the problem to their own code and wording. detail
// is this package's own text, never client input, so either may show it.
type formError struct {
	problem formProblem
	part    string // the part concerned (formRepeatedField)
	detail  string
}

func (e *formError) Error() string { return "upload form: " + e.detail }

func formErr(problem formProblem, detail string) error {
	return &formError{problem: problem, detail: detail}
}

// multipartBoundary checks that the body is multipart/form-data and returns its boundary.
func multipartBoundary(contentType string) (string, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return "", formErr(formNotMultipart, "the upload must be multipart/form-data")
	}
	if params["boundary"] == "" {
		return "", formErr(formNotMultipart, "the multipart body has no boundary")
	}
	return params["boundary"], nil
}

// uploadForm is one front-end's layout of the upload form; readUploadForm does the rest. Parts
// named "tags" or "tags[]" are tags on both; unknown parts are read (within the same bound) and
// ignored.
type uploadForm struct {
	// fileNeedsFilename makes a "file" part without a filename a plain, ignored field, as the
	// Connector's parser does; otherwise any part named "file" is the file.
	fileNeedsFilename bool
	// fields are the text parts allowed at most once, by name, with what stores a value (and may
	// refuse it in the front-end's own format). A repeat is formRepeatedField.
	fields map[string]func(attrs *core.FileAttrs, value string) error
	// nameField is the field that names the file; when the form has none or it is absent, the
	// file part's filename does.
	nameField string
	// filename and mimeType turn the file part's filename and Content-Type into what core gets.
	filename func(string) string
	mimeType func(string) string
}

// readUploadForm walks the parts of one upload in the order they arrive. It streams the one file
// part into the upload that begin returns (begin is called when that part arrives, so a form that
// fails before it costs core nothing unless the front-end began the upload itself) and collects
// the attributes for Commit. The first problem ends it; a missing file part is known only at the
// end. The caller owns the upload begin returns, and aborts it on failure.
func readUploadForm(mr *multipart.Reader, form uploadForm, begin func() (core.Upload, error)) (core.FileAttrs, error) {
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
		if name == "file" && (part.FileName() != "" || !form.fileNeedsFilename) {
			if sawFile {
				return core.FileAttrs{}, formErr(formRepeatedFile, "the upload has more than one file part")
			}
			sawFile = true
			filename := part.FileName()
			if len(filename) > maxFilenameBytes {
				return core.FileAttrs{}, formErr(formFieldInvalid,
					fmt.Sprintf("the filename of the file part exceeds %d bytes", maxFilenameBytes))
			}
			if form.nameField == "" || !seen[form.nameField] {
				attrs.Name = form.filename(filename)
			}
			contentType := part.Header.Get("Content-Type")
			if mt, _, err := mime.ParseMediaType(contentType); err == nil && len(mt) > core.MaxMimeTypeLen {
				return core.FileAttrs{}, formErr(formFieldInvalid,
					fmt.Sprintf("the Content-Type of the file part exceeds %d bytes", core.MaxMimeTypeLen))
			}
			attrs.MimeType = form.mimeType(contentType)
			up, err := begin()
			if err != nil {
				return core.FileAttrs{}, err
			}
			src := &sourceReader{r: part}
			if _, err := up.ReadFrom(src); err != nil {
				if src.err != nil { // the body failed (truncated, too large, client gone), not core
					return core.FileAttrs{}, bodyError(src.err)
				}
				return core.FileAttrs{}, err
			}
			continue
		}
		if set, ok := form.fields[name]; ok {
			if seen[name] {
				return core.FileAttrs{}, &formError{formRepeatedField, name, "the upload has more than one " + name + " part"}
			}
			seen[name] = true
			v, err := readField(part, name)
			if err != nil {
				return core.FileAttrs{}, err
			}
			if err := set(&attrs, v); err != nil {
				return core.FileAttrs{}, err
			}
			continue
		}
		switch name {
		case "tags", "tags[]":
			if len(attrs.Tags) == maxTags {
				return core.FileAttrs{}, formErr(formTooManyTags, fmt.Sprintf("an upload has at most %d tags", maxTags))
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
		return core.FileAttrs{}, formErr(formNoFile, "the upload has no file part")
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
		return "", formErr(formFieldInvalid, fmt.Sprintf("the %s part exceeds %d bytes", what, maxFieldBytes))
	}
	if !utf8.Valid(b) {
		return "", formErr(formFieldInvalid, fmt.Sprintf("the %s part is not UTF-8 text", what))
	}
	return string(b), nil
}

// bodyError classifies a failure to read the request body: over the body limit stays the
// http.MaxBytesError (both APIs answer it as too large: the file is what makes a body large), a
// body idle past its deadline says so, anything else is a malformed or truncated multipart body.
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return err
	}
	if errors.Is(err, errStalled) {
		return formErr(formMalformed, "the request body sent no data for too long")
	}
	return formErr(formMalformed, "the multipart body is malformed or truncated")
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
