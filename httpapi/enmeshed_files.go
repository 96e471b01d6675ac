package httpapi

import (
	"cmp"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/cairn-dev/cairn/core"
)

func (a *enmeshedAPI) getFile(w http.ResponseWriter, r *http.Request, p core.Principal, mediaType string) error {
	id, err := fileIDParam(r)
	if err != nil {
		return err
	}
	f, err := a.svc.FileByID(r.Context(), p, id)
	if err != nil {
		return err
	}
	dto, err := a.fileDTO(f, p)
	if err != nil {
		return err
	}
	if mediaType == mediaPNG {
		return writeQR(w, http.StatusOK, dto.TruncatedReference, f.ID)
	}
	writeResult(w, http.StatusOK, dto)
	return nil
}

// fileDTO renders f with its stable shareable reference.
func (a *enmeshedAPI) fileDTO(f core.FileInfo, p core.Principal) (fileDTO, error) {
	ref, err := a.svc.FileReference(f)
	if err != nil {
		return fileDTO{}, err
	}
	return newFileDTO(f, p, ref), nil
}

// listFiles serves GET /api/v2/Files (ownOnly false) and /api/v2/Files/Own. The filter is parsed
// before the listing, so a bad query costs no read.
func (a *enmeshedAPI) listFiles(ownOnly bool) func(http.ResponseWriter, *http.Request, core.Principal, string) error {
	return func(w http.ResponseWriter, r *http.Request, p core.Principal, _ string) error {
		filter, err := parseFileFilter(r.URL.RawQuery)
		if err != nil {
			return err
		}
		files, err := a.svc.ListFiles(r.Context(), p, ownOnly)
		if err != nil {
			return err
		}
		// A stable order, so that paging through a UI or comparing two answers is meaningful.
		slices.SortFunc(files, func(x, y core.FileInfo) int {
			return cmp.Or(x.CreatedAt.Compare(y.CreatedAt), strings.Compare(x.ID, y.ID))
		})
		out := make([]fileDTO, 0, len(files))
		for _, f := range files {
			if filter.match(f) {
				dto, err := a.fileDTO(f, p)
				if err != nil {
					return err
				}
				out = append(out, dto)
			}
		}
		writeResult(w, http.StatusOK, out)
		return nil
	}
}

func (a *enmeshedAPI) deleteFile(w http.ResponseWriter, r *http.Request, p core.Principal, _ string) error {
	id, err := fileIDParam(r)
	if err != nil {
		return err
	}
	if err := a.svc.DeleteFileByID(r.Context(), p, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// download streams the file's bytes with http.ServeContent (Range, HEAD, conditional requests)
// over the same content adapter as /files/v1: a failure before the first byte is still an error
// envelope, a failure after it aborts the connection.
func (a *enmeshedAPI) download(w http.ResponseWriter, r *http.Request, p core.Principal, _ string) error {
	id, err := fileIDParam(r)
	if err != nil {
		return err
	}
	info, content, err := a.svc.OpenFileByID(r.Context(), p, id)
	if err != nil {
		return err
	}
	mimetype := info.MimeType
	if mimetype == "" {
		mimetype = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", mimetype) // set, so ServeContent never sniffs
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", "attachment;filename="+percentEncode(info.Name))
	if info.ETag != "" {
		h.Set("ETag", `"`+info.ETag+`"`)
	}
	normalizeRange(r, info.Size) // see DESIGN.md: multi-range is served whole, "-0" is 416
	src := newContentReader(r.Context(), content, info.Size)
	defer src.Close()
	dw := &deferredHeaderWriter{ResponseWriter: w}
	http.ServeContent(dw, r, "", info.UpdatedAt, src)
	switch {
	case src.err == nil:
		dw.flush()
		return nil
	case !dw.wroteBody:
		clear(h)
		return src.err
	default:
		key, _ := apiKey(r)
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "download aborted after the response started",
			slog.String("route", r.Pattern), slog.String("error", redact(src.err.Error(), key)))
		panic(http.ErrAbortHandler)
	}
}

// percentEncode escapes every byte outside A-Z a-z 0-9 - _ . ~ (a space is %20, not +), so the
// filename can neither break the header nor need quoting.
func percentEncode(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
