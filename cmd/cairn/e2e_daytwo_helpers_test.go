package main

// Helpers shared by the day-two end-to-end tests: snapshots, recovery from lost quorum, upgrades.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// loopbackSpecs returns n agents on 127.0.0.<first>…, sharing one set of ports; it skips the test
// when those loopback addresses cannot be bound.
func loopbackSpecs(t *testing.T, prefix string, n, first int) []agentSpec {
	t.Helper()
	var ips []string
	for i := range n {
		ips = append(ips, "127.0.0."+strconv.Itoa(first+i))
	}
	requireLoopbackAliases(t, ips)
	ports := freePorts(t, ips, 3)
	var specs []agentSpec
	for i, ip := range ips {
		specs = append(specs, agentSpec{id: prefix + strconv.Itoa(i+1), ip: ip,
			httpPort: ports[0], clusterPort: ports[1], gossipPort: ports[2]})
	}
	return specs
}

// runCLIProcess runs `cairn args...` as a child process of the given binary to its end and
// returns its output (cliResult of cli_test.go, without err).
func runCLIProcess(t *testing.T, bin string, args ...string) cliResult {
	t.Helper()
	p := startBinary(t, bin, "cairn "+strings.Join(args, " "), nil, args...)
	code := p.waitExit(t, 2*time.Minute)
	return cliResult{stdout: p.stdout.String(), stderr: p.stderr.String(), code: code}
}

// mustCLI is runCLI that fails the test unless the command exits 0.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	r := runCLIProcess(t, cairnBin, args...)
	if r.code != 0 {
		t.Fatalf("cairn %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// shardsOnDisk counts committed shards (files and volume records) per file id and segment in the
// given data dirs: the ground truth of what the data plane holds, read straight from the disks.
func shardsOnDisk(t *testing.T, dirs ...string) map[string]map[int]int {
	t.Helper()
	out := map[string]map[int]int{}
	for _, dir := range dirs {
		err := erasure.ListShardsIn(filepath.Join(dir, "shards"), func(info erasure.ShardInfo) error {
			if out[info.ID.File] == nil {
				out[info.ID.File] = map[int]int{}
			}
			out[info.ID.File][info.ID.Segment]++
			return nil
		})
		if err != nil {
			t.Fatalf("list shards in %s: %v", dir, err)
		}
	}
	return out
}

// newFileIDs lists the file ids in after that are not in before.
func newFileIDs(before, after map[string]map[int]int) []string {
	var ids []string
	for id := range after {
		if _, ok := before[id]; !ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// uploadTracked uploads data and returns its full token and the file id, found as the one file
// whose shards appeared on the disks meanwhile (uploads must not run concurrently with it).
func uploadTracked(t *testing.T, c *http.Client, base, key, name string, data []byte, dirs []string) (token, fileID string) {
	t.Helper()
	before := shardsOnDisk(t, dirs...)
	token = upload(t, c, base, key, name, data)
	var ids []string
	testutil.WaitForNil(t, 10*time.Second, "shards of "+name+" on disk", func() error {
		ids = newFileIDs(before, shardsOnDisk(t, dirs...))
		if len(ids) != 1 {
			return fmt.Errorf("%d new file ids on disk, want 1", len(ids))
		}
		return nil
	})
	return token, ids[0]
}

// apiCall sends a JSON request and returns the status and the body.
func apiCall(c *http.Client, method, url, key string, body any) (int, []byte, error) {
	var rd io.Reader
	contentType := ""
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd, contentType = bytes.NewReader(b), "application/json"
	}
	status, _, answer, err := send(c, method, url, key, contentType, rd)
	return status, answer, err
}

// createReadToken makes a read token for the file of fullToken.
func createReadToken(t *testing.T, c *http.Client, base, fullToken string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	waitForOrFail(t, 10*time.Second, "create read token", func() error {
		status, body, err := apiCall(c, http.MethodPost, base+"/files/v1/"+fullToken+"/tokens", "", map[string]string{"accessLevel": "read"})
		if err := answerError(status, body, err); err != nil {
			return err
		}
		return json.Unmarshal(body, &out)
	})
	return out.Token
}

// leaderIndex is the index in specs of the node every given node names as leader.
func leaderIndex(t *testing.T, c *http.Client, specs []agentSpec, among ...int) int {
	t.Helper()
	idx := -1
	testutil.WaitForNil(t, 20*time.Second, "one agreed leader", func() error {
		var leader string
		for _, i := range among {
			st, err := getStatus(c, specs[i].url())
			if err != nil {
				return err
			}
			if st.LeaderID == "" || (leader != "" && st.LeaderID != leader) {
				return fmt.Errorf("leaders disagree: %q vs %q", leader, st.LeaderID)
			}
			leader = st.LeaderID
		}
		for _, i := range among {
			if specs[i].id == leader {
				idx = i
				return nil
			}
		}
		return fmt.Errorf("leader %q is not among the nodes asked", leader)
	})
	return idx
}
