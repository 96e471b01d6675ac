package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/cairn-dev/cairn/core"
)

// KeyringService manages the gossip keyring of every member; *core.Service implements it. An
// AdminService that also implements it gets the /v1/keyring routes.
type KeyringService interface {
	GossipKeys(ctx context.Context, p core.Principal, op, ref string) ([]core.MemberKeys, error)
}

// keyringRoutes are GET /v1/keyring (every member's keys, by fingerprint) and POST
// /v1/keyring/{install|use|remove} with {"key": "<base64 key or fingerprint>"}; MANAGE_CLUSTER.
func (a *adminAPI) keyringRoutes() []route {
	ks, ok := a.admin.(KeyringService)
	if !ok {
		return nil
	}
	list := func(w http.ResponseWriter, r *http.Request) { a.keyring(w, r, ks, core.KeyringList) }
	change := func(w http.ResponseWriter, r *http.Request) {
		switch op := r.PathValue("op"); op {
		case core.KeyringInstall, core.KeyringUse, core.KeyringRemove:
			a.keyring(w, r, ks, op)
		default:
			notFound(w, r)
		}
	}
	return []route{
		{"/v1/keyring", "/v1/keyring", map[string]http.HandlerFunc{http.MethodGet: list}},
		{"/v1/keyring/{op}", "/v1/keyring/{op}", map[string]http.HandlerFunc{http.MethodPost: change}},
	}
}

type keyringRequest struct {
	Key string `json:"key"`
}

func (a *adminAPI) keyring(w http.ResponseWriter, r *http.Request, ks KeyringService, op string) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	var req keyringRequest
	if op != core.KeyringList {
		dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.Key == "" {
			writeFilesV1Error(w, &filesV1Error{http.StatusBadRequest, 15, "FIELD_FORMAT_EXCEPTION", `want {"key": "<base64 key or fingerprint>"}`})
			return
		}
	}
	keys, err := ks.GossipKeys(r.Context(), p, op, req.Key)
	if err != nil {
		a.filesV1.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": keys})
}
