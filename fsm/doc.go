// Package fsm owns cairn's replicated metadata: the versioned, strictly decoded Raft commands, the
// deterministic hashicorp/raft state machine that applies them to an on-disk pebble store (cluster
// config, API keys, files with their shard layouts, tokens, request de-duplication), snapshot and
// restore of that store, and tracking of the applied index so that readers can wait for it. It
// must never talk to peers, read a clock or use randomness when applying: every id, secret and
// timestamp arrives inside the command, chosen by the proposer, so that all replicas compute the
// same state from the same log.
package fsm
