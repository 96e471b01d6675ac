package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/cairn-dev/cairn/core"
)

// AdminService is what the cluster administration routes need; *core.Service implements it.
type AdminService interface {
	Authenticate(ctx context.Context, apiKey string) (core.Principal, error)
	CreateAPIKey(ctx context.Context, p core.Principal, name string, perms []string) (core.APIKeyInfo, string, error)
	ListAPIKeys(ctx context.Context, p core.Principal) ([]core.APIKeyInfo, error)
	RevokeAPIKey(ctx context.Context, p core.Principal, id string) error
	RotateSigningKey(ctx context.Context, p core.Principal) error
	RemoveNode(ctx context.Context, p core.Principal, nodeID string) error
}

// adminAPI serves cairn's own administration routes under /v1, in the /files/v1 error format:
// API keys (MANAGE_API_KEYS) and the ephemeral-token signing key (MANAGE_CLUSTER).
type adminAPI struct {
	admin   AdminService
	filesV1 *filesV1API // for its error writer
	log     *slog.Logger
}

func (a *adminAPI) routes() []route {
	return append(a.keyringRoutes(), []route{ // admin_keyring.go
		{"/v1/apikeys", "/v1/apikeys", map[string]http.HandlerFunc{http.MethodGet: a.listKeys, http.MethodPost: a.createKey}},
		{"/v1/apikeys/{id}", "/v1/apikeys/{id}", map[string]http.HandlerFunc{http.MethodDelete: a.revokeKey}},
		{"/v1/signing-key/rotate", "/v1/signing-key/rotate", map[string]http.HandlerFunc{http.MethodPost: a.rotate}},
		{"/v1/nodes/{id}", "/v1/nodes/{id}", map[string]http.HandlerFunc{http.MethodDelete: a.removeNode}}, // admin_nodes.go
	}...)
}

// apiKeyJSON is an API key as the admin routes show it. Key (the secret) is set only on creation.
type apiKeyJSON struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
	CreatedAt   string   `json:"createdAt"`
	Key         string   `json:"key,omitempty"`
}

func keyJSON(k core.APIKeyInfo, secret string) apiKeyJSON {
	perms := k.Permissions
	if perms == nil {
		perms = []string{}
	}
	return apiKeyJSON{ID: k.ID, Name: k.Name, Permissions: perms, CreatedAt: filesV1Timestamp(k.CreatedAt), Key: secret}
}

func (a *adminAPI) principal(w http.ResponseWriter, r *http.Request) (core.Principal, bool) {
	p, err := keyPrincipal(r, a.admin)
	if err != nil {
		a.filesV1.fail(w, r, err)
		return core.Principal{}, false
	}
	return p, true
}

func (a *adminAPI) createKey(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	var req struct {
		Name        string   `json:"name"`
		Permissions []string `json:"permissions"`
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		a.filesV1.fail(w, r, errBodyFormat("the body could not be read or is too large"))
		return
	}
	if err := json.Unmarshal(b, &req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			a.filesV1.fail(w, r, errFieldFormat("name must be a string and permissions an array of strings"))
		} else {
			a.filesV1.fail(w, r, errBodyFormat("the body is not valid JSON"))
		}
		return
	}
	info, secret, err := a.admin.CreateAPIKey(r.Context(), p, req.Name, req.Permissions)
	if err != nil {
		a.filesV1.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, keyJSON(info, secret))
}

func (a *adminAPI) listKeys(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	keys, err := a.admin.ListAPIKeys(r.Context(), p)
	if err != nil {
		a.filesV1.fail(w, r, err)
		return
	}
	out := make([]apiKeyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyJSON(k, ""))
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": out})
}

func (a *adminAPI) revokeKey(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	if err := a.admin.RevokeAPIKey(r.Context(), p, r.PathValue("id")); err != nil {
		a.filesV1.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, affectedRecords{AffectedRecords: 1})
}

func (a *adminAPI) rotate(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	if err := a.admin.RotateSigningKey(r.Context(), p); err != nil {
		a.filesV1.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, affectedRecords{AffectedRecords: 1})
}
