package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn/core"
)

// SnapshotService backs the snapshot routes (MANAGE_CLUSTER); *node.Node implements it.
type SnapshotService interface {
	// SaveSnapshot streams a snapshot archive into w; it writes nothing before it knows it can.
	SaveSnapshot(ctx context.Context, p core.Principal, w io.Writer) error
	InspectSnapshot(ctx context.Context, p core.Principal, body io.Reader, allowOtherCluster bool) (core.SnapshotInfo, error)
	RestoreSnapshot(ctx context.Context, p core.Principal, body io.Reader, allowOtherCluster bool) (core.RestoreReport, error)
}

// snapshotAPI serves GET /v1/snapshot (save), PUT /v1/snapshot (restore) and POST
// /v1/snapshot/inspect, in the /files/v1 error format.
type snapshotAPI struct {
	admin     *adminAPI // authentication and the error writer
	snapshots SnapshotService
}

func (s *snapshotAPI) routes() []route {
	return []route{
		{"/v1/snapshot", "/v1/snapshot", map[string]http.HandlerFunc{http.MethodGet: s.save, http.MethodPut: s.restore}},
		{"/v1/snapshot/inspect", "/v1/snapshot/inspect", map[string]http.HandlerFunc{http.MethodPost: s.inspect}},
	}
}

// fail maps the snapshot refusals; everything else goes through the common mapping.
func (s *snapshotAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, core.ErrInvalidSnapshot):
		writeFilesV1Error(w, &filesV1Error{http.StatusBadRequest, 22, "BODY_FORMAT_EXCEPTION", "the snapshot is refused: " + snapshotReason(err, core.ErrInvalidSnapshot)})
	case errors.Is(err, core.ErrSnapshotConflict):
		writeFilesV1Error(w, &filesV1Error{http.StatusConflict, 1, "CONFLICT_EXCEPTION", snapshotReason(err, core.ErrSnapshotConflict)})
	default:
		s.admin.filesV1.fail(w, r, err)
	}
}

// snapshotReason is the refusal's own text. It names archive members, sizes, record kinds and
// ids, never a secret: the FSM's decoder reports field names and hashes, not values.
func snapshotReason(err, sentinel error) string {
	msg := err.Error()
	if i := strings.Index(msg, sentinel.Error()+": "); i >= 0 {
		return msg[i+len(sentinel.Error())+2:]
	}
	return msg
}

func allowOtherCluster(r *http.Request) bool { return r.URL.Query().Get("allowOtherCluster") == "true" }

func (s *snapshotAPI) save(w http.ResponseWriter, r *http.Request) {
	p, ok := s.admin.principal(w, r)
	if !ok {
		return
	}
	out := &archiveWriter{w: w}
	if err := s.snapshots.SaveSnapshot(r.Context(), p, out); err != nil {
		if !out.started {
			s.fail(w, r, err)
			return
		}
		// The archive is half sent: break the connection so that the client sees a truncated
		// download rather than a complete-looking short file.
		s.admin.log.Warn("snapshot download broke", "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (s *snapshotAPI) inspect(w http.ResponseWriter, r *http.Request) {
	p, ok := s.admin.principal(w, r)
	if !ok {
		return
	}
	info, err := s.snapshots.InspectSnapshot(r.Context(), p, r.Body, allowOtherCluster(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *snapshotAPI) restore(w http.ResponseWriter, r *http.Request) {
	p, ok := s.admin.principal(w, r)
	if !ok {
		return
	}
	rep, err := s.snapshots.RestoreSnapshot(r.Context(), p, r.Body, allowOtherCluster(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// archiveWriter sends the 200 and the archive's headers with its first byte, so that a failure
// before that is still a proper error answer.
type archiveWriter struct {
	w       http.ResponseWriter
	started bool
}

func (a *archiveWriter) Write(p []byte) (int, error) {
	if !a.started {
		a.started = true
		a.w.Header().Set("Content-Type", "application/gzip")
		a.w.Header().Set("Content-Disposition", `attachment; filename="cairn.snap"`)
		a.w.WriteHeader(http.StatusOK)
	}
	return a.w.Write(p)
}
