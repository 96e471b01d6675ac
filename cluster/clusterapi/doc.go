// Package clusterapi is the part of cluster's contract that its callers use without Raft: the
// sentinel errors that Consensus, the snapshot RPCs and the gossip keyring return, the keyring's
// vocabulary, and the per-request leader-wait budget.
//
// It imports nothing of cairn's and nothing of hashicorp's, so that core can match cluster's
// errors and attach a wait budget without depending on Raft (`go list -deps ./core` shows no
// hashicorp/raft; `make lint` checks it). It must not grow behaviour: anything that needs Raft,
// memberlist or a socket stays in cluster.
package clusterapi
