package httpapi

import (
	"net/http"
	"net/url"
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
		// Creation order is stable, so that paging through a UI or comparing two answers is
		// meaningful; the scan gives it, and memory is the matching files' (the contract has no
		// paging).
		out := []fileDTO{}
		var dtoErr error
		if err := a.svc.ScanFiles(r.Context(), p, ownOnly, func(f core.FileInfo) bool {
			if !filter.match(f) {
				return true
			}
			dto, err := a.fileDTO(f, p)
			if err != nil {
				dtoErr = err
				return false
			}
			out = append(out, dto)
			return true
		}); err != nil {
			return err
		}
		if dtoErr != nil {
			return dtoErr
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

// download streams the file's bytes (serveFile, as /files/v1 does): a failure before the first
// byte is still an error envelope, a failure after it aborts the connection.
func (a *enmeshedAPI) download(w http.ResponseWriter, r *http.Request, p core.Principal, _ string) error {
	id, err := fileIDParam(r)
	if err != nil {
		return err
	}
	info, content, err := a.svc.OpenFileByID(r.Context(), p, id)
	if err != nil {
		return err
	}
	return a.downloads.serveFile(w, r, a.log, info, content, "attachment;filename="+percentEncode(info.Name))
}

// percentEncode escapes every byte outside A-Z a-z 0-9 - _ . ~ (a space is %20, not +), so the
// filename can neither break the header nor need quoting.
func percentEncode(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
