package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cairn-dev/cairn/cluster"
)

// Readiness reasons: the small, stable set of strings that /readyz names in "reason" (and that
// metrics may use as label values). Each names the first condition that failed, in this order.
const (
	ReasonDraining        = "draining"               // shutdown requested; the drain delay runs
	ReasonStopping        = "stopping"               // shutting down
	ReasonRemoved         = "removed"                // decommissioned with `cairn node remove`
	ReasonNoLeader        = "no_leader"              // no Raft leader known
	ReasonNotInRaft       = "not_in_raft"            // not in the Raft configuration (yet)
	ReasonNotInitialised  = "not_initialised"        // the cluster config is not applied here yet
	ReasonRaftLogFailing  = "raft_log_write_failed"  // the last Raft log write failed (disk full?)
	ReasonRaftLogStalled  = "raft_log_write_stalled" // a Raft log write has not returned in time (a hung disk?)
	ReasonStateFailing    = "state_write_failed"     // the state store failed to commit (disk full?)
	ReasonClockSkew       = "clock_skew"             // this node's clock disagrees with a majority of its peers'
	ReasonLeaderUnreached = "leader_unreachable"     // the leader did not confirm its commit index
	ReasonApplyBehind     = "apply_behind"           // applied index too far behind the leader's commit
	ReasonApplyStalled    = "apply_stalled"          // a commit index the leader confirmed is not applied in time
	ReasonTooFewToRead    = "too_few_members_read"   // fewer than k alive members in the gossip view
	ReasonTooFewToUpload  = "too_few_members_upload" // fewer shard candidates than the write quorum
)

// ReadyReasons lists every reason, in the order the conditions are checked.
var ReadyReasons = []string{ReasonDraining, ReasonStopping, ReasonRemoved, ReasonRaftLogFailing,
	ReasonRaftLogStalled, ReasonStateFailing, ReasonClockSkew, ReasonNoLeader, ReasonNotInRaft, ReasonNotInitialised, ReasonLeaderUnreached,
	ReasonApplyBehind, ReasonApplyStalled, ReasonTooFewToRead, ReasonTooFewToUpload}

// readyMaxApplyLag is how many entries the local state may trail the leader's commit index and
// still count as current: a request's read index then waits at most for those few applies.
const readyMaxApplyLag = 64

// readyApplyStallAfter is how long a commit index the leader confirmed may stay unapplied here
// before the node counts as stalled, however few entries it trails by. A healthy node applies a
// confirmed index within milliseconds; one whose disk hangs, or that cannot take the leader's
// entries, never does, while its heartbeats and gossip go on.
const readyApplyStallAfter = 5 * time.Second

// readyLeaderTimeout bounds the leader round trip of a readiness check.
const readyLeaderTimeout = 2 * time.Second

// NotReadyError says why a node is not ready: Reason is one of the Reason* constants, Detail a
// sentence for people.
type NotReadyError struct {
	Reason string
	Detail string
}

func (e *NotReadyError) Error() string { return e.Reason + ": " + e.Detail }

// ReadyReason returns the stable reason and the human detail (httpapi's readyz reads these).
func (e *NotReadyError) ReadyReason() (reason, detail string) { return e.Reason, e.Detail }

