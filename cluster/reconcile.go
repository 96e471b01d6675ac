package cluster

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RemovedNodes lists the nodes an operator decommissioned (fsm's ClusterConfig.RemovedNodes).
type RemovedNodes interface {
	RemovedNodes() []string
}

// Reconciler makes Raft's configuration follow memberlist, as a leader task (Leadership), the way
// Consul and Nomad do: alive members whose identity is verified (Member.Verified) become voters (up to MaxVoters, the rest non-voters); a member
// that merely failed is never removed here (Autopilot cleans up long-dead ones); a member that left
// gracefully is removed while at least MinQuorum voters remain, so a rolling restart cannot shrink
// the quorum below the size the cluster was built for. A decommissioned node is removed whatever
// its state and never added back, unless it is the last voter.
type Reconciler struct {
	Node      *RaftNode
	Members   *Membership
	Self      string
	MaxVoters int
	MinQuorum int
	Interval  time.Duration
	// Removed lists decommissioned nodes; nil means none. The leadership loop starts the
	// reconciler after the term's barrier, so every acknowledged removal is in it.
	Removed RemovedNodes
	Logger  *slog.Logger
}

// Run reconciles at once, then on every membership change and every Interval, until ctx ends (the
// end of the leadership term). It is a LeaderTask's Run.
func (r *Reconciler) Run(ctx context.Context) {
	if r.Interval <= 0 {
		r.Interval = 5 * time.Second
	}
	sig := r.Members.Subscribe()
	defer r.Members.Unsubscribe(sig)
	tick := time.NewTicker(r.Interval)
	defer tick.Stop()
	for {
		r.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-tick.C:
		}
	}
}

func (r *Reconciler) reconcile() {
	servers := r.Node.Servers()
	if servers == nil {
		return
	}
	byID := make(map[string]raft.Server, len(servers))
	voters := 0
	for _, s := range servers {
		byID[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	var removed []string
	if r.Removed != nil {
		removed = r.Removed.RemovedNodes()
	}
	voters, selfRemoved := r.removeDecommissioned(servers, removed, voters)
	if selfRemoved {
		return // no longer the leader: the next leader reconciles
	}
	for _, m := range r.Members.Members() {
		id := m.Meta.ID
		if id == r.Self || slices.Contains(removed, id) {
			continue
		}
		s, inRaft := byID[id]
		switch m.State {
		case StateAlive:
			if !m.Verified {
				// Gossip shows the member, but it has not proven over the cluster port that it
				// is id at that address (Membership.SetVerifier): the gossip key alone must not
				// add a voter, nor move a member's entry to an address of its choosing.
				continue
			}
			addr := raft.ServerAddress(m.Meta.ClusterAddr)
			if inRaft && s.Address == addr {
				// A non-voter is promoted when a voter slot is free (e.g. after a dead voter was
				// cleaned up), so the cluster keeps MaxVoters voters when it can.
				if s.Suffrage != raft.Voter && voters < r.MaxVoters {
					if err := r.Node.Raft.AddVoter(s.ID, addr, 0, 0).Error(); err != nil {
						r.Logger.Warn("promote non-voter failed", "member", id, "err", err)
						continue
					}
					voters++
					r.Logger.Info("promoted raft non-voter", "member", id)
				}
				continue
			}
			if inRaft { // same id, new address: replace the stale entry first
				if err := r.Node.Raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
					r.Logger.Warn("remove stale raft server failed", "member", id, "err", err)
					continue
				}
				if s.Suffrage == raft.Voter {
					voters--
				}
			}
			if voters < r.MaxVoters {
				if err := r.Node.Raft.AddVoter(raft.ServerID(id), addr, 0, 0).Error(); err != nil {
					r.Logger.Warn("add voter failed", "member", id, "err", err)
					continue
				}
				voters++
				r.Logger.Info("added raft voter", "member", id, "addr", addr)
			} else if err := r.Node.Raft.AddNonvoter(raft.ServerID(id), addr, 0, 0).Error(); err != nil {
				r.Logger.Warn("add non-voter failed", "member", id, "err", err)
			} else {
				r.Logger.Info("added raft non-voter", "member", id, "addr", addr)
			}
		case StateLeft:
			if !inRaft {
				continue
			}
			if s.Suffrage == raft.Voter && voters-1 < r.MinQuorum {
				r.Logger.Info("member left but stays in raft to keep the minimum quorum size",
					"member", id, "voters", voters, "min", r.MinQuorum)
				continue
			}
			if err := r.Node.Raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
				r.Logger.Warn("remove departed server failed", "member", id, "err", err)
				continue
			}
			if s.Suffrage == raft.Voter {
				voters--
			}
			r.Logger.Info("removed departed raft server", "member", id)
		}
	}
}

