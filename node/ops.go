package node

import (
	"context"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/httpapi"
)

// ops answers the ops endpoints for a node.
type ops struct{ node *Node }

// Status reports the node's view of Raft and membership.
func (o ops) Status(context.Context) httpapi.Status { return o.node.Status() }

// Ready is nil when this node can serve reads and uploads (node/ready.go).
func (o ops) Ready(ctx context.Context) error { return o.node.ReadyContext(ctx) }

// Status reports the node's view of Raft and membership.
func (n *Node) Status() httpapi.Status {
	r := n.raft.Raft
	st := httpapi.Status{
		NodeID:          n.cfg.NodeID,
		Version:         announcedVersion(n.cfg.Version),
		ClusterProtocol: n.ClusterProtocol(),
		LeaderID:        n.LeaderID(),
		RaftState:       r.State().String(),
		Term:            r.CurrentTerm(),
		CommitIndex:     r.CommitIndex(),
		AppliedIndex:    n.fsm.AppliedIndex(),
	}
	if cfg, ok := n.fsm.Config(); ok {
		st.Erasure = cfg.Geometry.String()
		st.WriteQuorum = n.service.WriteQuorum(cfg.Geometry)
	}
	health := n.storageHealth()
	repaired, corrupt := n.service.StorageCounters()
	st.Storage = httpapi.StorageStatus{
		SegmentsHealthy: health.Healthy, SegmentsDegraded: health.Degraded,
		SegmentsUnrecoverable: health.Unrecoverable, RepairQueue: health.PendingShards,
		ShardBytes: n.shards.UsedBytes(), RepairedBytes: repaired, ChecksumFailures: corrupt,
	}
	suffrage := map[string]string{}
	for _, s := range n.raft.Servers() {
		if s.Suffrage == raft.Voter {
			suffrage[string(s.ID)] = "voter"
		} else {
			suffrage[string(s.ID)] = "nonvoter"
		}
	}
	clusterCfg, _ := n.fsm.Config()
	leader := n.LeaderID()
	seen := map[string]bool{}
	offsets := map[string]*float64{}
	for _, o := range n.members.ClockOffsets() {
		offsets[o.Peer] = new(o.Offset.Seconds())
	}
	for _, m := range n.members.Members() {
		seen[m.Meta.ID] = true
		st.Members = append(st.Members, httpapi.MemberStatus{
			ClockOffsetSeconds: offsets[m.Meta.ID],
			ID:                 m.Meta.ID, State: m.State, Removed: slices.Contains(clusterCfg.RemovedNodes, m.Meta.ID),
			Suffrage: suffrage[m.Meta.ID], Leader: m.Meta.ID == leader,
			ClusterAddr: m.Meta.ClusterAddr, HTTPAddr: m.Meta.HTTPAddr, Zone: m.Meta.Zone, FreeBytes: m.Meta.FreeBytes,
			AcceptsShards: m.Meta.AcceptsShards,
			Version:       m.Meta.Version, ProtocolMax: m.Meta.Protocols().Max,
		})
	}
	// Raft servers memberlist has never seen (e.g. right after a restart) still belong in the report.
	for _, s := range n.raft.Servers() {
		if !seen[string(s.ID)] {
			st.Members = append(st.Members, httpapi.MemberStatus{
				ID: string(s.ID), State: "unknown", Removed: slices.Contains(clusterCfg.RemovedNodes, string(s.ID)),
				Suffrage: suffrage[string(s.ID)],
				Leader:   string(s.ID) == leader, ClusterAddr: string(s.Address),
			})
		}
	}
	return st
}

