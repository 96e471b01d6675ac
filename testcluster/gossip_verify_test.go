package testcluster

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestGossipKeyAloneMakesNoMember: with mutual TLS on the cluster port, a process that holds the
// gossip key (derived from the root key as a node derives it) but neither a certificate nor the
// cluster secret joins gossip twice: once as a new member, once under the id of a node that was
// stopped gracefully (memberlist lets a departed name be taken at once), each at an address where
// no cluster port answers. Neither proves its id over the cluster port, so the leader adds no
// voter and moves no entry: before, the new one became a fourth voter (one real failure then left
// the cluster without quorum) and the other took over the stopped node's Raft entry (helper-45).
// A real node added afterwards is verified and joins Raft, which proves the leader reconciled
// with both intruders in its view.
func TestGossipKeyAloneMakesNoMember(t *testing.T) {
	p := newTestPKI(t, 4)
	c := New(t, Options{Configure: p.configure, ClientTLS: p.clientTLS()})
	c.WaitReady(30 * time.Second)
	leader := c.WaitLeader(20 * time.Second)
	stopped := (leader + 1) % 3
	if err := c.Stop(stopped); err != nil {
		t.Fatal(err)
	}
	leader = c.WaitLeader(20 * time.Second)
	stoppedID := c.Config(stopped).NodeID
	before := c.Node(leader).RaftStat("latest_configuration")
	stoppedEntry := regexp.MustCompile(`ID:` + stoppedID + ` Address:[^ }]+`).FindString(before)
	if stoppedEntry == "" {
		t.Fatalf("the stopped node is not in the configuration to begin with: %s", before)
	}

	key, err := hkdf.Key(sha256.New, []byte(c.RootKey), []byte("cairn root key"), "gossip encryption", 32)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"intruder", stoppedID} {
		host := fmt.Sprintf("127.0.0.%d", 91+i)
		meta := cluster.NodeMeta{ID: id, ClusterAddr: host + ":1", HTTPAddr: host + ":2", Bootstrapped: true,
			AcceptsShards: true, ProtocolMin: 1, ProtocolMax: 3}
		m, err := cluster.NewMembership(cluster.MembershipConfig{NodeID: id, BindAddr: "127.0.0.1:0", Network: cluster.OSNetwork{},
			SecretKey: key, Seeds: []string{c.Node(leader).GossipAddr()}, Timings: FastGossip,
			Meta: func() cluster.NodeMeta { return meta }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		m.Start()
	}
	testutil.WaitFor(t, 20*time.Second, "the leader sees both intruders alive and unverified", func() bool {
		return c.Node(leader).UnverifiedMembers() == 2
	})

	added := c.AddNode()
	addedID := c.Config(added).NodeID
	var conf string
	testutil.WaitFor(t, 30*time.Second, "the real new node joins raft", func() bool {
		conf = c.Node(leader).RaftStat("latest_configuration")
		return strings.Contains(conf, "ID:"+addedID+" ")
	})
	if strings.Contains(conf, "intruder") {
		t.Errorf("a gossip-key holder without a certificate was added to raft: %s", conf)
	}
	if !strings.Contains(conf, stoppedEntry) {
		t.Errorf("the stopped node's raft entry moved: before %s; after %s", before, conf)
	}
	if got := c.Node(leader).UnverifiedMembers(); got != 2 {
		t.Errorf("the leader counts %d unverified members, want the 2 intruders", got)
	}
	// The cluster still serves, and no upload is placed on an intruder.
	c.Client(leader).APIKey = c.RootKey
	for i := range 6 {
		if _, resp, err := c.Client(leader).Upload(fmt.Sprintf("f%d", i), []byte(strings.Repeat("x", 40_000+i))); err != nil || resp.Status != 200 {
			t.Fatalf("upload %d: %v, %+v", i, err, resp)
		}
	}
}
