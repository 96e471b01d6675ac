package node_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/testcluster"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// suffrages is node i's view of the Raft configuration: id -> "voter" / "nonvoter", gossip-only
// members absent.
func suffrages(c *testcluster.Cluster, i int) map[string]string {
	out := map[string]string{}
	n := c.Node(i)
	if n == nil {
		return out
	}
	for _, m := range n.Status().Members {
		if m.Suffrage != "" {
			out[m.ID] = m.Suffrage
		}
	}
	return out
}

func voters(s map[string]string) int {
	v := 0
	for _, suffrage := range s {
		if suffrage == "voter" {
			v++
		}
	}
	return v
}

// memberState is the gossip state node i reports for id.
func memberState(c *testcluster.Cluster, i int, id string) string {
	if n := c.Node(i); n != nil {
		for _, m := range n.Status().Members {
			if m.ID == id {
				return m.State
			}
		}
	}
	return ""
}

// fastAutopilot configures every node for quick dead-server cleanup.
func fastAutopilot(bootstrapExpect int, cleanup bool) func(int, *node.Config) {
	return func(_ int, cfg *node.Config) {
		cfg.BootstrapExpect = bootstrapExpect
		cfg.CleanupDeadServers = cleanup
		cfg.DeadServerCleanupAfter = 500 * time.Millisecond
		cfg.AutopilotInterval = 50 * time.Millisecond
	}
}

// TestAutopilotRemovesDeadServer: of five voters (minimum quorum 3), one killed for good leaves
// Raft after the cleanup delay, and the four left are voters and healthy by autopilot's measure
// (which needs every follower's stats over RPC).
func TestAutopilotRemovesDeadServer(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Nodes: 5, Configure: fastAutopilot(3, true)})
	leader := c.WaitLeader(10 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "five voters", func() bool { return voters(suffrages(c, leader)) == 5 })
	victim := (leader + 1) % 5
	victimID := c.Node(victim).ID()
	c.Kill(victim)

	testutil.WaitFor(t, 20*time.Second, victimID+" out of raft, four voters", func() bool {
		s := suffrages(c, c.WaitLeader(10*time.Second))
		_, in := s[victimID]
		return !in && voters(s) == 4
	})
	testutil.WaitFor(t, 10*time.Second, "autopilot health: four healthy voters", func() bool {
		h, ok := c.Node(c.WaitLeader(10 * time.Second)).AutopilotHealth()
		return ok && h.Healthy && len(h.Voters) == 4 && h.FailureTolerance == 1
	})
}

// TestAutopilotKeepsQuorumSize: in a three-node cluster (minimum quorum 3) a dead voter stays in
// Raft however long it is dead, through many cleanup passes.
func TestAutopilotKeepsQuorumSize(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Nodes: 3, Configure: fastAutopilot(3, true)})
	leader := c.WaitLeader(10 * time.Second)
	victim := (leader + 1) % 3
	victimID := c.Node(victim).ID()
	c.Kill(victim)

	testutil.WaitFor(t, 10*time.Second, "the leader to see "+victimID+" dead", func() bool {
		return memberState(c, leader, victimID) == "dead"
	})
	deadAt := time.Now()
	testutil.WaitFor(t, 10*time.Second, "the cleanup delay to pass", func() bool {
		return time.Since(deadAt) > c.Config(leader).DeadServerCleanupAfter
	})
	h, _ := c.Node(leader).AutopilotHealth()
	testutil.WaitFor(t, 10*time.Second, "three more cleanup passes", func() bool {
		now, ok := c.Node(leader).AutopilotHealth()
		return ok && now.CleanupPasses >= h.CleanupPasses+3
	})
	if s := suffrages(c, leader); s[victimID] != "voter" || voters(s) != 3 {
		t.Fatalf("raft configuration %v: want %s kept as the third voter", s, victimID)
	}
	if !c.Node(leader).IsLeader() {
		t.Fatal("leadership changed during the test; the passes counted may not be the leader's")
	}
}

// TestRemoveNodeRoute: DELETE /v1/nodes/{id} takes a dead node out of Raft (dead-server cleanup is
// off, so only the explicit removal can), and once it comes back alive it is not re-added, while a
// new node that joins meanwhile is.
func TestRemoveNodeRoute(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Nodes: 4, Configure: fastAutopilot(3, false)})
	leader := c.WaitLeader(10 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "four voters", func() bool { return voters(suffrages(c, leader)) == 4 })
	victim := (leader + 1) % 4
	victimID := c.Node(victim).ID()
	caller := (leader + 2) % 4 // a follower: the removal is forwarded to the leader
	c.Kill(victim)

	root := http.Header{"Authorization": {"Bearer " + c.RootKey}}
	for _, tc := range []struct {
		path   string
		header http.Header
		want   int
	}{
		{"/v1/nodes/" + victimID, nil, http.StatusUnauthorized},
		{"/v1/nodes/-bad", root, http.StatusBadRequest},
		{"/v1/nodes/" + victimID, root, http.StatusOK},
		{"/v1/nodes/" + victimID, root, http.StatusOK}, // again: idempotent
	} {
		resp, err := c.Client(caller).Do(http.MethodDelete, tc.path, nil, tc.header)
		if err != nil || resp.Status != tc.want {
			t.Fatalf("DELETE %s: %v %d %s, want %d", tc.path, err, resp.Status, resp.Body, tc.want)
		}
	}
	testutil.WaitFor(t, 10*time.Second, victimID+" out of raft", func() bool {
		s := suffrages(c, leader)
		_, in := s[victimID]
		return !in && voters(s) == 3
	})

	testutil.WaitFor(t, 10*time.Second, "the leader to see "+victimID+" dead", func() bool {
		return memberState(c, leader, victimID) == "dead"
	})
	c.Restart(victim)
	testutil.WaitFor(t, 10*time.Second, "the leader to see "+victimID+" alive", func() bool {
		return memberState(c, leader, victimID) == "alive"
	})
	// The reconcile pass that adds the newcomer sees the removed node alive too, and skips it.
	added := c.AddNode()
	addedID := c.Node(added).ID()
	testutil.WaitFor(t, 10*time.Second, addedID+" added to raft", func() bool {
		_, in := suffrages(c, leader)[addedID]
		return in
	})
	if s := suffrages(c, leader); s[victimID] != "" {
		t.Fatalf("raft configuration %v: the removed %s was re-added", s, victimID)
	}
}
