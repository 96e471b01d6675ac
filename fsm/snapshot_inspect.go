package fsm

import (
	"fmt"
	"io"
	"os"
)

// SnapshotSummary describes the state a snapshot stream holds, for `cairn snapshot inspect` and
// for the checks a restore makes before it hands the stream to Raft.
type SnapshotSummary struct {
	// AppliedIndex is the log index the state was taken at (the FSM's own record of it).
	AppliedIndex uint64
	// ClusterID is the cluster the state belongs to; "" for a state taken before initCluster.
	ClusterID string
	Files     int
	Tokens    int
	APIKeys   int
}

// InspectSnapshot decodes a snapshot stream exactly as Restore would, with every check Restore
// makes, and summarises it without installing anything. A stream InspectSnapshot accepts is one
// Restore accepts; errors wrap ErrInvalidSnapshot. Like Restore, it builds the state in a store
// file, here a temporary one in the system's temp directory, removed before it returns.
func InspectSnapshot(r io.Reader) (SnapshotSummary, error) { return InspectSnapshotIn("", r) }

// InspectSnapshotIn is InspectSnapshot with its temporary store under parent (a node passes its
// data dir: the state of a large snapshot may not fit the system's temp directory).
func InspectSnapshotIn(parent string, r io.Reader) (SnapshotSummary, error) {
	dir, err := os.MkdirTemp(parent, "cairn-inspect-")
	if err != nil {
		return SnapshotSummary{}, err
	}
	defer os.RemoveAll(dir)
	path, m, err := buildStore(dir, r)
	if err != nil {
		return SnapshotSummary{}, err
	}
	sum := SnapshotSummary{AppliedIndex: m.AppliedIndex, Files: int(m.Files), Tokens: int(m.Tokens)}
	if m.Config != nil {
		sum.ClusterID = m.Config.ClusterID
	}
	db, err := openStore(path, true)
	if err != nil {
		return SnapshotSummary{}, fmt.Errorf("inspect: %w", err)
	}
	defer db.Close()
	tx, err := db.Begin(false)
	if err != nil {
		return SnapshotSummary{}, fmt.Errorf("inspect: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	sum.APIKeys = tx.Bucket(bucketAPIKeys).Stats().KeyN
	return sum, nil
}