// removeDecommissioned removes the decommissioned servers still in Raft, this leader last, and
// returns the voters left and whether this leader removed itself. It refuses to remove the last
// voter: Raft could not commit anything afterwards.
func (r *Reconciler) removeDecommissioned(servers []raft.Server, removed []string, voters int) (int, bool) {
	var self *raft.Server
	for _, s := range servers {
		if !slices.Contains(removed, string(s.ID)) {
			continue
		}
		if string(s.ID) == r.Self {
			self = &s
			continue
		}
		if !r.removeDecommissionedServer(s, voters) {
			continue
		}
		if s.Suffrage == raft.Voter {
			voters--
		}
	}
	if self == nil || !r.removeDecommissionedServer(*self, voters) {
		return voters, false
	}
	return voters - 1, true
}

func (r *Reconciler) removeDecommissionedServer(s raft.Server, voters int) bool {
	if s.Suffrage == raft.Voter && voters <= 1 {
		r.Logger.Warn("decommissioned node is the last raft voter; keeping it", "member", s.ID)
		return false
	}
	if err := r.Node.Raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
		r.Logger.Warn("remove decommissioned raft server failed", "member", s.ID, "err", err)
		return false
	}
	r.Logger.Info("removed decommissioned raft server", "member", s.ID)
	return true
}

// Bootstrapper performs the first start of a cluster with --bootstrap-expect N: once N nodes that
// all expect a bootstrap see each other, and none of them already belongs to a cluster, the node
// with the lowest id bootstraps Raft with all of them as voters. The same command line is then
// harmless on restart (Raft state exists) and on scale-up (a member is already bootstrapped).
type Bootstrapper struct {
	Node    *RaftNode
	Members *Membership
	Self    string
	Expect  int
	// MaxVoters caps the voters of the first configuration; the others start as non-voters.
	MaxVoters int
	Logger    *slog.Logger
}

// Run waits for the bootstrap condition until ctx ends or the node is part of a cluster.
func (b *Bootstrapper) Run(ctx context.Context, wg *sync.WaitGroup) {
	if b.Expect <= 0 || b.Node.HadState {
		return
	}
	sig := b.Members.Subscribe()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for waitSignal(ctx, sig, tick.C) {
			if b.tryBootstrap() {
				return
			}
		}
	}()
}

// tryBootstrap reports true when there is nothing left to do.
func (b *Bootstrapper) tryBootstrap() bool {
	if len(b.Node.Servers()) > 0 {
		return true // bootstrapped by us earlier, or added by a leader
	}
	var ready []Member
	for _, m := range b.Members.Members() {
		if m.State != StateAlive {
			continue
		}
		if m.Meta.Bootstrapped {
			// An existing cluster: its leader will add us. Checked before verification, so a
			// member of it that is not proven yet still stops a second cluster (a gossip-key
			// holder can only delay a bootstrap this way, as it always could).
			return false
		}
		if !m.Verified {
			continue
		}
		if m.Meta.BootstrapExpect > 0 {
			ready = append(ready, m)
		}
	}
	if len(ready) < b.Expect {
		return false
	}
	slices.SortFunc(ready, func(x, y Member) int {
		switch {
		case x.Meta.ID < y.Meta.ID:
			return -1
		case x.Meta.ID > y.Meta.ID:
			return 1
		}
		return 0
	})
	if ready[0].Meta.ID != b.Self {
		return false
	}
	var conf raft.Configuration
	for i, m := range ready {
		suffrage := raft.Voter
		if b.MaxVoters > 0 && i >= b.MaxVoters {
			suffrage = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: suffrage, ID: raft.ServerID(m.Meta.ID), Address: raft.ServerAddress(m.Meta.ClusterAddr),
		})
	}
	if err := b.Node.Raft.BootstrapCluster(conf).Error(); err != nil {
		b.Logger.Warn("bootstrap failed", "err", err)
		return false
	}
	b.Logger.Info("bootstrapped raft cluster", "servers", len(conf.Servers))
	return true
}
