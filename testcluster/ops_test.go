package testcluster

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/httpapi"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestScaleUpAddsVoter: a fourth node started with the same command line (bootstrap-expect 3)
// joins the existing cluster instead of bootstrapping a new one, becomes a voter, takes shards
// and serves.
func TestScaleUpAddsVoter(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	data := randomData(31, 90_000)
	old, _ := mustUpload(t, c, 0, "before.bin", data)
	i := c.AddNode()
	c.WaitReady(20 * time.Second)
	testutil.WaitFor(t, 10*time.Second, "node3 a voter on every node", func() bool {
		for _, j := range c.Running() {
			voter := false
			for _, m := range c.Node(j).Status().Members {
				voter = voter || (m.ID == "node3" && m.Suffrage == "voter" && m.State == "alive")
			}
			if !voter {
				return false
			}
		}
		return true
	})
	mustDownload(t, c, i, old, data)
	token, _ := mustUpload(t, c, i, "after.bin", data)
	for _, j := range c.Running() {
		mustDownload(t, c, j, token, data)
	}
	if term := c.Node(i).Status().Term; term == 0 {
		t.Fatal("node3 has no term: it is not part of the cluster")
	}
}

// TestOpsEndpoints checks /healthz, /readyz, /v1/status and /metrics on a follower.
func TestOpsEndpoints(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	token, _ := mustUpload(t, c, 0, "m.bin", randomData(2, 40_000))
	mustDownload(t, c, 1, token, randomData(2, 40_000))
	cl := c.Client(1)
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, err := cl.Do(http.MethodGet, path, nil, nil); err != nil || resp.Status != http.StatusOK {
			t.Fatalf("%s: %v %d %s", path, err, resp.Status, resp.Body)
		}
	}
	resp, err := cl.Do(http.MethodGet, "/v1/status", nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("status: %v %d", err, resp.Status)
	}
	var st httpapi.Status
	if err := json.Unmarshal(resp.Body, &st); err != nil {
		t.Fatal(err)
	}
	if st.NodeID != "node1" || st.LeaderID == "" || st.Erasure != "2+1" || st.WriteQuorum != 2 ||
		len(st.Members) != 3 || st.Term == 0 || st.CommitIndex == 0 || st.AppliedIndex == 0 {
		t.Fatalf("status: %+v", st)
	}
	resp, err = cl.Do(http.MethodGet, "/metrics", nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("metrics: %v %d", err, resp.Status)
	}
	body := string(resp.Body)
	for _, want := range []string{
		`cairn_http_requests_total{code="200",method="GET",route="/files/v1/{token}/file"}`,
		"cairn_http_request_duration_seconds_bucket",
		`cairn_raft_state{state="Follower"} 1`,
		"cairn_raft_commit_index", "cairn_raft_applied_index", "cairn_raft_term",
		"cairn_shard_bytes_stored", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, token) {
		t.Fatal("/metrics contains a token")
	}
	// A node that is shutting down is not ready.
	c.Kill(2)
	testutil.WaitFor(t, 10*time.Second, "readyz on node0 still 200 with one node down", func() bool {
		r, err := c.Client(0).Do(http.MethodGet, "/readyz", nil, nil)
		return err == nil && r.Status == http.StatusOK
	})
}

// TestIsolatedNodeNotReadyAndRefuses: a node cut off from the others reports not ready and answers
// 503 with Retry-After (no quorum), while the majority keeps serving; after healing it serves again.
func TestIsolatedNodeNotReadyAndRefuses(t *testing.T) {
	c := New(t, Options{})
	validateAgainstSpec(t, c)
	data := randomData(41, 30_000)
	token, _ := mustUpload(t, c, 0, "p.bin", data)
	leader := c.WaitLeader(10 * time.Second)
	lonely := (leader + 1) % 3
	start := time.Now()
	c.Net.Isolate(c.Config(lonely).NodeID)
	testutil.WaitFor(t, 10*time.Second, "the isolated node to report not ready", func() bool {
		r, err := c.Client(lonely).Do(http.MethodGet, "/readyz", nil, nil)
		return err == nil && r.Status == http.StatusServiceUnavailable
	})
	t.Logf("isolated node not ready after %s", time.Since(start).Round(time.Millisecond))
	resp, err := c.Client(lonely).Download(token)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, "read on the isolated node", resp, http.StatusServiceUnavailable, 1)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	majority := (leader + 2) % 3
	mustDownload(t, c, majority, token, data)
	mustUpload(t, c, majority, "during.bin", data)

	start = time.Now()
	c.Net.Heal()
	// The periodic re-join of the seed list heals gossip on its own.
	c.WaitAlive(3, 20*time.Second)
	t.Logf("gossip healed after %s", time.Since(start).Round(time.Millisecond))
	c.WaitReady(20 * time.Second)
	mustDownload(t, c, lonely, token, data)
}
