package fsm

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// testCluster is three raft nodes over in-memory transports, each with its own FSM.
type testCluster struct {
	rafts  []*raft.Raft
	fsms   []*FSM
	trans  []*raft.InmemTransport
	addrs  []raft.ServerAddress
	config raft.Configuration
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{}
	c.trans, c.config = testutil.InmemRafts("node", n)
	for _, srv := range c.config.Servers {
		c.addrs = append(c.addrs, srv.Address)
	}
	for i := range n {
		cfg := testutil.RaftConfig(raft.ServerID(c.addrs[i]))
		// Wider than testutil's: a loaded 2-core machine under -race must not flap leadership
		// mid-test (applies would then fail with "leadership lost").
		cfg.HeartbeatTimeout = 250 * time.Millisecond
		cfg.ElectionTimeout = 250 * time.Millisecond
		cfg.LeaderLeaseTimeout = 125 * time.Millisecond
		cfg.BatchApplyCh = true
		cfg.TrailingLogs = 4 // so that a lagging follower must catch up by snapshot
		cfg.SnapshotThreshold = 1 << 20
		cfg.SnapshotInterval = time.Hour
		f := newTestFSM(t)
		logs := raft.NewInmemStore()
		r, err := raft.NewRaft(cfg, testRaftFSM{f}, logs, logs, raft.NewInmemSnapshotStore(), c.trans[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
		c.rafts, c.fsms = append(c.rafts, r), append(c.fsms, f)
	}
	if err := c.rafts[0].BootstrapCluster(c.config).Error(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *testCluster) leader(t *testing.T) int {
	t.Helper()
	leader := -1
	testutil.WaitFor(t, 10*time.Second, "a leader", func() bool {
		for i, r := range c.rafts {
			if r.State() == raft.Leader {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// applyOn applies n generated commands through the leader and returns the last log index.
func (c *testCluster) applyOn(t *testing.T, leader int, g *commandGen, n int) uint64 {
	t.Helper()
	futures := make([]raft.ApplyFuture, n)
	for i := range futures {
		futures[i] = c.rafts[leader].Apply(g.next(t), time.Second)
	}
	var last uint64
	for _, fu := range futures {
		if err := fu.Error(); err != nil {
			t.Fatalf("apply: %v", err)
		}
		res, ok := fu.Response().(*Result)
		if !ok {
			t.Fatalf("response %T, want *Result", fu.Response())
		}
		if res.Index > fu.Index() {
			t.Fatalf("result index %d after entry index %d", res.Index, fu.Index())
		}
		last = fu.Index()
	}
	return last
}

// converged waits for every FSM to apply index and checks that their tables are identical.
func (c *testCluster) converged(t *testing.T, index uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var want []byte
	for i, f := range c.fsms {
		if err := f.WaitApplied(ctx, index); err != nil {
			t.Fatalf("node %d: WaitApplied(%d): %v (at %d)", i, index, err, f.AppliedIndex())
		}
		// The header holds the applied index, which may legitimately differ by trailing
		// configuration entries; the tables may not.
		got := body(dump(t, f))
		if i == 0 {
			want = got
		} else if !bytes.Equal(got, want) {
			t.Fatalf("node %d diverged from node 0", i)
		}
	}
}

func TestRaftClusterConverges(t *testing.T) {
	c := newTestCluster(t, 3)
	leader := c.leader(t)
	g := newCommandGen(21)
	c.converged(t, c.applyOn(t, leader, g, 150))
	if files, _ := c.fsms[0].Counts(); files == 0 {
		t.Fatal("no files were created")
	}

	// A follower cut off while the leader moves on and compacts its log must catch up by
	// installing the leader's snapshot, which exercises Restore inside raft.
	lagger := (leader + 1) % 3
	for i := range c.trans {
		if i != lagger {
			c.trans[i].Disconnect(c.addrs[lagger])
		}
	}
	c.trans[lagger].DisconnectAll()
	last := c.applyOn(t, leader, g, 50)
	if err := c.rafts[leader].Snapshot().Error(); err != nil {
		t.Fatalf("leader snapshot: %v", err)
	}
	for i := range c.trans {
		if i != lagger {
			c.trans[i].Connect(c.addrs[lagger], c.trans[lagger])
			c.trans[lagger].Connect(c.addrs[i], c.trans[i])
		}
	}
	last = max(last, c.applyOn(t, c.leader(t), g, 20))
	c.converged(t, last)
	if got := c.rafts[lagger].Stats()["last_snapshot_index"]; got == "0" {
		t.Error("the lagging follower caught up without installing a snapshot")
	}
}
