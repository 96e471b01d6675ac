package cluster

import (
	"github.com/hashicorp/raft"
)

// RejoinWhenRaftReaches makes Raft's contact with a peer a reason to re-join gossip at once.
//
// After a long partition the re-join loop's wait has grown to RejoinInterval (30 s by default),
// and memberlist has stopped gossiping to the members it marked dead (GossipToTheDeadTime). Raft
// dials its peers directly and is back at the first heartbeat, but until the next re-join each
// side still sees the other dead: the node is ready (k alive members suffice) while its shard
// router refuses the peer, so a rebuild that needs that peer's shard fails (cluster/DESIGN.md,
// "After a partition heals"). Two observations say that Raft reaches a peer: on the leader, a
// heartbeat to a follower that succeeds after failures; on a follower, a leader it hears from.
// When that peer is not alive in this node's gossip view, the re-join loop wakes now; the join's
// state exchange makes both sides refute their death (a higher incarnation), which gossip spreads
// to the rest within a few rounds.
//
// It stops with the membership (Shutdown).
func (m *Membership) RejoinWhenRaftReaches(r *raft.Raft) {
	observations := make(chan raft.Observation, 16)
	observer := raft.NewObserver(observations, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.ResumedHeartbeatObservation, raft.LeaderObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(observer)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer r.DeregisterObserver(observer)
		for {
			select {
			case <-m.stop:
				return
			case o := <-observations:
				switch d := o.Data.(type) {
				case raft.ResumedHeartbeatObservation:
					m.raftReached(string(d.PeerID), "heartbeat resumed")
				case raft.LeaderObservation:
					m.raftReached(string(d.LeaderID), "leader heard")
				}
			}
		}
	}()
}

// raftReached wakes the re-join loop when Raft reached peer id and the gossip view does not show
// it alive. A wake-up already pending absorbs this one.
func (m *Membership) raftReached(id, how string) {
	if id == "" || id == m.cfg.NodeID {
		return
	}
	if mem, ok := m.Member(id); ok && mem.State == StateAlive {
		return
	}
	select {
	case m.rejoinNow <- struct{}{}:
		m.raftRejoins.Add(1)
		m.log.Info("raft reaches a peer that gossip does not show alive; re-joining gossip now", "peer", id, "how", how)
	default:
	}
}

// RaftRejoins counts the re-joins woken because Raft reached a peer gossip did not show alive.
func (m *Membership) RaftRejoins() uint64 { return m.raftRejoins.Load() }