func notReady(reason, format string, args ...any) error {
	return &NotReadyError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Ready is nil when this node can serve reads and uploads now; otherwise a *NotReadyError names
// the first condition that fails. It asks the leader for its commit index, so it costs one
// (batched) round trip; it waits at most readyLeaderTimeout.
func (n *Node) Ready() error {
	ctx, cancel := context.WithTimeout(n.ctx, readyLeaderTimeout)
	defer cancel()
	return n.ReadyContext(ctx)
}

// ReadyContext is Ready under the caller's context.
//
// A node that was ready stays ready through a leader election shorter than LeaderWait: every
// request waits that long for a usable leader anyway, so it is served, and a load balancer that
// took every node out during an election would turn a 1-2 s pause into errors. Any other failure
// counts at once.
func (n *Node) ReadyContext(ctx context.Context) error {
	err := n.readiness(ctx)
	if err == nil {
		n.readyAt.Store(time.Now().UnixNano())
		return nil
	}
	if nr, ok := err.(*NotReadyError); ok && (nr.Reason == ReasonNoLeader || nr.Reason == ReasonLeaderUnreached) {
		if last := n.readyAt.Load(); last != 0 && time.Since(time.Unix(0, last)) < n.leaderWait() {
			return nil
		}
	}
	n.readyAt.Store(0)
	return err
}

func (n *Node) leaderWait() time.Duration {
	return n.cfg.leaderWait()
}

func (n *Node) readiness(ctx context.Context) error {
	switch {
	case n.draining.Load() && !n.stopping.Load():
		return notReady(ReasonDraining, "shutting down: draining for %s before it stops accepting requests", n.cfg.DrainDelay)
	case n.stopping.Load():
		return notReady(ReasonStopping, "node is shutting down")
	}
	cfg, initialised := n.fsm.Config()
	if initialised && slices.Contains(cfg.RemovedNodes, n.cfg.NodeID) {
		return notReady(ReasonRemoved, "this node was removed from the cluster (cairn node remove); wipe its data dir to reuse the machine as a new node")
	}
	// This node's own disk comes before what it knows of the others: a node whose log write hangs
	// may lose its leader because of it (it withholds its heartbeats), and no_leader would both
	// hide the cause and, for the leader wait, pass as ready.
	if err := n.raft.LogWriteErr(); err != nil {
		return notReady(ReasonRaftLogFailing, "%v", err)
	}
	if stalled, limit := n.raft.LogWriteStall(), n.raft.LogStallTimeout(); stalled >= limit {
		return notReady(ReasonRaftLogStalled, "a raft log write has been in flight for %s, more than %s (a hung disk?); as leader, this node withholds its heartbeats so that another node leads", stalled.Round(time.Second), limit)
	}
	if err := n.fsm.StateErr(); err != nil {
		return notReady(ReasonStateFailing, "%v (applying stopped; it resumes when a commit succeeds)", err)
	}
	// Before the leader: a node whose clock is wrong refuses every proposal and read, whatever
	// else holds.
	if err := n.clockSkew(); err != nil {
		return notReady(ReasonClockSkew, "%v", err)
	}
	if n.LeaderID() == "" {
		return notReady(ReasonNoLeader, "no raft leader known")
	}
	if !n.inRaftConfig() {
		return notReady(ReasonNotInRaft, "not a member of the raft configuration yet")
	}
	if !initialised {
		return notReady(ReasonNotInitialised, "cluster not initialised yet")
	}
	rctx, cancel := context.WithTimeout(ctx, readyLeaderTimeout)
	commit, err := n.consensus.LeaderCommitIndex(rctx)
	cancel()
	if err != nil {
		return notReady(ReasonLeaderUnreached, "the raft leader did not confirm its commit index: %v", err)
	}
	applied := n.fsm.AppliedIndex()
	if applied+readyMaxApplyLag < commit {
		return notReady(ReasonApplyBehind, "applied index %d is %d behind the leader's commit index %d", applied, commit-applied, commit)
	}
	if target, waited := n.applyWatch.observe(applied, commit, time.Now()); waited >= readyApplyStallAfter {
		return notReady(ReasonApplyStalled, "applied index %d has not reached %d, a commit index the leader confirmed %s ago (a hung disk, or a log this node cannot append to)", applied, target, waited.Round(time.Second))
	}
	k := cfg.Geometry.Data
	if alive := n.readableMembers(cfg.RemovedNodes); alive < k {
		return notReady(ReasonTooFewToRead, "gossip shows %d alive members, reads need k=%d", alive, k)
	}
	quorum := n.service.WriteQuorum(cfg.Geometry)
	if cands := n.uploadCandidates(cfg.RemovedNodes); cands < quorum {
		return notReady(ReasonTooFewToUpload, "gossip shows %d alive members that take shards, uploads need the write quorum of %d", cands, quorum)
	}
	return nil
}

// applyWatch remembers one commit index the leader confirmed that this node had not applied yet,
// and since when, so that readiness sees an apply that stopped while it trails by only a few
// entries. The zero value watches nothing.
type applyWatch struct {
	mu     sync.Mutex
	target uint64    // a confirmed commit index not applied when it was seen; 0: none
	since  time.Time // when target was first seen unapplied
}

// observe records one readiness check's applied index and the leader's commit index, and returns
// the oldest confirmed index still unapplied and how long it has waited (0 when none waits).
func (w *applyWatch) observe(applied, commit uint64, now time.Time) (target uint64, waited time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.target != 0 && applied >= w.target {
		w.target = 0
	}
	if w.target == 0 && applied < commit {
		w.target, w.since = commit, now
	}
	if w.target == 0 {
		return 0, 0
	}
	return w.target, now.Sub(w.since)
}

// readableMembers counts the alive, not decommissioned members in this node's gossip view: the
// nodes its reads can fetch shards from.
func (n *Node) readableMembers(removed []string) int {
	alive := 0
	for _, m := range n.members.Members() {
		if m.State == cluster.StateAlive && !slices.Contains(removed, m.Meta.ID) {
			alive++
		}
	}
	return alive
}

// uploadCandidates counts the members an upload could place shards on, full ones included: a full
// cluster answers uploads 507 but keeps serving reads, so fullness does not make a node unready.
func (n *Node) uploadCandidates(removed []string) int {
	cands := 0
	for _, m := range n.members.Members() {
		if m.State == cluster.StateAlive && m.Meta.AcceptsShards && !slices.Contains(removed, m.Meta.ID) {
			cands++
		}
	}
	return cands
}

func (n *Node) inRaftConfig() bool {
	for _, s := range n.raft.Servers() {
		if string(s.ID) == n.cfg.NodeID {
			return true
		}
	}
	return false
}

// watchRemoval logs once, at warning level, when this node learns it was decommissioned.
func (n *Node) watchRemoval() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		if cfg, ok := n.fsm.Config(); ok && slices.Contains(cfg.RemovedNodes, n.cfg.NodeID) {
			n.log.Warn("this node was removed from the cluster (cairn node remove): it serves nothing and never rejoins; wipe its data dir to reuse the machine as a new node")
			return
		}
	}
}
