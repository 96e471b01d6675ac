package node

import (
	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/fsm"
)

// removedNodes reads the decommissioned nodes from the replicated cluster configuration, for the
// Reconciler.
type removedNodes struct{ fsm *fsm.FSM }

// RemovedNodes lists the nodes removed with CmdRemoveNode.
func (r removedNodes) RemovedNodes() []string {
	cfg, _ := r.fsm.Config()
	return cfg.RemovedNodes
}

// newAutopilot serves this node's Raft progress to whichever node leads, and prepares autopilot,
// which the leadership loop runs while this node leads.
func (n *Node) newAutopilot() *cluster.Autopilot {
	n.rpcServer.ServeRaftStats(cluster.LocalRaftStats(n.raft.Raft))
	c := n.cfg
	ap := cluster.NewAutopilot(cluster.AutopilotConfig{
		Self: c.NodeID, Node: n.raft, Members: n.members, Stats: n.rpcClient,
		CleanupDeadServers: c.CleanupDeadServers, DeadServerCleanupAfter: c.DeadServerCleanupAfter,
		LastContactThreshold: c.LastContactThreshold, MaxTrailingLogs: c.MaxTrailingLogs,
		ServerStabilizationTime: c.ServerStabilizationTime,
		// Dead-server cleanup may shrink the voters down to 3 (or fewer if the cluster was built
		// smaller), never below: a 3-voter cluster keeps its dead voter, since removing it would not
		// make the remaining two any safer.
		MinQuorum: min(max(c.BootstrapExpect, 1), 3), Interval: c.AutopilotInterval,
		Logger: n.log.With("component", "autopilot"),
	})
	return ap
}

// AutopilotHealth is the leader's view of the servers' health; false on followers.
func (n *Node) AutopilotHealth() (cluster.AutopilotHealth, bool) { return n.autopilot.Health() }
