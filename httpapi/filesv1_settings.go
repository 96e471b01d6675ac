package httpapi

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/cairn-dev/cairn/core"
)

// settingsJSON is the contract's settings document.
type settingsJSON struct {
	DisableForceDownloadForMimeTypes []string `json:"disableForceDownloadForMimeTypes"`
	UpdateTimestamp                  string   `json:"updateTimestamp,omitempty"`
}

func (v *filesV1API) getSettings(w http.ResponseWriter, r *http.Request) {
	p, err := keyPrincipal(r, v.files)
	if err != nil {
		v.fail(w, r, err)
		return
	}
	st, err := v.files.Settings(r.Context(), p)
	if err != nil {
		v.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, settingsDocument(st))
}

func settingsDocument(st core.Settings) settingsJSON {
	doc := settingsJSON{DisableForceDownloadForMimeTypes: st.DisableForceDownloadForMimeTypes}
	if doc.DisableForceDownloadForMimeTypes == nil {
		doc.DisableForceDownloadForMimeTypes = []string{}
	}
	if !st.UpdatedAt.IsZero() {
		doc.UpdateTimestamp = filesV1Timestamp(st.UpdatedAt)
	}
	return doc
}

// putSettings applies a partial update: fields absent from the body keep their value.
func (v *filesV1API) putSettings(w http.ResponseWriter, r *http.Request) {
	p, err := keyPrincipal(r, v.files)
	if err != nil {
		v.fail(w, r, err)
		return
	}
	patch, err := parseSettingsPatch(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		v.fail(w, r, err)
		return
	}
	if _, err := v.files.UpdateSettings(r.Context(), p, patch); err != nil {
		v.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, affectedRecords{AffectedRecords: 1})
}

// maxJSONBody bounds the small JSON bodies of settings and token requests.
const maxJSONBody = 64 << 10

// parseSettingsPatch reads {"disableForceDownloadForMimeTypes": [...]}; unknown keys are ignored
// (the reference service's own settings may carry more), wrong types are 15, bad JSON is 22.
func parseSettingsPatch(body io.Reader) (core.SettingsPatch, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return core.SettingsPatch{}, errBodyFormat("the body could not be read or is too large")
	}
	var raw map[string]json.RawMessage
	if len(b) == 0 {
		return core.SettingsPatch{}, errEmptyBody("a JSON settings document is required")
	}
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return core.SettingsPatch{}, errBodyFormat("the body is not a JSON object")
	}
	var patch core.SettingsPatch
	if v, ok := raw["disableForceDownloadForMimeTypes"]; ok && !isJSONNull(v) {
		var types []string
		if err := json.Unmarshal(v, &types); err != nil {
			return core.SettingsPatch{}, errFieldFormat("disableForceDownloadForMimeTypes must be an array of strings")
		}
		patch.DisableForceDownloadForMimeTypes = &types
	}
	return patch, nil
}
