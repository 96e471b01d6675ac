package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	autopilot "github.com/hashicorp/raft-autopilot"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/erasure"
)

// Sentinel errors of internal RPC. They cross the wire as error codes, so a caller tests the
// remote outcome with errors.Is exactly as it would a local call.
var (
	// ErrNotLeader means the called node is not the Raft leader (or lost leadership mid-call);
	// the caller should find the leader and retry there.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrRemote means the remote node failed the call for a reason with no sentinel of its own;
	// the wrapped message is the remote error text.
	ErrRemote = errors.New("cluster: remote call failed")
)

// ShardService is the node's local shard store as internal RPC needs it.
type ShardService interface {
	// PutShard writes, fsyncs and commits shard id from body. It must commit only when body
	// reads to io.EOF; a read error (the sender's stream broke) must abort the shard so that no
	// partial shard is ever visible.
	PutShard(ctx context.Context, id erasure.ShardID, body io.Reader) error
	// OpenShard returns exactly erasure.ShardHeaderLen+n bytes: the shard's header, then its
	// frame bytes [off, off+n) (erasure.ShardStore.OpenFrames).
	OpenShard(ctx context.Context, id erasure.ShardID, off, n int64) (io.ReadCloser, error)
	// DeleteShard removes a committed shard.
	DeleteShard(ctx context.Context, id erasure.ShardID) error
	// StatShard describes a committed shard.
	StatShard(ctx context.Context, id erasure.ShardID) (erasure.ShardInfo, error)
}

// LeaderService is the leader side of forwarding and of the read index.
type LeaderService interface {
	// ApplyForwarded proposes cmd through Raft. errCode is the state machine's verdict on an
	// applied command; err is a failure to apply at all (e.g. ErrNotLeader).
	ApplyForwarded(ctx context.Context, cmd []byte) (index uint64, errCode string, err error)
	// ReadIndex returns a commit index confirmed by a leadership check.
	ReadIndex(ctx context.Context) (uint64, error)
}

const (
	rpcPrefix = "/internal/v1"
	// rpcMaxJSONBody bounds JSON request bodies; a forwarded Raft command is far smaller.
	rpcMaxJSONBody = 4 << 20
	// rpcMaxErrorBody bounds how much of an error response the client reads.
	rpcMaxErrorBody = 64 << 10
	rpcOctetStream  = "application/octet-stream"

	rpcCodeBadRequest   = "bad_request"
	rpcCodeNotFound     = "not_found"
	rpcCodeInvalidRange = "invalid_range"
	rpcCodeNotLeader    = "not_leader"
	rpcCodeNoSpace      = "no_space"
	rpcCodeInternal     = "internal"
)

