package main

// Helpers of the readiness, start-up and load-balancer end-to-end tests.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// errNotYet is a poll result that only needs more time.
var errNotYet = errors.New("not yet")

// inCI reports whether the test runs on CI (CI=true), where a missing tool or privilege is a
// failure, not a reason to skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// skipOrFailWithoutPrivilege skips a test that needs something this machine does not give (root,
// mount, a package), and fails it on CI, where the machine must provide it.
func skipOrFailWithoutPrivilege(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("CI=true and this test cannot run: %s", msg)
	}
	t.Skipf("skipped (set up the machine or run as root to run it): %s", msg)
}

// newLocalCluster prepares n agents on 127.0.0.1 (ports from freePorts). When joinFirst is set,
// every agent's --join names node 1 only, as in the reproductions; otherwise all of them.
// The drain delay is short (CAIRN_DRAIN_DELAY) unless env overrides it.
func newLocalCluster(t *testing.T, n int, joinFirst bool, env ...string) *agentCluster {
	t.Helper()
	ports := freePorts(t, []string{"127.0.0.1"}, 3*n)
	var specs []agentSpec
	for i := range n {
		specs = append(specs, agentSpec{id: "node" + strconv.Itoa(i+1), ip: "127.0.0.1",
			httpPort: ports[3*i], clusterPort: ports[3*i+1], gossipPort: ports[3*i+2]})
	}
	cl := newAgentCluster(t, specs, "8MiB")
	if joinFirst {
		for i, kv := range cl.env {
			if strings.HasPrefix(kv, "CAIRN_JOIN=") {
				cl.env[i] = "CAIRN_JOIN=" + specs[0].addr(specs[0].gossipPort)
			}
		}
	}
	cl.env = append(cl.env, "CAIRN_DRAIN_DELAY=500ms")
	cl.env = append(cl.env, env...)
	return cl
}

// readyz returns /readyz's status code and its reason ("" when ready or unreachable).
func readyz(c *http.Client, base string) (int, string) {
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var body struct {
		Reason string `json:"reason"`
		Detail string `json:"detail"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&body)
	if body.Detail != "" {
		return resp.StatusCode, body.Reason + " (" + body.Detail + ")"
	}
	return resp.StatusCode, body.Reason
}

// waitFirstReady polls /readyz every 20 ms and returns once it first answers 200, with the
// reasons it gave before.
func waitFirstReady(t *testing.T, c *http.Client, base string, timeout time.Duration) []string {
	t.Helper()
	var reasons []string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		code, reason := readyz(c, base)
		if code == http.StatusOK {
			return reasons
		}
		if len(reasons) == 0 || reasons[len(reasons)-1] != reason {
			reasons = append(reasons, reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s/readyz never answered 200 within %s; reasons seen: %q", base, timeout, reasons)
	return nil
}

// leaderOf asks base which node leads.
func leaderOf(c *http.Client, base string) (string, error) {
	st, err := getStatus(c, base)
	if err != nil {
		return "", err
	}
	if st.LeaderID == "" {
		return "", errors.New("no leader known")
	}
	return st.LeaderID, nil
}

// servesAtOnce checks that base serves every file in files and takes new uploads, each on the
// first try: what a node that said it was ready must do.
func servesAtOnce(t *testing.T, c *http.Client, base, key string, files map[string][]byte, uploads int) {
	t.Helper()
	for token, want := range files {
		if err := fetchFile(c, base, token, want); err != nil {
			t.Errorf("download through %s right after it became ready: %v", base, err)
		}
	}
	for i := range uploads {
		data := []byte(fmt.Sprintf("upload %d through %s at %s", i, base, time.Now()))
		status, body, err := postFile(c, base, key, "ready.txt", data)
		if err != nil || status != http.StatusOK {
			t.Errorf("upload %d through %s right after it became ready: status %d, err %v: %s", i, base, status, err, tail(string(body), 300))
		}
	}
}
