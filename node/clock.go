package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// clockTransferEvery bounds how often a leader whose clock is wrong tries to hand the lead over.
const clockTransferEvery = 30 * time.Second

// clockLoop hands the Raft lead to another server while this node leads with a clock that
// disagrees with the cluster's (clock_skew). Such a leader refuses its own proposals, so its
// leader tasks (expiry, repair, reconcile's writes) would stand still; the others' proposals,
// which it admits, carry their own clocks and are fine, so the transfer only restores those
// tasks. A failed transfer (no other server is up to date) is retried every clockTransferEvery.
func (n *Node) clockLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastTry time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		if !n.IsLeader() || time.Since(lastTry) < clockTransferEvery {
			continue
		}
		err := n.clockSkew()
		if err == nil {
			continue
		}
		lastTry = time.Now()
		n.log.Warn("this node leads with a clock that disagrees with the cluster's; handing the lead over", "err", err)
		if err := n.leadership.Transfer(); err != nil {
			n.log.Warn("leadership transfer failed", "err", err)
		}
	}
}

// raftVoters are the Raft configuration's voters, whose clocks decide whether this node's is
// wrong; empty (not nil) when the configuration cannot be read.
func (n *Node) raftVoters() []string {
	voters := []string{}
	for _, s := range n.raft.Servers() {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	return voters
}

// clockConfirmWarnAfter is how long the leader waits for a quorum to confirm its clock before it
// says why expiry has not started.
const clockConfirmWarnAfter = 30 * time.Second

// waitClockConfirmed waits until a quorum of voters is known to agree with this node's clock
// (cluster.Membership.ClockConfirmed), false if ctx ends first. A leader that has just started
// has measured no one yet, and expiry judges files and tokens by its clock.
func (n *Node) waitClockConfirmed(ctx context.Context) bool {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	start, warned := time.Now(), false
	for !n.members.ClockConfirmed(n.cfg.MaxClockOffset) {
		if !warned && time.Since(start) > clockConfirmWarnAfter {
			warned = true
			n.log.Warn("expiry waits: no quorum of raft voters has confirmed this node's clock yet", "offsets", fmt.Sprint(n.members.ClockOffsets()))
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}
