// Package core holds cairn's use cases: upload a file, open it for reading, resolve, create and
// delete tokens, delete a file, authenticate a principal. It is the one place where the rules of the
// product live (who may do what with which token, when a file exists), shared by every front-end.
//
// core orchestrates the other planes through small interfaces: it proposes Raft commands (the commit
// point of every change), reads the replicated state after a linearizable read index, and streams
// bytes through the erasure codec to shard nodes. It must not know about HTTP or any wire format,
// must not import cluster or depend on hashicorp/raft (cluster's errors reach it through the
// raft-free cluster/clusterapi), and it never writes metadata outside a Raft command.
package core
