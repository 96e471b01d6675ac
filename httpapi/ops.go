package httpapi

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// opsHandlers serves the operator endpoints: liveness, readiness, metrics and node status.
type opsHandlers struct {
	ops      OpsService
	registry *prometheus.Registry
}

func (o *opsHandlers) routes() []route {
	metrics := promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return []route{
		{"/healthz", "/healthz", map[string]http.HandlerFunc{http.MethodGet: o.healthz}},
		{"/readyz", "/readyz", map[string]http.HandlerFunc{http.MethodGet: o.readyz}},
		{"/metrics", "/metrics", map[string]http.HandlerFunc{http.MethodGet: metrics.ServeHTTP}},
		{"/v1/status", "/v1/status", map[string]http.HandlerFunc{http.MethodGet: o.status}},
		{"/openapi.json", "/openapi.json", map[string]http.HandlerFunc{http.MethodGet: openAPIHandler()}}, // openapi.go
	}
}

// healthz says only that the process serves HTTP; whether it can serve files is /readyz's question.
func (o *opsHandlers) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz lets a load balancer take a node out of rotation while it cannot serve (e.g. no quorum).
func (o *opsHandlers) readyz(w http.ResponseWriter, r *http.Request) {
	if err := o.ops.Ready(r.Context()); err != nil {
		reason, detail := err.Error(), ""
		if nr, ok := errors.AsType[notReady](err); ok {
			reason, detail = nr.ReadyReason()
		}
		body := map[string]string{"status": "unavailable", "reason": reason}
		if detail != "" {
			body["detail"] = detail
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// notReady is a readiness error that carries a stable reason (a short token for machines and
// metrics) apart from its human detail, as node.NotReadyError does.
type notReady interface {
	error
	ReadyReason() (reason, detail string)
}

func (o *opsHandlers) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, o.ops.Status(r.Context()))
}

// Status is what /v1/status reports about a node and its view of the cluster.
type Status struct {
	NodeID  string `json:"nodeId"`
	Version string `json:"version,omitempty"` // this node's build version
	// ClusterProtocol is the newest fsm protocol every Raft server speaks, as this node sees it:
	// commands introduced after it are not proposed yet (the protocol gate, fsm/DESIGN.md).
	ClusterProtocol int            `json:"clusterProtocol,omitempty"`
	LeaderID        string         `json:"leaderId"`
	RaftState       string         `json:"raftState"`
	Term            uint64         `json:"term"`
	CommitIndex     uint64         `json:"commitIndex"`
	AppliedIndex    uint64         `json:"appliedIndex"`
	Erasure         string         `json:"erasure"`
	WriteQuorum     int            `json:"writeQuorum"`
	Members         []MemberStatus `json:"members"`
	Storage         StorageStatus  `json:"storage"`
}

// StorageStatus is the data plane as this node sees it.
type StorageStatus struct {
	SegmentsHealthy       int   `json:"segmentsHealthy"`
	SegmentsDegraded      int   `json:"segmentsDegraded"`
	SegmentsUnrecoverable int   `json:"segmentsUnrecoverable"`
	RepairQueue           int   `json:"repairQueue"` // shard slots waiting for repair
	ShardBytes            int64 `json:"shardBytes"`  // committed shard bytes on this node
	RepairedBytes         int64 `json:"repairedBytes"`
	ChecksumFailures      int64 `json:"checksumFailures"` // corrupt shards this node's reads and rebuilds met (wherever they live); the scrubber counts separately in metrics
}

// MemberRemoved is the state `cairn members` and cairn_members report for a decommissioned node,
// whatever gossip says.
const MemberRemoved = "removed"

// MemberStatus is one node as seen by memberlist and Raft.
type MemberStatus struct {
	ID string `json:"id"`
	// State is alive, dead or left as gossip sees it (memberlist does not report suspicion), or
	// unknown for a Raft server gossip has not seen.
	State string `json:"state"`
	// Removed is true for a node decommissioned with `cairn node remove`.
	Removed  bool   `json:"removed,omitempty"`
	Suffrage string `json:"suffrage"` // voter, nonvoter, or "" when not in the Raft configuration
	// Leader is true for the Raft leader this node knows.
	Leader      bool   `json:"leader,omitempty"`
	ClusterAddr string `json:"clusterAddr"`
	HTTPAddr    string `json:"httpAddr"`
	Zone        string `json:"zone,omitempty"`
	FreeBytes   uint64 `json:"freeBytes"`
	// AcceptsShards is false for a member that announces it takes no new shards: it is draining or
	// stopping, or its disk hangs. (A full member still says true; FreeBytes tells fullness.)
	AcceptsShards bool `json:"acceptsShards"`
	// ClockOffsetSeconds is the member's wall clock minus the answering node's, from its last
	// gossip probe of it; absent for the answering node itself and for a member not measured
	// (older releases send no clock).
	ClockOffsetSeconds *float64 `json:"clockOffsetSeconds,omitempty"`
	// Version is the member's build version from its gossip metadata; "" for a release that did not
	// announce one (before v0.2) or a member gossip has not described.
	Version string `json:"version,omitempty"`
	// ProtocolMax is the newest fsm protocol the member announces (1 for releases before v0.2).
	ProtocolMax int `json:"protocolMax,omitempty"`
}
