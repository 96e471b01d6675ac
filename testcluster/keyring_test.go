package testcluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestKeyRotationWaitsForAStoppedRaftServer: a node stopped gracefully (a rolling restart) has
// left gossip but stays a Raft server of a 3-node cluster. Rotating the gossip key without it
// would leave it only keys no member accepts once it starts again, so install, use and remove
// are refused (409) while it is down; once it is back, the rotation goes through and the node
// rejoins after a restart with the new key. Before, every step answered 200 and the node was
// locked out of gossip for good (helper-45).
func TestKeyRotationWaitsForAStoppedRaftServer(t *testing.T) {
	c := New(t, Options{})
	c.WaitReady(30 * time.Second)
	keyring := func(i int, op, key string) (int, string) {
		t.Helper()
		resp, err := c.Client(i).Do(http.MethodPost, "/v1/keyring/"+op, strings.NewReader(fmt.Sprintf(`{"key":%q}`, key)), http.Header{
			"Authorization": {"Bearer " + c.RootKey}, "Content-Type": {"application/json"}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status, string(resp.Body)
	}
	resp, err := c.Client(0).Do(http.MethodGet, "/v1/keyring", nil, http.Header{"Authorization": {"Bearer " + c.RootKey}})
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("keyring list: %v %+v", err, resp)
	}
	var listed struct {
		Data []clusterapi.MemberKeys `json:"data"`
	}
	if err := json.Unmarshal(resp.Body, &listed); err != nil || len(listed.Data) != 3 {
		t.Fatalf("keyring list: %v %s", err, resp.Body)
	}
	oldFP := listed.Data[0].Primary
	newKey := "aGVsbG8tY2Fpcm4tZ29zc2lwLWtleS0zMi1ieXRlcyE=" // 32 bytes
	newFP := cluster.KeyFingerprint([]byte("hello-cairn-gossip-key-32-bytes!"))

	stopped := c.Config(2).NodeID
	if err := c.Stop(2); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "node0 to see "+stopped+" gone", func() bool { return c.Node(0).AliveMembers() == 2 })
	if conf := c.Node(0).RaftStat("latest_configuration"); !strings.Contains(conf, "ID:"+stopped+" ") {
		t.Fatalf("%s is no longer a raft server, so this test shows nothing: %s", stopped, conf)
	}
	for _, step := range []struct{ op, key string }{{"install", newKey}, {"use", newFP}, {"remove", oldFP}} {
		if st, body := keyring(0, step.op, step.key); st != http.StatusConflict || !strings.Contains(body, stopped) {
			t.Fatalf("keyring %s while %s is stopped: %d %s; want 409 naming it", step.op, stopped, st, body)
		}
	}

	c.Restart(2)
	c.WaitAlive(3, 20*time.Second)
	for _, step := range []struct{ op, key string }{{"install", newKey}, {"use", newFP}, {"remove", oldFP}} {
		if st, body := keyring(0, step.op, step.key); st != http.StatusOK {
			t.Fatalf("keyring %s once %s is back: %d %s", step.op, stopped, st, body)
		}
	}
	if err := c.Stop(2); err != nil {
		t.Fatal(err)
	}
	c.Restart(2)
	c.WaitAlive(3, 20*time.Second)
}
