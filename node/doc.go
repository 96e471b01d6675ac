// Package node assembles one cairn member from the other packages: configuration with its
// defaults and validation, the lifecycle (start, graceful shutdown, crash-like kill for tests), and
// the wiring of Raft, memberlist, the shard store, internal RPC, the use cases and the HTTP API. It
// runs the member's background work: the garbage collector and the scrubber of its own shards, and
// the leader-only loops of other packages (repair, expiry, autopilot).
//
// node owns no rules of its own: product rules live in core, replication in cluster and fsm, bytes in
// erasure, wire formats in httpapi. It must not grow logic that a test could only reach through a
// whole running node.
package node
