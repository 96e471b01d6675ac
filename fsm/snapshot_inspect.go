package fsm

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cockroachdb/pebble/v2"
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
	// Clock is the state's clock: the newest command time it applied (de-duplication ages against
	// it, and it never goes back).
	Clock time.Time
}

// InspectSnapshot decodes a snapshot stream exactly as Restore would, with every check Restore
// makes, and summarises it without installing anything. A stream InspectSnapshot accepts is one
// Restore accepts; errors wrap ErrInvalidSnapshot. Like Restore, it builds the state in a store
// database, here a temporary one in the system's temp directory, removed before it returns.
func InspectSnapshot(r io.Reader) (SnapshotSummary, error) { return InspectSnapshotIn("", r) }

// InspectSnapshotIn is InspectSnapshot with its temporary store under parent (a node passes its
// data dir: the state of a large snapshot may not fit the system's temp directory).
func InspectSnapshotIn(parent string, r io.Reader) (SnapshotSummary, error) {
	dir, err := os.MkdirTemp(parent, "cairn-inspect-")
	if err != nil {
		return SnapshotSummary{}, err
	}
	defer os.RemoveAll(dir)
	var apiKeys int
	_, m, err := buildGeneration(dir, storeOptions{cacheBytes: inspectCacheBytes, logger: slog.New(slog.DiscardHandler)},
		func(db *pebble.DB) (metaRow, error) {
			m, err := readSnapshot(r, db)
			if err != nil {
				return m, fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
			}
			return m, (store{r: db}).each(tableAPIKeys, nil, func(_, _ []byte) (bool, error) { apiKeys++; return true, nil })
		})
	if err != nil {
		return SnapshotSummary{}, err
	}
	sum := SnapshotSummary{AppliedIndex: m.AppliedIndex, Files: int(m.Files), Tokens: int(m.Tokens), APIKeys: apiKeys, Clock: m.Clock}
	if m.Config != nil {
		sum.ClusterID = m.Config.ClusterID
	}
	return sum, nil
}

// inspectCacheBytes is the block cache of the throw-away store InspectSnapshot builds.
const inspectCacheBytes = 8 << 20