type rpcError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type rpcShardInfo struct {
	ID      string    `json:"id"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
}

type rpcApplyRequest struct {
	Cmd []byte `json:"cmd"`
}

type rpcApplyResponse struct {
	Index   uint64 `json:"index"`
	ErrCode string `json:"errCode,omitempty"`
}

type rpcIndexResponse struct {
	Index uint64 `json:"index"`
}

// rpcRaftStats is one node's Raft progress, what autopilot judges a server's health by.
type rpcRaftStats struct {
	LastContactNanos int64  `json:"lastContactNanos"` // -1: never heard from a leader
	LastTerm         uint64 `json:"lastTerm"`
	LastIndex        uint64 `json:"lastIndex"`
}

// RPCServer serves internal routes over HTTP/1.1 on the mux's ConnRPC listener, so only nodes that
// passed the cluster handshake can reach them.
type RPCServer struct {
	shards ShardService
	leader LeaderService
	logger *slog.Logger
	mux    *http.ServeMux
	srv    *http.Server
}

// NewRPCServer returns a server for the given services.
func NewRPCServer(shards ShardService, leader LeaderService, logger *slog.Logger) *RPCServer {
	mux := http.NewServeMux()
	s := &RPCServer{shards: shards, leader: leader, logger: logger, mux: mux}
	mux.HandleFunc("PUT "+rpcPrefix+"/shards/{id}", s.putShard)
	mux.HandleFunc("GET "+rpcPrefix+"/shards/{id}", s.openShard)
	mux.HandleFunc("DELETE "+rpcPrefix+"/shards/{id}", s.deleteShard)
	mux.HandleFunc("GET "+rpcPrefix+"/shards/{id}/stat", s.statShard)
	mux.HandleFunc("POST "+rpcPrefix+"/apply", s.apply)
	mux.HandleFunc("GET "+rpcPrefix+"/readindex", s.readIndex)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return s
}

// Serve serves ln until Shutdown, then returns nil.
func (s *RPCServer) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("cluster: rpc serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting calls and waits for those in flight; when ctx ends first it closes
// the remaining connections, so nothing keeps running, and returns ctx's error.
func (s *RPCServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// errNoSuchRoute is a 404 without an RPC error body: the route is unknown to the peer's build.
var errNoSuchRoute = errors.New("route unknown to the peer")

// rpcIdentity is what a node answers to the identity route: the member id it runs as.
type rpcIdentity struct {
	NodeID string `json:"nodeId"`
}

// ServeIdentity adds the route through which a peer proves which member answers at this node's
// cluster address (Membership.SetVerifier, VerifyMember). Only a node that passed the cluster
// handshake reaches it, so an answer proves the cluster secret (and, with TLS, a server
// certificate of the cluster's CA) as well as the id. Call it once, before Serve.
func (s *RPCServer) ServeIdentity(nodeID string) {
	s.mux.HandleFunc("GET "+rpcPrefix+"/identity", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, http.StatusOK, rpcIdentity{NodeID: nodeID})
	})
}

// ServeRaftStats adds the route that reports this node's Raft progress to the leader's autopilot.
// It is separate from NewRPCServer because the stats come from Raft, which starts after the server;
// it may be called while serving, and until then peers see the route fail and judge this node
// unhealthy, which is the truth. Call it once.
func (s *RPCServer) ServeRaftStats(stats func() (autopilot.ServerStats, error)) {
	s.mux.HandleFunc("GET "+rpcPrefix+"/raftstats", func(w http.ResponseWriter, r *http.Request) {
		st, err := stats()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.writeJSON(w, http.StatusOK, rpcRaftStats{
			LastContactNanos: int64(st.LastContact), LastTerm: st.LastTerm, LastIndex: st.LastIndex,
		})
	})
}

func (s *RPCServer) shardID(w http.ResponseWriter, r *http.Request) (erasure.ShardID, bool) {
	id, err := erasure.ParseShardID(r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return erasure.ShardID{}, false
	}
	return id, true
}

func (s *RPCServer) putShard(w http.ResponseWriter, r *http.Request) {
	id, ok := s.shardID(w, r)
	if !ok {
		return
	}
	if err := s.shards.PutShard(r.Context(), id, r.Body); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *RPCServer) openShard(w http.ResponseWriter, r *http.Request) {
	id, ok := s.shardID(w, r)
	if !ok {
		return
	}
	q := shardReadQuery(r.URL)
	off, err1 := strconv.ParseInt(q.off, 10, 64)
	n, err2 := strconv.ParseInt(q.n, 10, 64)
	if err := errors.Join(err1, err2); err != nil || off < 0 || n < 0 {
		s.writeJSON(w, http.StatusBadRequest, rpcError{Code: rpcCodeBadRequest, Message: "want off>=0 and n>=0"})
		return
	}
	rc, err := s.shards.OpenShard(r.Context(), id, off, n)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", rpcOctetStream)
	// The stream is the shard header, then the frames asked for (erasure.ShardStore.OpenFrames).
	want := erasure.ShardHeaderLen + n
	if q.header != "1" {
		// A protocol-1 reader (v0.1.0, during a rolling upgrade) asks without the parameter and
		// expects the raw frames of a v1 shard. The writers' protocol gate keeps new shards v1
		// until every server speaks protocol 2; a v2 shard (written before a downgrade, or healed)
		// is refused, and that reader rebuilds the segment from its other shards.
		header := make([]byte, erasure.ShardHeaderLen)
		if _, err := io.ReadFull(rc, header); err != nil {
			s.writeError(w, r, err)
			return
		}
		if !bytes.Equal(header, erasure.LegacyShardHeader()) {
			s.writeJSON(w, http.StatusConflict, rpcError{Code: rpcCodeBadRequest, Message: "shard " + id.String() + " is format v2, which a protocol-1 reader cannot read"})
			return
		}
		want = n
	}
	w.Header().Set("Content-Length", strconv.FormatInt(want, 10))
	w.WriteHeader(http.StatusOK)
	if copied, err := io.Copy(w, rc); err != nil || copied != want {
		// Headers are gone, so the only honest signal left is a broken stream: the client sees
		// an unexpected EOF instead of a silently short shard.
		s.logger.Warn("rpc shard stream broke", "shard", id.String(), "sent", copied, "want", want, "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (s *RPCServer) deleteShard(w http.ResponseWriter, r *http.Request) {
	id, ok := s.shardID(w, r)
	if !ok {
		return
	}
	if err := s.shards.DeleteShard(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *RPCServer) statShard(w http.ResponseWriter, r *http.Request) {
	id, ok := s.shardID(w, r)
	if !ok {
		return
	}
	info, err := s.shards.StatShard(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, rpcShardInfo{ID: info.ID.String(), Size: info.Size, ModTime: info.ModTime})
}

func (s *RPCServer) apply(w http.ResponseWriter, r *http.Request) {
	var req rpcApplyRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, rpcMaxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || len(req.Cmd) == 0 {
		s.writeJSON(w, http.StatusBadRequest, rpcError{Code: rpcCodeBadRequest, Message: "want {\"cmd\": base64}"})
		return
	}
	index, code, err := s.leader.ApplyForwarded(r.Context(), req.Cmd)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, rpcApplyResponse{Index: index, ErrCode: code})
}

func (s *RPCServer) readIndex(w http.ResponseWriter, r *http.Request) {
	index, err := s.leader.ReadIndex(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, rpcIndexResponse{Index: index})
}

// writeError maps an error to the wire once, here; RPCClient maps it back.
func (s *RPCServer) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, rpcCodeInternal
	switch {
	case errors.Is(err, erasure.ErrShardNotFound):
		status, code = http.StatusNotFound, rpcCodeNotFound
	case errors.Is(err, erasure.ErrInvalidRange):
		status, code = http.StatusRequestedRangeNotSatisfiable, rpcCodeInvalidRange
	case errors.Is(err, erasure.ErrInvalidShardID):
		status, code = http.StatusBadRequest, rpcCodeBadRequest
	case errors.Is(err, ErrNotLeader):
		status, code = http.StatusServiceUnavailable, rpcCodeNotLeader
	case errors.Is(err, erasure.ErrNoSpace):
		status, code = http.StatusInsufficientStorage, rpcCodeNoSpace
	default:
		s.logger.Warn("rpc call failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	s.writeJSON(w, status, rpcError{Code: code, Message: err.Error()})
}

func (s *RPCServer) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.logger.Debug("rpc response write failed", "err", err)
	}
}

// RPCClient calls other nodes' RPCServers over pooled keep-alive connections, each opened with
// an authenticated ConnRPC handshake. It is safe for concurrent use.
type RPCClient struct {
	logger *slog.Logger
	pooled *http.Client
	// fresh never reuses a connection. A pooled connection to a restarted peer can look healthy
	// until used, so an idempotent call that failed on a reused connection is retried once here,
	// as rqlite's cluster client does.
	fresh *http.Client
	// streaming carries snapshot archives (rpc_snapshot.go): no response-header timeout, since a
	// leader answers a restore only once Raft has installed it.
	streaming *http.Client
	// shardGets carries shard reads, the hot call of every download (rpc_shardget.go).
	shardGets *shardGetClient
}

// NewRPCClient returns a client that dials through nw, authenticated and protected by sec.
func NewRPCClient(nw Network, sec Security, logger *slog.Logger) *RPCClient {
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		// A peer that is down or black-holed must fail the dial quickly, so callers fall back to
		// other shards or report the cluster unavailable instead of hanging.
		ctx, cancel := context.WithTimeout(ctx, rpcDialTimeout)
		defer cancel()
		return DialCluster(ctx, nw, addr, ConnRPC, sec)
	}
	transport := func(keepAlive bool, headerTimeout time.Duration) *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialContext:        dial,
			DisableKeepAlives:  !keepAlive,
			DisableCompression: true, // shards are incompressible and JSON bodies tiny
			// Parallel shard puts to one peer: up to one per upload the node takes at once (64 by
			// default). Fewer idle slots closed and redialled connections under load (a 4 KiB PUT
			// profile spent ~2 % of its CPU dialling).
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			// The answer to a small call, and to a shard put once its body is sent, comes fast
			// from a healthy peer; shard bodies themselves are guarded by core's stall timeout.
			ResponseHeaderTimeout: headerTimeout,
			WriteBufferSize:       64 << 10,
			ReadBufferSize:        64 << 10,
		}}
	}
	return &RPCClient{logger: logger, pooled: transport(true, rpcResponseHeaderTimeout),
		fresh: transport(false, rpcResponseHeaderTimeout), streaming: transport(false, 0),
		shardGets: newShardGetClient(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }, logger)}
}

// Timeouts of the internal RPC client.
const (
	rpcDialTimeout           = 5 * time.Second
	rpcResponseHeaderTimeout = 30 * time.Second
)

// Close closes idle connections; calls in flight are unaffected.
func (c *RPCClient) Close() {
	c.pooled.CloseIdleConnections()
	c.fresh.CloseIdleConnections()
	c.streaming.CloseIdleConnections()
	c.shardGets.closeIdle()
}

// PutShard streams body to addr as shard id and returns once the remote node committed it
// (fsynced). If body fails mid-way the remote aborts the shard and PutShard returns the error.
func (c *RPCClient) PutShard(ctx context.Context, addr string, id erasure.ShardID, body io.Reader) error {
	resp, err := c.call(ctx, http.MethodPut, addr, rpcShardPath(id), body, rpcOctetStream, false)
	if err != nil {
		return fmt.Errorf("put shard %s on %s: %w", id, addr, err)
	}
	return rpcDiscard(resp)
}

// OpenShard streams the header and frame bytes [off, off+n) of shard id from addr. A stream that
// breaks mid-way reads as an error (io.ErrUnexpectedEOF), never as a short shard. It goes through
// the lean shard-read client (rpc_shardget.go), not net/http's Transport.
func (c *RPCClient) OpenShard(ctx context.Context, addr string, id erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	rc, err := c.shardGets.open(ctx, addr, id, off, n)
	if err != nil {
		return nil, fmt.Errorf("open shard %s on %s: %w", id, addr, err)
	}
	return rc, nil
}

// rpcShardHeaderParam asks a shard read for the header in front of the frames. Readers of
// protocol 1 (v0.1.0) do not send it, and get the raw frames they expect.
const rpcShardHeaderParam = "h"

// DeleteShard removes shard id on addr.
func (c *RPCClient) DeleteShard(ctx context.Context, addr string, id erasure.ShardID) error {
	resp, err := c.call(ctx, http.MethodDelete, addr, rpcShardPath(id), nil, "", true)
	if err != nil {
		return fmt.Errorf("delete shard %s on %s: %w", id, addr, err)
	}
	return rpcDiscard(resp)
}

// StatShard describes shard id on addr.
func (c *RPCClient) StatShard(ctx context.Context, addr string, id erasure.ShardID) (erasure.ShardInfo, error) {
	var out rpcShardInfo
	if err := c.callJSON(ctx, http.MethodGet, addr, rpcShardPath(id)+"/stat", nil, true, &out); err != nil {
		return erasure.ShardInfo{}, fmt.Errorf("stat shard %s on %s: %w", id, addr, err)
	}
	got, err := erasure.ParseShardID(out.ID)
	if err != nil {
		return erasure.ShardInfo{}, fmt.Errorf("stat shard %s on %s: %w", id, addr, err)
	}
	return erasure.ShardInfo{ID: got, Size: out.Size, ModTime: out.ModTime}, nil
}

// ApplyForwarded asks the leader at addr to apply cmd. It is never retried here: a command that
// may have been applied must be retried by the caller, who knows whether it is idempotent.
func (c *RPCClient) ApplyForwarded(ctx context.Context, addr string, cmd []byte) (index uint64, errCode string, err error) {
	body, err := json.Marshal(rpcApplyRequest{Cmd: cmd})
	if err != nil {
		return 0, "", fmt.Errorf("forward apply to %s: %w", addr, err)
	}
	var out rpcApplyResponse
	if err := c.callJSON(ctx, http.MethodPost, addr, rpcPrefix+"/apply", body, false, &out); err != nil {
		return 0, "", fmt.Errorf("forward apply to %s: %w", addr, err)
	}
	return out.Index, out.ErrCode, nil
}

// ReadIndex asks the leader at addr for a confirmed commit index.
func (c *RPCClient) ReadIndex(ctx context.Context, addr string) (uint64, error) {
	var out rpcIndexResponse
	if err := c.callJSON(ctx, http.MethodGet, addr, rpcPrefix+"/readindex", nil, true, &out); err != nil {
		return 0, fmt.Errorf("read index from %s: %w", addr, err)
	}
	return out.Index, nil
}

// ErrIdentityUnknown means the node at an address passed the cluster handshake but could not say
// which member it is: a build from before the identity route (a rolling upgrade). That proves the
// cluster secret at the address, not that the member naming the address is that node.
var ErrIdentityUnknown = errors.New("the peer passed the cluster handshake but cannot say its id (an older build)")

// VerifyMember proves that the node at addr is member id: it calls the identity route over the
// authenticated cluster port. A peer without the route answers ErrIdentityUnknown; whether that is
// enough is the caller's question (node takes it only for a Raft server already at that address).
func (c *RPCClient) VerifyMember(ctx context.Context, id, addr string) error {
	var out rpcIdentity
	err := c.callJSON(ctx, http.MethodGet, addr, rpcPrefix+"/identity", nil, true, &out)
	switch {
	case errors.Is(err, errNoSuchRoute):
		return fmt.Errorf("verify member %s at %s: %w", id, addr, ErrIdentityUnknown)
	case err != nil:
		return fmt.Errorf("verify member %s at %s: %w", id, addr, err)
	case out.NodeID != id:
		return fmt.Errorf("verify member %s at %s: the node there is %q", id, addr, out.NodeID)
	}
	return nil
}

// RaftStats asks the node at addr for its Raft progress (last leader contact, last log term and
// index).
func (c *RPCClient) RaftStats(ctx context.Context, addr string) (autopilot.ServerStats, error) {
	var out rpcRaftStats
	if err := c.callJSON(ctx, http.MethodGet, addr, rpcPrefix+"/raftstats", nil, true, &out); err != nil {
		return autopilot.ServerStats{}, fmt.Errorf("raft stats from %s: %w", addr, err)
	}
	return autopilot.ServerStats{
		LastContact: time.Duration(out.LastContactNanos), LastTerm: out.LastTerm, LastIndex: out.LastIndex,
	}, nil
}

func rpcShardPath(id erasure.ShardID) string {
	return rpcPrefix + "/shards/" + url.PathEscape(id.String())
}

func (c *RPCClient) callJSON(ctx context.Context, method, addr, path string, body []byte, idempotent bool, out any) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	resp, err := c.call(ctx, method, addr, path, r, "application/json", idempotent)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, rpcMaxJSONBody)).Decode(out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// call sends one request and returns a 2xx response, or the remote error mapped back to its
// sentinel. idempotent calls without a body are retried once on a fresh connection when a
// reused one failed.
func (c *RPCClient) call(ctx context.Context, method, addr, path string, body io.Reader, ctype string, idempotent bool) (*http.Response, error) {
	resp, reused, err := c.send(ctx, c.pooled, method, addr, path, body, ctype)
	if err != nil && idempotent && body == nil && reused && ctx.Err() == nil {
		c.logger.Debug("rpc retry on fresh connection", "addr", addr, "path", path, "err", err)
		resp, _, err = c.send(ctx, c.fresh, method, addr, path, nil, "")
	}
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	return nil, remoteError(resp)
}

// remoteError reads and closes a non-2xx answer and maps its error code back to the sentinel the
// remote side wrote it for.
func remoteError(resp *http.Response) error {
	defer resp.Body.Close()
	var e rpcError
	if err := json.NewDecoder(io.LimitReader(resp.Body, rpcMaxErrorBody)).Decode(&e); err != nil {
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: %w: %s", ErrRemote, errNoSuchRoute, resp.Status)
		}
		return fmt.Errorf("%w: %s", ErrRemote, resp.Status)
	}
	switch e.Code {
	case rpcCodeNotFound:
		return fmt.Errorf("%w (remote: %s)", erasure.ErrShardNotFound, e.Message)
	case rpcCodeInvalidRange:
		return fmt.Errorf("%w (remote: %s)", erasure.ErrInvalidRange, e.Message)
	case rpcCodeNotLeader:
		return fmt.Errorf("%w (remote: %s)", ErrNotLeader, e.Message)
	case rpcCodeNoSpace:
		return fmt.Errorf("%w (remote: %s)", erasure.ErrNoSpace, e.Message)
	case rpcCodeSnapshotInvalid: // rpc_snapshot.go
		return fmt.Errorf("%w: %s", clusterapi.ErrSnapshotInvalid, e.Message)
	case rpcCodeSnapshotConflict:
		return fmt.Errorf("%w: %s", clusterapi.ErrSnapshotConflict, e.Message)
	}
	return fmt.Errorf("%w: %s: %s", ErrRemote, resp.Status, e.Message)
}

func (c *RPCClient) send(ctx context.Context, hc *http.Client, method, addr, path string, body io.Reader, ctype string) (*http.Response, bool, error) {
	var reused atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused.Store(info.Reused) },
	})
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return nil, false, err
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := hc.Do(req)
	return resp, reused.Load(), err
}

// rpcDiscard drains a small success response so that its connection returns to the pool.
func rpcDiscard(resp *http.Response) error {
	defer resp.Body.Close()
	_, err := io.Copy(io.Discard, io.LimitReader(resp.Body, rpcMaxErrorBody))
	return err
}
