package httpapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/coretest"
)

// TestSettings: reading and changing the settings need their permissions; a change applies to the
// next download's Content-Disposition.
func TestSettings(t *testing.T) {
	e := newEnv(t)
	e.core.AddKey(t, "viewer", "key-viewer", core.PermViewFileServiceSettings)
	root := map[string]string{"X-API-KEY": coretest.RootKey}
	png := e.addFile(t, "pic.png", "image/png", "\x89PNG")

	for _, tc := range []struct {
		name, method, key, body string
		status, code            int
		errName                 string
	}{
		{"no key", http.MethodGet, "", "", 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION"},
		{"unknown key", http.MethodGet, "nope", "", 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION"},
		{"read without the permission", http.MethodGet, keyAlice, "", 401, 10, "NO_PERMISSION_EXCEPTION"},
		{"change with only the view permission", http.MethodPut, "key-viewer", `{"disableForceDownloadForMimeTypes":[]}`, 401, 10, "NO_PERMISSION_EXCEPTION"},
		{"wrong type", http.MethodPut, coretest.RootKey, `{"disableForceDownloadForMimeTypes":"image/png"}`, 400, 15, "FIELD_FORMAT_EXCEPTION"},
		{"malformed JSON", http.MethodPut, coretest.RootKey, `{`, 400, 22, "BODY_FORMAT_EXCEPTION"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := map[string]string{}
			if tc.key != "" {
				header["X-API-KEY"] = tc.key
			}
			wantError(t, e.do(t, tc.method, "/files/v1/settings", strings.NewReader(tc.body), header), tc.status, tc.code, tc.errName)
		})
	}

	res := e.do(t, http.MethodGet, "/files/v1/settings", nil, map[string]string{"X-API-KEY": "key-viewer"})
	if res.status != 200 || len(jsonObject(t, res.body, "disableForceDownloadForMimeTypes", "updateTimestamp")["disableForceDownloadForMimeTypes"].([]any)) != 0 {
		t.Fatalf("initial settings = %d %s", res.status, res.body)
	}
	if cd := e.do(t, http.MethodGet, "/files/v1/"+png+"/file", nil, nil).header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") {
		t.Fatalf("Content-Disposition before the change = %q, want an attachment", cd)
	}
	e.core.Clock.Advance(time.Hour)
	res = e.do(t, http.MethodPut, "/files/v1/settings", strings.NewReader(`{"disableForceDownloadForMimeTypes":["image/png"]}`), root)
	if res.status != 200 || jsonObject(t, res.body, "affectedRecords")["affectedRecords"] != 1.0 {
		t.Fatalf("update = %d %s", res.status, res.body)
	}
	m := jsonObject(t, e.do(t, http.MethodGet, "/files/v1/settings", nil, root).body, "disableForceDownloadForMimeTypes", "updateTimestamp")
	if types := m["disableForceDownloadForMimeTypes"].([]any); len(types) != 1 || types[0] != "image/png" || m["updateTimestamp"] != "2026-02-09T12:03:27.179Z" {
		t.Fatalf("settings after the update = %v", m)
	}
	if cd := e.do(t, http.MethodGet, "/files/v1/"+png+"/file", nil, nil).header.Get("Content-Disposition"); strings.HasPrefix(cd, "attachment") {
		t.Fatalf("Content-Disposition after the change = %q, want inline", cd)
	}
}

// TestListFiles: the paged list needs VIEW_FILES, shows every live file with its tokens, and
// refuses bad RQL with code 19.
func TestListFiles(t *testing.T) {
	e := newEnv(t)
	full := e.addFile(t, "a.txt", "text/plain", "a")
	readToken(t, e, full)
	e.upload(t, "bob", core.FileAttrs{Name: "b.txt"}, "b")
	admin := map[string]string{"X-API-KEY": keyAdmin}

	wantError(t, e.do(t, http.MethodGet, "/files/v1/", nil, nil), 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION")
	wantError(t, e.do(t, http.MethodGet, "/files/v1/", nil, map[string]string{"X-API-KEY": keyAlice}), 401, 10, "NO_PERMISSION_EXCEPTION")
	wantError(t, e.do(t, http.MethodGet, "/files/v1/?limit(", nil, admin), 400, 19, "INVALID_RQL_EXCEPTION")

	res := e.do(t, http.MethodGet, "/files/v1/?sort(+name)", nil, admin)
	if res.status != 200 {
		t.Fatalf("list = %d %s", res.status, res.body)
	}
	m := jsonObject(t, res.body, "page", "data")
	page := jsonObject(t, mustJSON(t, m["page"]), "total", "offset", "limit")
	if page["total"] != 2.0 || page["offset"] != 0.0 || page["limit"] != 20.0 {
		t.Fatalf("page = %v", page)
	}
	data := m["data"].([]any)
	if len(data) != 2 {
		t.Fatalf("data = %v", data)
	}
	first := jsonObject(t, mustJSON(t, data[0]), metadataKeys...)
	second := jsonObject(t, mustJSON(t, data[1]), metadataKeys...)
	if first["name"] != "a.txt" || len(first["tokens"].([]any)) != 2 || second["name"] != "b.txt" || second["creatorId"] != "bob" {
		t.Fatalf("data = %v", data)
	}
}

// TestRQLHugeOffsetWithSortGivesAnEmptyPage: limit() accepts any offset an int holds, as the
// contract refuses none; one past every match, up to math.MaxInt, is an empty page with the true
// total, sorted or not. offset+limit once wrapped negative there, and with sort() the pager
// indexed its empty heap: a 500 for harmless RQL.
func TestRQLHugeOffsetWithSortGivesAnEmptyPage(t *testing.T) {
	e := newEnv(t)
	e.addFile(t, "a.txt", "text/plain", "a")
	admin := map[string]string{"X-API-KEY": keyAdmin}
	for _, query := range []string{
		"sort(+name)&limit(1,9223372036854775807)",
		"sort(-size,+name)&limit(50,9223372036854775800)",
		"limit(1,9223372036854775807)",
	} {
		t.Run(query, func(t *testing.T) {
			res := e.do(t, http.MethodGet, "/files/v1/?"+query, nil, admin)
			if res.status != http.StatusOK {
				t.Fatalf("list = %d %s", res.status, res.body)
			}
			var got struct {
				Page struct {
					Total  int `json:"total"`
					Offset int `json:"offset"`
				} `json:"page"`
				Data []json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(res.body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Page.Total != 1 || got.Page.Offset < math.MaxInt-50 || len(got.Data) != 0 {
				t.Fatalf("page %+v with %d entries, want total 1, the offset asked for and no entries", got.Page, len(got.Data))
			}
		})
	}
}
