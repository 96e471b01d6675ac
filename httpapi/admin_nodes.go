package httpapi

import "net/http"

// removeNode serves DELETE /v1/nodes/{id}: decommission a node (MANAGE_CLUSTER). It answers once
// the removal is committed; the leader takes the node out of Raft within a reconcile interval.
func (a *adminAPI) removeNode(w http.ResponseWriter, r *http.Request) {
	p, ok := a.principal(w, r)
	if !ok {
		return
	}
	if err := a.admin.RemoveNode(r.Context(), p, r.PathValue("id")); err != nil {
		a.filesV1.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, affectedRecords{AffectedRecords: 1})
}
