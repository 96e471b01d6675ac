// Package cluster owns everything that crosses between nodes: the one multiplexed, mutually
// authenticated cluster port (Raft plus internal RPC), the memberlist-based membership and failure
// detection, the leader's reconciliation of Raft membership with memberlist and its dead-server
// cleanup (raft-autopilot), the bootstrap of a new cluster, forwarding of proposals to the leader, and the batched read index that makes reads
// linearizable on every node.
//
// cluster moves bytes and decisions; it must not interpret file metadata or tokens (that is fsm and
// core) nor decide where shards go (that is erasure). Every socket it opens goes through a Network,
// so tests can partition nodes for Raft, gossip and RPC alike.
package cluster
