package node

import (
	"time"
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
