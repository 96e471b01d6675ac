package core

import (
	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

// Snapshot errors. They are cluster's sentinels, because a refusal made by the leader must travel
// back over internal RPC to the node the operator called.
var (
	// ErrInvalidSnapshot refuses an archive that is truncated, fails its SHA-256 sums, lacks the
	// cairn manifest, or holds a state the FSM would not restore.
	ErrInvalidSnapshot = clusterapi.ErrSnapshotInvalid
	// ErrSnapshotConflict refuses a valid archive that does not fit now: it belongs to another
	// cluster, or another restore is running.
	ErrSnapshotConflict = clusterapi.ErrSnapshotConflict
)

// SnapshotInfo describes a snapshot archive (`cairn snapshot inspect`).
type SnapshotInfo struct {
	Index        uint64 `json:"index"` // Raft index of the state
	Term         uint64 `json:"term"`
	Size         int64  `json:"size"`         // bytes of the state inside the archive
	CairnVersion string `json:"cairnVersion"` // the version of the node that saved it
	ClusterID    string `json:"clusterId"`
	Files        int    `json:"files"`
	Tokens       int    `json:"tokens"`
	APIKeys      int    `json:"apiKeys"`
}

// RestoreReport is the outcome of `cairn snapshot restore`.
type RestoreReport struct {
	Snapshot SnapshotInfo `json:"snapshot"`
	// RestoredIndex is the Raft index at which the restored state took effect on every node.
	RestoredIndex uint64 `json:"restoredIndex"`
	// UnreadableFiles counts files of the restored state with a segment that has fewer than k
	// shards left: typically files deleted after the snapshot was taken whose shards were already
	// removed. UnreadableFileIDs lists up to 100 of them.
	UnreadableFiles   int      `json:"unreadableFiles"`
	UnreadableFileIDs []string `json:"unreadableFileIds"`
}
