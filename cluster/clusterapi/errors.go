package clusterapi

import "errors"

// Consensus's errors. Propose and ReadIndex fail with one of these, a context error (the
// caller's own deadline or cancellation), or, for Propose, the command's fsm sentinel; raft's
// own errors stay in the chain for logs but are never the only thing to match.
var (
	// ErrNoLeader means no usable leader was found within the leader wait; the caller may retry.
	ErrNoLeader = errors.New("no raft leader")
	// ErrShutdown is returned once this node's Raft (or its consensus) is shut down.
	ErrShutdown = errors.New("raft is shut down")
	// ErrLogStoreFull means this node's Raft log or stable store could not be written for lack of
	// space: the node cannot apply new entries, so what it proposes would never be applied here.
	ErrLogStoreFull = errors.New("raft log store is out of space")
	// ErrClockSkew: this node's wall clock disagrees with a majority of its peers' by more than
	// the allowed offset, so it neither proposes nor serves reads (tokens expire by the clock);
	// or the leader refused a command stamped further ahead of its own clock than that.
	ErrClockSkew = errors.New("clock skew")
)

// Snapshot sentinels. They cross internal RPC as error codes, so a follower that forwarded a
// restore to the leader reports the leader's refusal exactly as the leader would.
var (
	// ErrSnapshotInvalid refuses a snapshot archive that is truncated, fails its SHA-256 sums, lacks
	// cairn's manifest, or holds a state the FSM would not restore.
	ErrSnapshotInvalid = errors.New("invalid snapshot")
	// ErrSnapshotConflict refuses a snapshot that does not fit the cluster now: it belongs to another
	// cluster, or another restore is running.
	ErrSnapshotConflict = errors.New("snapshot refused")
)

// Errors of gossip key management.
var (
	// ErrInvalidGossipKey is a key that is not base64 of 16, 24 or 32 bytes, or a fingerprint that
	// names no installed key.
	ErrInvalidGossipKey = errors.New("cluster: invalid gossip key")
	// ErrKeyringRefused is a keyring change refused because it could cut a member off: making a
	// key primary that some member lacks, removing a key some member still uses, or acting while a
	// member cannot be asked.
	ErrKeyringRefused = errors.New("cluster: keyring change refused")
)
