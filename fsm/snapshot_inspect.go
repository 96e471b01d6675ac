package fsm

import (
	"fmt"
	"io"
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
// Restore accepts; errors wrap ErrInvalidSnapshot. Like Restore, it builds the state in memory.
func InspectSnapshot(r io.Reader) (SnapshotSummary, error) {
	db, index, err := readSnapshot(r)
	if err != nil {
		return SnapshotSummary{}, fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
	}
	txn := db.Txn(false)
	sum := SnapshotSummary{
		AppliedIndex: index,
		Files:        count(txn, tableFiles),
		Tokens:       count(txn, tableTokens),
		APIKeys:      count(txn, tableAPIKeys),
	}
	if m := loadMeta(txn); m.Config != nil {
		sum.ClusterID = m.Config.ClusterID
	}
	return sum, nil
}
