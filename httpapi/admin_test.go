package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/coretest"
)

// TestAdminAPIKeys: keys are created, listed without their secrets and revoked through the real
// core; a created key authenticates at once and a revoked one nowhere, and the last key that can
// manage keys cannot go.
func TestAdminAPIKeys(t *testing.T) {
	e := startEnv(t, mounts{admin: true})
	root := map[string]string{"X-API-KEY": coretest.RootKey}

	for _, tc := range []struct {
		name, method, path, key, body string
		status, code                  int
		errName                       string
	}{
		{"no key", http.MethodGet, "/v1/apikeys", "", "", 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION"},
		{"without MANAGE_API_KEYS", http.MethodGet, "/v1/apikeys", keyAdmin, "", 401, 10, "NO_PERMISSION_EXCEPTION"},
		{"unknown permission", http.MethodPost, "/v1/apikeys", coretest.RootKey, `{"name":"x","permissions":["ROOT"]}`, 400, 15, "FIELD_FORMAT_EXCEPTION"},
		{"permissions not an array", http.MethodPost, "/v1/apikeys", coretest.RootKey, `{"permissions":"VIEW_FILES"}`, 400, 15, "FIELD_FORMAT_EXCEPTION"},
		{"malformed JSON", http.MethodPost, "/v1/apikeys", coretest.RootKey, `{`, 400, 22, "BODY_FORMAT_EXCEPTION"},
		{"unknown id", http.MethodDelete, "/v1/apikeys/key_nope", coretest.RootKey, "", 404, 16, "RESOURCE_UNKNOWN_EXCEPTION"},
		{"the last key that manages keys", http.MethodDelete, "/v1/apikeys/root", coretest.RootKey, "", 409, 1, "CONFLICT_EXCEPTION"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			header := map[string]string{}
			if tc.key != "" {
				header["X-API-KEY"] = tc.key
			}
			wantError(t, e.do(t, tc.method, tc.path, strings.NewReader(tc.body), header), tc.status, tc.code, tc.errName)
		})
	}

	res := e.do(t, http.MethodPost, "/v1/apikeys", strings.NewReader(`{"name":"settings reader","permissions":["VIEW_FILE_SERVICE_SETTINGS"]}`), root)
	if res.status != http.StatusCreated {
		t.Fatalf("create = %d %s", res.status, res.body)
	}
	created := jsonObject(t, res.body, "id", "name", "permissions", "createdAt", "key")
	secret, id := created["key"].(string), created["id"].(string)
	if created["name"] != "settings reader" || created["createdAt"] != "2026-02-09T11:03:27.179Z" {
		t.Fatalf("created = %v", created)
	}
	reader := map[string]string{"X-API-KEY": secret}
	if r := e.do(t, http.MethodGet, "/files/v1/settings", nil, reader); r.status != http.StatusOK {
		t.Fatalf("the new key reads the settings: %d %s", r.status, r.body)
	}

	var list struct {
		Data []map[string]any `json:"data"`
	}
	res = e.do(t, http.MethodGet, "/v1/apikeys", nil, root)
	if res.status != http.StatusOK {
		t.Fatalf("list = %d %s", res.status, res.body)
	}
	if err := json.Unmarshal(res.body, &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range list.Data {
		jsonObject(t, mustJSON(t, k), "id", "name", "permissions", "createdAt") // never the secret
		ids = append(ids, k["id"].(string))
	}
	slices.Sort(ids)
	if want := []string{"admin", "alice", "bob", id, "root"}; !slices.Equal(ids, slices.Sorted(slices.Values(want))) {
		t.Fatalf("listed %v, want %v", ids, want)
	}

	res = e.do(t, http.MethodDelete, "/v1/apikeys/"+id, nil, root)
	if res.status != http.StatusOK || jsonObject(t, res.body, "affectedRecords")["affectedRecords"] != 1.0 {
		t.Fatalf("revoke = %d %s", res.status, res.body)
	}
	wantError(t, e.do(t, http.MethodGet, "/files/v1/settings", nil, reader), 401, 104, "USER_NOT_AUTHENTICATED_EXCEPTION")
}

// TestAdminRotateAndRemoveNode: rotating the signing key (MANAGE_CLUSTER) ends every ephemeral
// token issued before; removing a node records its decommission.
func TestAdminRotateAndRemoveNode(t *testing.T) {
	e := startEnv(t, mounts{admin: true, enmeshed: true})
	root := map[string]string{"X-API-KEY": coretest.RootKey}
	f, _ := e.upload(t, "alice", core.FileAttrs{Name: "a.txt"}, "hello")
	tok, err := e.svc.CreateTokenByID(t.Context(), e.principals["alice"], f.ID, stackStart.AddDate(1, 0, 0), core.TokenEphemeral)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do(t, http.MethodGet, "/files/v1/"+tok.Secret+"/file", nil, nil); r.status != http.StatusOK || string(r.body) != "hello" {
		t.Fatalf("the ephemeral token before the rotation: %d %q", r.status, r.body)
	}

	wantError(t, e.do(t, http.MethodPost, "/v1/signing-key/rotate", nil, map[string]string{"X-API-KEY": keyAdmin}), 401, 10, "NO_PERMISSION_EXCEPTION")
	res := e.do(t, http.MethodPost, "/v1/signing-key/rotate", nil, root)
	if res.status != http.StatusOK || jsonObject(t, res.body, "affectedRecords")["affectedRecords"] != 1.0 {
		t.Fatalf("rotate = %d %s", res.status, res.body)
	}
	wantError(t, e.do(t, http.MethodGet, "/files/v1/"+tok.Secret+"/file", nil, nil), 400, 2605, "INVALID_TOKEN_EXCEPTION")

	wantError(t, e.do(t, http.MethodDelete, "/v1/nodes/bad%20id", nil, root), 400, 15, "FIELD_FORMAT_EXCEPTION")
	res = e.do(t, http.MethodDelete, "/v1/nodes/n9", nil, root)
	if res.status != http.StatusOK {
		t.Fatalf("remove node = %d %s", res.status, res.body)
	}
	if cfg, _ := e.core.FSM.Config(); !slices.Contains(cfg.RemovedNodes, "n9") {
		t.Fatalf("removed nodes = %v, want n9", cfg.RemovedNodes)
	}
}
