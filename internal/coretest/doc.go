// Package coretest builds a real core.Service without a cluster, for the unit tests of core and of
// the front-ends: the real fsm.FSM, a consensus that applies each command to it at once, and shard
// nodes held in memory. Every product rule a test meets is production code; only Raft, sockets
// and disks are left out, and what they can do wrong is injected where they stand (a consensus
// Fault, a node down, a shard corrupted or lost). It must not be imported by non-test code.
package coretest
