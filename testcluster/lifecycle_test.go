package testcluster

import (
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/node"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestDeleteFileRemovesShards: deleting a file removes its shards from every node that is up.
func TestDeleteFileRemovesShards(t *testing.T) {
	c := New(t, Options{})
	data := randomData(21, 180_000)
	token, _ := mustUpload(t, c, 1, "gone.bin", data)
	tok, _ := c.Node(1).FSM().TokenBySecret(token)
	if n := countShards(t, c, tok.FileID); n != 3*3 { // 3 segments of 64 KiB, 3 shards each
		t.Fatalf("file has %d shards on disk, want 9", n)
	}
	if resp, err := c.Client(2).Delete(token); err != nil || resp.Status != http.StatusOK || strings.TrimSpace(string(resp.Body)) != `{"affectedRecords":1}` {
		t.Fatalf("delete: %v %d %s", err, resp.Status, resp.Body)
	}
	testutil.WaitFor(t, 10*time.Second, "every shard of the deleted file removed", func() bool {
		return countShards(t, c, tok.FileID) == 0
	})
	resp, _ := c.Client(0).Download(token)
	wantError(t, "download after delete", resp, http.StatusBadRequest, 2605)
}

// TestLaggingFollowerCatchesUpBySnapshot: a follower that was down while the leader snapshotted
// and compacted its log comes back through InstallSnapshot and serves what it missed.
func TestLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	c := New(t, Options{Configure: func(i int, cfg *node.Config) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = 4
		cfg.SnapshotInterval = 100 * time.Millisecond
	}})
	leader := c.WaitLeader(10 * time.Second)
	lagger := (leader + 1) % 3
	c.Kill(lagger)
	writer := (leader + 2) % 3
	data := randomData(8, 3000)
	var tokens []string
	for i := range 12 {
		tok, _ := mustUpload(t, c, writer, "s"+strconv.Itoa(i), data)
		tokens = append(tokens, tok)
		if _, resp, _ := c.Client(writer).CreateToken(tok, "read"); resp.Status != http.StatusOK {
			t.Fatalf("create token: %d %s", resp.Status, resp.Body)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "the leader to snapshot and compact", func() bool {
		return c.Node(leader).RaftStat("last_snapshot_index") != "0"
	})
	c.Restart(lagger)
	c.WaitReady(20 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "the lagging follower to install a snapshot", func() bool {
		return c.Node(lagger).RaftStat("last_snapshot_index") != "0"
	})
	for _, tok := range tokens {
		mustDownload(t, c, lagger, tok, data)
	}
}

// TestGracefulStopAndRestart: a graceful stop of the leader hands leadership over, leaves gossip,
// keeps the node in Raft (the cluster was built for 3 voters), and the node rejoins on restart with
// nothing changed.
func TestGracefulStopAndRestart(t *testing.T) {
	c := New(t, Options{})
	leader := c.WaitLeader(10 * time.Second)
	data := randomData(4, 50_000)
	token, _ := mustUpload(t, c, leader, "g.bin", data)
	start := time.Now()
	if err := c.Stop(leader); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	newLeader := c.WaitLeader(10 * time.Second)
	t.Logf("graceful stop took %s; new leader node%d", time.Since(start).Round(time.Millisecond), newLeader)
	testutil.WaitFor(t, 10*time.Second, "the stopped node marked left", func() bool {
		for _, m := range c.Node(newLeader).Status().Members {
			if m.ID == c.Config(leader).NodeID {
				return m.State == "left" && m.Suffrage == "voter"
			}
		}
		return false
	})
	mustDownload(t, c, newLeader, token, data)
	c.Restart(leader)
	c.WaitReady(20 * time.Second)
	mustDownload(t, c, leader, token, data)
	token2, _ := mustUpload(t, c, leader, "g2.bin", data)
	mustDownload(t, c, newLeader, token2, data)
}

// TestShutdownLeavesNothingRunning: after every node shut down gracefully, the process is back to
// the goroutines it had before the cluster started.
func TestShutdownLeavesNothingRunning(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		c := New(t, Options{})
		token, _ := mustUpload(t, c, 0, "x", randomData(1, 70_000))
		mustDownload(t, c, 2, token, randomData(1, 70_000))
		for i := range 3 {
			if err := c.Stop(i); err != nil {
				t.Errorf("stop node%d: %v", i, err)
			}
		}
		c.CloseClients()
	}()
	var after int
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = runtime.NumGoroutine()
		if after <= before || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	if after > before {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("%d goroutines before, %d after shutdown:\n%s", before, after, buf[:n])
	}
}
