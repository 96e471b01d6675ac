package httpapi

import (
	"mime"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn/core"
)

// download serves GET and HEAD /files/v1/{token}/file (serveFile): a failure is either a proper
// JSON error (nothing sent yet) or an aborted connection (bytes already sent).
func (v *filesV1API) download(w http.ResponseWriter, r *http.Request) {
	info, content, err := v.files.OpenFile(r.Context(), r.PathValue("token"))
	if err == nil {
		err = v.downloads.serveFile(w, r, v.log, info, content, v.disposition(info))
	}
	if err != nil {
		v.fail(w, r, err)
	}
}

// disposition decides inline versus attachment from the service settings: a download is forced
// (attachment) unless the file's mimetype exactly matches an entry of
// disableForceDownloadForMimeTypes, where "*/*" matches every type.
func (v *filesV1API) disposition(info core.FileInfo) string {
	kind := "attachment"
	for _, mt := range v.files.CurrentSettings().DisableForceDownloadForMimeTypes {
		if mt == "*/*" || strings.EqualFold(mt, info.MimeType) {
			kind = "inline"
			break
		}
	}
	return formatDisposition(kind, info.Name)
}

// contentDisposition is the attachment form of the header.
func contentDisposition(info core.FileInfo) string { return formatDisposition("attachment", info.Name) }

// formatDisposition builds the header per RFC 6266: a quoted ASCII filename that every client
// understands, plus filename* (RFC 8187) carrying the real UTF-8 name whenever the fallback had to
// change it.
func formatDisposition(kind, name string) string {
	if name == "" {
		return kind
	}
	fallback := asciiFilename(name)
	header := kind + `; filename="` + fallback + `"`
	if fallback != name {
		// For non-ASCII values FormatMediaType emits RFC 2231 encoding: filename*=utf-8''...
		ext := mime.FormatMediaType(kind, map[string]string{"filename": strings.ToValidUTF8(name, "_")})
		if _, encoded, ok := strings.Cut(ext, "; "); ok && strings.HasPrefix(encoded, "filename*=utf-8''") {
			header += "; " + encoded
		}
	}
	return header
}

// asciiFilename keeps printable ASCII except the quote and backslash, whose escaping browsers
// disagree on, so the quoted fallback is always valid and always read the same way.
func asciiFilename(name string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, name)
}
