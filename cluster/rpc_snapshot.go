package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

const (
	rpcCodeSnapshotInvalid  = "snapshot_invalid"
	rpcCodeSnapshotConflict = "snapshot_conflict"
)

// SnapshotEndpoint is the leader side of forwarded snapshot calls.
type SnapshotEndpoint interface {
	// SaveSnapshot streams a snapshot archive of the leader's state into w.
	SaveSnapshot(ctx context.Context, w io.Writer) error
	// RestoreSnapshot reads an archive from body and restores it through Raft. The answer is the
	// restore report, JSON-encoded by the endpoint's own type.
	RestoreSnapshot(ctx context.Context, body io.Reader, allowOtherCluster bool) (any, error)
}

// ServeSnapshots adds the routes a follower forwards `cairn snapshot save|restore` to. Call it
// once, before peers use them.
func (s *RPCServer) ServeSnapshots(svc SnapshotEndpoint) {
	s.mux.HandleFunc("GET "+rpcPrefix+"/snapshot", func(w http.ResponseWriter, r *http.Request) {
		out := &lazyStream{w: w}
		if err := svc.SaveSnapshot(r.Context(), out); err != nil {
			if !out.started {
				s.writeSnapshotError(w, r, err)
				return
			}
			// Bytes are gone already: break the stream so that the caller sees a truncated
			// archive, never a short one that looks complete.
			s.logger.Warn("snapshot stream broke", "err", err)
			panic(http.ErrAbortHandler)
		}
	})
	s.mux.HandleFunc("POST "+rpcPrefix+"/snapshot/restore", func(w http.ResponseWriter, r *http.Request) {
		report, err := svc.RestoreSnapshot(r.Context(), r.Body, r.URL.Query().Get("allowOtherCluster") == "true")
		if err != nil {
			s.writeSnapshotError(w, r, err)
			return
		}
		s.writeJSON(w, http.StatusOK, report)
	})
}

func (s *RPCServer) writeSnapshotError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, clusterapi.ErrSnapshotInvalid):
		s.writeJSON(w, http.StatusBadRequest, rpcError{Code: rpcCodeSnapshotInvalid, Message: snapshotReason(err, clusterapi.ErrSnapshotInvalid)})
	case errors.Is(err, clusterapi.ErrSnapshotConflict):
		s.writeJSON(w, http.StatusConflict, rpcError{Code: rpcCodeSnapshotConflict, Message: snapshotReason(err, clusterapi.ErrSnapshotConflict)})
	default:
		s.writeError(w, r, err)
	}
}

// snapshotReason is err's text without the sentinel's own prefix, which the receiving side adds
// back when it wraps the sentinel again.
func snapshotReason(err, sentinel error) string {
	return strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
}

// lazyStream sends the 200 and the headers of an archive only with its first byte, so that an
// error before that can still be a JSON error.
type lazyStream struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyStream) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.Header().Set("Content-Type", rpcOctetStream)
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

// SaveSnapshot streams the leader's snapshot archive from addr into w.
func (c *RPCClient) SaveSnapshot(ctx context.Context, addr string, w io.Writer) error {
	resp, err := c.snapshotCall(ctx, http.MethodGet, addr, rpcPrefix+"/snapshot", nil)
	if err != nil {
		return fmt.Errorf("snapshot from leader %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("snapshot from leader %s: %w", addr, err)
	}
	return nil
}

// RestoreSnapshot streams body to the leader at addr and decodes its report into out.
func (c *RPCClient) RestoreSnapshot(ctx context.Context, addr string, body io.Reader, allowOtherCluster bool, out any) error {
	path := rpcPrefix + "/snapshot/restore"
	if allowOtherCluster {
		path += "?allowOtherCluster=true"
	}
	resp, err := c.snapshotCall(ctx, http.MethodPost, addr, path, body)
	if err != nil {
		return fmt.Errorf("restore on leader %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, rpcMaxJSONBody)).Decode(out); err != nil {
		return fmt.Errorf("restore on leader %s: decode report: %w", addr, err)
	}
	return nil
}

// snapshotCall is call on the streaming client. It never retries: a snapshot body cannot be
// replayed.
func (c *RPCClient) snapshotCall(ctx context.Context, method, addr, path string, body io.Reader) (*http.Response, error) {
	// No response-header timeout here: the leader answers a restore only once Raft has installed it.
	resp, _, err := c.send(ctx, c.streaming, method, addr, path, body, rpcOctetStream)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	return nil, remoteError(resp)
}
