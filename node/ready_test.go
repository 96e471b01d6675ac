package node_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/testcluster"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// readyReason is node i's readiness reason, "" when ready.
func readyReason(c *testcluster.Cluster, i int) string {
	err := c.Node(i).Ready()
	if err == nil {
		return ""
	}
	var nr *node.NotReadyError
	if errors.As(err, &nr) {
		return nr.Reason
	}
	return err.Error()
}

// TestReadinessReasons: a node draining on shutdown says so while it still serves, and a live
// node removed with DELETE /v1/nodes/{id} says it was removed (and the leader marks it removed).
func TestReadinessReasons(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Nodes: 4, Configure: func(i int, cfg *node.Config) {
		fastAutopilot(3, false)(i, cfg)
		cfg.DrainDelay = time.Minute
	}})
	t.Cleanup(func() { // before the cluster's own cleanup: no minute-long drains there
		for _, i := range c.Running() {
			c.Node(i).SkipDrain()
		}
	})
	leader := c.WaitLeader(10 * time.Second)
	c.WaitReady(20 * time.Second)
	victim := (leader + 1) % 4
	victimID := c.Node(victim).ID()

	root := http.Header{"Authorization": {"Bearer " + c.RootKey}}
	resp, err := c.Client(leader).Do(http.MethodDelete, "/v1/nodes/"+victimID, nil, root)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("remove %s: %v %d %s", victimID, err, resp.Status, resp.Body)
	}
	testutil.WaitFor(t, 10*time.Second, victimID+" says it was removed", func() bool {
		return readyReason(c, victim) == node.ReasonRemoved
	})
	var removedSeen bool
	for _, m := range c.Node(leader).Status().Members {
		if m.ID == victimID {
			removedSeen = m.Removed
		}
	}
	if !removedSeen {
		t.Errorf("the leader's status does not mark %s removed", victimID)
	}
	if r := readyReason(c, leader); r != "" {
		t.Errorf("leader not ready after a removal: %s", r)
	}

	drainer := (leader + 2) % 4
	done := make(chan error, 1)
	go func() { done <- c.Node(drainer).Shutdown(context.Background()) }()
	testutil.WaitFor(t, 10*time.Second, "the drainer says draining", func() bool {
		return readyReason(c, drainer) == node.ReasonDraining
	})
	// Still serving while draining: a status read and an upload through it.
	if resp, err := c.Client(drainer).Do(http.MethodGet, "/v1/status", nil, nil); err != nil || resp.Status != http.StatusOK {
		t.Errorf("status through the draining node: %v %d", err, resp.Status)
	}
	upload(t, c, drainer, randomData(7, 10_000))
	c.Node(drainer).SkipDrain()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("shutdown after the drain: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("SkipDrain did not end the drain")
	}
}

// TestReadinessWithoutQuorum: with two of three nodes killed, the survivor has no leader and stops
// saying ready once the election grace (LeaderWait) has passed.
func TestReadinessWithoutQuorum(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	leader := c.WaitLeader(10 * time.Second)
	c.WaitReady(20 * time.Second)
	survivor := (leader + 1) % 3
	for i := range 3 {
		if i != survivor {
			c.Kill(i)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "the survivor not ready", func() bool {
		r := readyReason(c, survivor)
		return r == node.ReasonNoLeader || r == node.ReasonLeaderUnreached
	})
	if err := c.Node(survivor).Ready(); err == nil || !strings.Contains(err.Error(), "leader") {
		t.Fatalf("survivor readiness %v, want a leader reason", err)
	}
}
