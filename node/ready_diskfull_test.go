package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/testcluster"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// readyz is node i's /readyz answer: the status code and the reason it names ("" when ready).
func readyz(t *testing.T, c *testcluster.Cluster, i int) (int, string) {
	t.Helper()
	resp, err := c.Client(i).Do(http.MethodGet, "/readyz", nil, nil)
	if err != nil {
		t.Fatalf("GET /readyz on node%d: %v", i, err)
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		t.Fatalf("/readyz body %q: %v", resp.Body, err)
	}
	return resp.Status, body.Reason
}

// TestReadyzReportsStateWriteFailed: each node's state store (DATA_DIR/fsm) sits on a small
// tmpfs; a follower's fills up (a real ENOSPC when pebble flushes) while its Raft log has room.
// That node's /readyz answers 503 state_write_failed and the others stay ready; once space is
// back and a commit succeeds, it is ready again.
func TestReadyzReportsStateWriteFailed(t *testing.T) {
	const nodes = 3
	var mnts [nodes]string
	for i := range mnts {
		mnts[i] = testutil.MountTmpfs(t, "16m")
	}
	c := testcluster.New(t, testcluster.Options{Nodes: nodes, Configure: func(i int, cfg *node.Config) {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(mnts[i], filepath.Join(cfg.DataDir, "fsm")); err != nil {
			t.Fatal(err)
		}
		// A memtable commit does not touch the disk; a flush does, and the state store flushes
		// for every Raft snapshot (fsm/DESIGN.md "Failed writes"): snapshot often.
		cfg.SnapshotThreshold = 16
		cfg.SnapshotInterval = 100 * time.Millisecond
	}})
	// A follower's disk fills: a leader that cannot apply would hold up every write, and the
	// test would be about that instead.
	leader := c.WaitLeader(10 * time.Second)
	victim, writer := (leader+1)%nodes, (leader+2)%nodes
	if status, reason := readyz(t, c, victim); status != http.StatusOK {
		t.Fatalf("node%d before the disk fills: %d %s", victim, status, reason)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnts[victim], &st); err != nil {
		t.Fatal(err)
	}
	const room = 16 << 10 // what the ballast leaves free: less than a flush of a few uploads
	ballast := filepath.Join(mnts[victim], "ballast")
	if err := os.WriteFile(ballast, make([]byte, int64(st.Bavail)*st.Bsize-room), 0o600); err != nil {
		t.Fatal(err)
	}

	// Writes through another node go on (the other two apply them) until the victim's store
	// fails to flush.
	uploads := 0
	testutil.WaitForState(t, 60*time.Second, fmt.Sprintf("node%d to report state_write_failed", victim), func() (bool, string) {
		for range 10 {
			upload(t, c, writer, randomData(int64(uploads), 2000))
			uploads++
		}
		status, reason := readyz(t, c, victim)
		return status == http.StatusServiceUnavailable && reason == node.ReasonStateFailing,
			fmt.Sprintf("after %d uploads: %d %q", uploads, status, reason)
	})
	t.Logf("node%d's state store failed after %d uploads", victim, uploads)
	for _, i := range c.Running() {
		if i == victim {
			continue
		}
		if status, reason := readyz(t, c, i); status != http.StatusOK {
			t.Fatalf("node%d with room on its disk: %d %s", i, status, reason)
		}
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	testutil.WaitForState(t, 60*time.Second, fmt.Sprintf("node%d ready again after space came back", victim), func() (bool, string) {
		upload(t, c, writer, randomData(int64(uploads), 2000))
		uploads++
		status, reason := readyz(t, c, victim)
		return status == http.StatusOK, fmt.Sprintf("%d %q", status, reason)
	})
}
