// Package erasure owns cairn's data plane below the network: the Reed-Solomon block codec
// (klauspost/reedsolomon) with a CRC-32C per chunk, the framed on-disk and on-wire shard format,
// the segment math that cuts a file into segments and blocks, rendezvous-hash placement of shards
// across nodes and zones, and the local ShardStore that keeps committed shards durable on one
// node's disk (large shards as files, small ones group-committed into volume files). It must not
// do network I/O, know about Raft or cluster membership, or decide policy such as write quorums
// and repair scheduling: callers hand it bytes, shard sources and candidate lists, and it answers
// with bytes, faults and node ids.
package erasure