// registerMetrics exposes Raft state and shard storage on the node's registry.
func (n *Node) registerMetrics() {
	n.registerStateMetrics() // node/metrics.go
	n.reg.MustRegister(
		newScrapeFamily("cairn_raft_state", "Raft state of this node: 1 for the current state, 0 for the others.",
			"state", prometheus.GaugeValue, n.raftStates),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_raft_term", Help: "Current Raft term."},
			func() float64 { return float64(n.raft.Raft.CurrentTerm()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_raft_commit_index", Help: "Raft commit index."},
			func() float64 { return float64(n.raft.Raft.CommitIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_raft_applied_index", Help: "Index applied to the state machine."},
			func() float64 { return float64(n.fsm.AppliedIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_raft_last_contact_seconds", Help: "Seconds since this follower last heard from the leader (0 on the leader)."},
			func() float64 {
				if n.IsLeader() {
					return 0
				}
				lc := n.raft.Raft.LastContact()
				if lc.IsZero() {
					return -1
				}
				return time.Since(lc).Seconds()
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_raft_log_write_in_flight_seconds", Help: "How long the Raft log or stable store write in flight has been running (0 when none is); a hung disk makes it grow."},
			func() float64 { return n.raft.LogWriteStall().Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cairn_raft_rpcs_withheld_total", Help: "AppendEntries and InstallSnapshot RPCs (heartbeats included) this node did not send because a Raft log write had stalled."},
			func() float64 { return float64(n.raft.WithheldRPCs()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_shard_bytes_stored", Help: "Bytes of committed shards on this node's disk."},
			func() float64 { return float64(n.shards.UsedBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_disk_free_bytes", Help: "Free bytes on the filesystem holding the shard store."},
			func() float64 { return float64(n.freeBytes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cairn_cluster_port_rejected_connections_total", Help: "Connections to the cluster port that failed authentication."},
			func() float64 { return float64(n.mux.RejectedConns()) }),
		newScrapeFamily("cairn_clock_offset_seconds",
			"Each alive, verified peer's wall clock minus this node's, measured on the last gossip probe of it (error at most half the probe's round trip).",
			"peer", prometheus.GaugeValue, n.clockOffsets),
		newScrapeFamily("cairn_members",
			"Members known to gossip, by state: alive, dead, left, and removed for decommissioned nodes (whatever gossip says).",
			"state", prometheus.GaugeValue, n.memberCounts),
	)
	n.registerShardStoreMetrics()
}

// clockOffsets are the peers' clock offsets in seconds, for cairn_clock_offset_seconds.
func (n *Node) clockOffsets() map[string]float64 {
	out := map[string]float64{}
	for _, o := range n.members.ClockOffsets() {
		out[o.Peer] = o.Offset.Seconds()
	}
	return out
}

// clockSkew is nil while this node's clock agrees with its peers' (--max-clock-offset).
func (n *Node) clockSkew() error { return n.members.ClockSkew(n.cfg.MaxClockOffset) }

// memberCounts counts the members of this node's gossip view by state, for cairn_members.
func (n *Node) memberCounts() map[string]float64 {
	cfg, _ := n.fsm.Config()
	counts := map[string]float64{cluster.StateAlive: 0, cluster.StateDead: 0, cluster.StateLeft: 0, httpapi.MemberRemoved: 0}
	for _, m := range n.members.Members() {
		if slices.Contains(cfg.RemovedNodes, m.Meta.ID) {
			counts[httpapi.MemberRemoved]++
		} else {
			counts[m.State]++
		}
	}
	return counts
}

// raftStates is 1 for the current Raft state and 0 for the others, for cairn_raft_state.
func (n *Node) raftStates() map[string]float64 {
	cur := n.raft.Raft.State()
	states := map[string]float64{}
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		states[s.String()] = boolGauge(s == cur)
	}
	return states
}

// storageHealthTTL bounds how often /v1/status walks every layout: the endpoint is public, and the
// walk grows with the number of files.
const storageHealthTTL = 5 * time.Second

// storageHealth returns the segment health, recomputed at most once per storageHealthTTL.
func (n *Node) storageHealth() core.SegmentHealth {
	n.healthMu.Lock()
	defer n.healthMu.Unlock()
	if n.healthAt.IsZero() || time.Since(n.healthAt) > storageHealthTTL {
		n.health = n.service.StorageHealth(n.cfg.RepairDelay, placer{n})
		n.healthAt = time.Now()
	}
	return n.health
}

// debugView serves httpapi's debugging routes: the service's key checks and this node's
// configuration, redacted.
type debugView struct{ n *Node }

func (d debugView) Authenticate(ctx context.Context, apiKey string) (core.Principal, error) {
	return d.n.service.Authenticate(ctx, apiKey)
}

func (d debugView) Authorize(p core.Principal, perm string) error {
	return d.n.service.Authorize(p, perm)
}

func (d debugView) Config() map[string]any { return d.n.cfg.Redacted() }
