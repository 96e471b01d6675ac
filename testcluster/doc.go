// Package testcluster runs a whole cairn cluster inside one test process: N real nodes (real Raft,
// real memberlist, real disks in temp dirs) on loopback with tight timings, plus the fault network
// every inter-node socket goes through, and a client per node that speaks the public API.
//
// It offers Kill (crash-like), Stop (graceful), Restart (same data dir and addresses), WaitLeader,
// WaitReady and network partitions. It is test support: it must not be imported by production code,
// and it waits on conditions with deadlines (internal/testutil), never with fixed sleeps. Every
// node logs to t.Log (shown for a failed test, or with -v; CAIRN_TEST_LOG=debug adds debug
// records, CAIRN_TEST_LOG=off silences them).
package testcluster
