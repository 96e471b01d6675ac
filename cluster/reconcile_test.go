package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/internal/fsmtest"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// reconcileNode is one real Raft (in-memory transport) with a real Membership on loopback.
type reconcileNode struct {
	id      string
	raft    *RaftNode
	members *Membership
	meta    NodeMeta
	mu      sync.Mutex
}

func (n *reconcileNode) currentMeta() NodeMeta {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.meta
}

// removedList is a RemovedNodes the test sets.
type removedList struct {
	mu  sync.Mutex
	ids []string
}

func (r *removedList) RemovedNodes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

func newReconcileNodes(t *testing.T, n int) []*reconcileNode {
	t.Helper()
	nodes := newUnjoinedNodes(t, n, 0)
	// Only the first node starts as a cluster; the reconciler must bring in the others.
	if err := nodes[0].raft.Raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(nodes[0].id), Address: raft.ServerAddress(nodes[0].meta.ClusterAddr)}}}).Error(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a leader", func() bool { return nodes[0].raft.Raft.State() == raft.Leader })
	joinAll(t, nodes)
	return nodes
}

// joinAll joins every node's gossip to the first one's.
func joinAll(t *testing.T, nodes []*reconcileNode) {
	t.Helper()
	for _, node := range nodes[1:] {
		if _, err := node.members.Join([]string{nodes[0].members.LocalGossipAddr()}); err != nil {
			t.Fatal(err)
		}
	}
}

// newUnjoinedNodes starts n Rafts without a configuration and their gossip, not yet joined;
// expect is the BootstrapExpect they announce.
func newUnjoinedNodes(t *testing.T, n, expect int) []*reconcileNode {
	t.Helper()
	trans, conf := testutil.InmemRafts("r", n)
	var nodes []*reconcileNode
	for i := range n {
		id := string(conf.Servers[i].ID)
		f := fsmtest.New(t)
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(testutil.RaftConfig(conf.Servers[i].ID), NewRaftFSM(f), store, store, raft.NewInmemSnapshotStore(), trans[i])
		if err != nil {
			t.Fatal(err)
		}
		node := &reconcileNode{id: id, raft: &RaftNode{Raft: r}, meta: NodeMeta{ID: id, ClusterAddr: string(conf.Servers[i].Address), BootstrapExpect: expect}}
		node.members, err = NewMembership(MembershipConfig{
			NodeID: id, BindAddr: "127.0.0.1:0", Network: OSNetwork{},
			Timings: GossipTimings{ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
				GossipInterval: 20 * time.Millisecond, SuspicionMult: 2, PushPullInterval: time.Second, GossipToTheDeadTime: 2 * time.Second},
			Meta: node.currentMeta, Logger: transportTestLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = node.members.Shutdown()
			_ = r.Shutdown().Error()
		})
		nodes = append(nodes, node)
	}
	return nodes
}

// broadcastTimeout bounds the wait for a gossip broadcast to go out: it returns as soon as it does,
// and a loaded machine can take well over a second.
const broadcastTimeout = 10 * time.Second

// leaveGracefully announces that n is leaving, then leaves the gossip, as a node shutting down
// on purpose does.
func leaveGracefully(t *testing.T, n *reconcileNode) {
	t.Helper()
	n.mu.Lock()
	n.meta.Leaving = true
	n.mu.Unlock()
	if err := n.members.UpdateMeta(broadcastTimeout); err != nil {
		t.Fatal(err)
	}
	if err := n.members.Leave(broadcastTimeout); err != nil {
		t.Fatal(err)
	}
}

func suffrages(n *RaftNode) map[string]raft.ServerSuffrage {
	out := map[string]raft.ServerSuffrage{}
	for _, s := range n.Servers() {
		out[string(s.ID)] = s.Suffrage
	}
	return out
}

// TestReconcilerFollowsMembership: alive members join Raft as voters up to MaxVoters and as
// non-voters beyond; a member that left gracefully is removed while MinQuorum voters remain; a
// decommissioned member is removed and never re-added, even while alive.
func TestReconcilerFollowsMembership(t *testing.T) {
	nodes := newReconcileNodes(t, 4)
	leader := nodes[0]
	removed := &removedList{}
	r := &Reconciler{Node: leader.raft, Members: leader.members, Self: leader.id, MaxVoters: 3, MinQuorum: 2,
		Interval: 50 * time.Millisecond, Removed: removed, Logger: transportTestLogger()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	// wait waits until the servers satisfy ok, and returns them.
	wait := func(what string, ok func(map[string]raft.ServerSuffrage) bool) map[string]raft.ServerSuffrage {
		t.Helper()
		var got map[string]raft.ServerSuffrage
		testutil.WaitForState(t, 20*time.Second, what, func() (bool, string) {
			got = suffrages(leader.raft)
			return ok(got), fmt.Sprintf("raft %v, gossip %v", got, memberStates(leader))
		})
		return got
	}
	want := func(what string, expect map[string]raft.ServerSuffrage) {
		t.Helper()
		wait(what, func(got map[string]raft.ServerSuffrage) bool { return fmt.Sprint(got) == fmt.Sprint(expect) })
	}
	// Which member gets the last voter slot depends on the order gossip reports them in.
	servers := wait("three voters and one non-voter", func(got map[string]raft.ServerSuffrage) bool {
		voters, nonvoters := 0, 0
		for _, s := range got {
			if s == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
		return len(got) == 4 && got["r0"] == raft.Voter && voters == 3 && nonvoters == 1
	})
	var nonvoter, leaver, stayer string
	for _, id := range []string{"r1", "r2", "r3"} {
		switch {
		case servers[id] == raft.Nonvoter:
			nonvoter = id
		case leaver == "":
			leaver = id
		default:
			stayer = id
		}
	}
	byID := map[string]*reconcileNode{}
	for _, n := range nodes {
		byID[n.id] = n
	}

	// A voter leaves gracefully: it goes, and the non-voter is promoted into the free voter slot.
	leaveGracefully(t, byID[leaver])
	want(leaver+" removed, "+nonvoter+" promoted", map[string]raft.ServerSuffrage{"r0": raft.Voter, stayer: raft.Voter, nonvoter: raft.Voter})

	// The promoted member is decommissioned while alive: it goes and stays out.
	removed.mu.Lock()
	removed.ids = []string{nonvoter}
	removed.mu.Unlock()
	want(nonvoter+" decommissioned", map[string]raft.ServerSuffrage{"r0": raft.Voter, stayer: raft.Voter})
	for range 3 {
		r.reconcile()
	}
	if _, back := suffrages(leader.raft)[nonvoter]; back {
		t.Fatal("a decommissioned node was added back")
	}
}

// TestBootstrapperBootstrapsOnce: nodes that all expect three bootstrap exactly one cluster, by the
// lowest id, with every one of them as a voter; a node that finds a bootstrapped member waits to be
// added instead of bootstrapping a second cluster.
func TestBootstrapperBootstrapsOnce(t *testing.T) {
	nodes := newUnjoinedNodes(t, 4, 3)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, n := range nodes[:3] {
		(&Bootstrapper{Node: n.raft, Members: n.members, Self: n.id, Expect: 3, Logger: transportTestLogger()}).Run(ctx, &wg)
	}
	joinAll(t, nodes[:3])
	testutil.WaitForState(t, 20*time.Second, "one three-voter cluster led by one of them", func() (bool, string) {
		got := suffrages(nodes[0].raft)
		return len(got) == 3 && got["r0"] == raft.Voter && got["r1"] == raft.Voter && got["r2"] == raft.Voter, fmt.Sprint(got)
	})
	for _, n := range nodes[1:3] {
		testutil.WaitFor(t, 10*time.Second, n.id+" in the cluster", func() bool { return len(n.raft.Servers()) == 3 })
	}
	// r0 announces it belongs to a cluster now; the late r3 must not bootstrap on its own.
	nodes[0].mu.Lock()
	nodes[0].meta.Bootstrapped = true
	nodes[0].mu.Unlock()
	if err := nodes[0].members.UpdateMeta(broadcastTimeout); err != nil {
		t.Fatal(err)
	}
	late := nodes[3]
	b := &Bootstrapper{Node: late.raft, Members: late.members, Self: late.id, Expect: 3, Logger: transportTestLogger()}
	if _, err := late.members.Join([]string{nodes[0].members.LocalGossipAddr()}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "r3 to see r0 bootstrapped", func() bool {
		for _, m := range late.members.Members() {
			if m.Meta.ID == "r0" && m.Meta.Bootstrapped {
				return true
			}
		}
		return false
	})
	if done := b.tryBootstrap(); done || len(late.raft.Servers()) != 0 {
		t.Fatalf("the late node bootstrapped (done=%v, servers %v)", done, late.raft.Servers())
	}
}

// memberStates is what n's gossip reports of every member, for failure messages.
func memberStates(n *reconcileNode) map[string]string {
	out := map[string]string{}
	for _, m := range n.members.Members() {
		out[m.Meta.ID] = m.State
	}
	return out
}

// memberState is the state leader's gossip reports for id ("" when it does not know it).
func memberState(n *reconcileNode, id string) string {
	for _, m := range n.members.Members() {
		if m.Meta.ID == id {
			return m.State
		}
	}
	return ""
}

// TestReconcilerKeepsTheQuorumSize: with MinQuorum 3 of 3 voters, a voter that leaves gracefully
// stays in Raft (a rolling restart must not shrink the quorum), and one that merely fails stays
// too (Autopilot, not the reconciler, removes long-dead servers).
func TestReconcilerKeepsTheQuorumSize(t *testing.T) {
	nodes := newReconcileNodes(t, 3)
	leader := nodes[0]
	r := &Reconciler{Node: leader.raft, Members: leader.members, Self: leader.id, MaxVoters: 3, MinQuorum: 3,
		Interval: time.Hour, Logger: transportTestLogger()}
	allVoters := func() (bool, string) {
		got := suffrages(leader.raft)
		return len(got) == 3 && got["r0"] == raft.Voter && got["r1"] == raft.Voter && got["r2"] == raft.Voter, fmt.Sprint(got)
	}
	testutil.WaitForState(t, 20*time.Second, "three voters", func() (bool, string) {
		r.reconcile()
		return allVoters()
	})

	leaveGracefully(t, nodes[2])
	testutil.WaitFor(t, 10*time.Second, "r0 to see r2 leave", func() bool { return memberState(leader, "r2") == StateLeft })
	if err := nodes[1].members.Shutdown(); err != nil { // no Leave: a crash
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "r0 to see r1 dead", func() bool { return memberState(leader, "r1") == StateDead })
	for range 3 {
		r.reconcile()
	}
	if ok, got := allVoters(); !ok {
		t.Fatalf("servers = %s; want the departed and the failed voter kept", got)
	}
}

// TestReconcilerKeepsTheLastVoter: a decommissioned node that is the only voter stays: Raft could
// commit nothing without it.
func TestReconcilerKeepsTheLastVoter(t *testing.T) {
	nodes := newReconcileNodes(t, 1)
	r := &Reconciler{Node: nodes[0].raft, Members: nodes[0].members, Self: nodes[0].id, MaxVoters: 3, MinQuorum: 1,
		Interval: time.Hour, Removed: &removedList{ids: []string{nodes[0].id}}, Logger: transportTestLogger()}
	r.reconcile()
	if got := suffrages(nodes[0].raft); got[nodes[0].id] != raft.Voter || len(got) != 1 {
		t.Fatalf("servers = %v; want the decommissioned last voter kept", got)
	}
}

// TestBootstrapperWaitsAndCapsVoters: with three nodes expected, two that see each other do not
// bootstrap; once the third arrives the lowest id bootstraps, the others never do it themselves,
// and MaxVoters 2 makes the third a non-voter of the first configuration.
func TestBootstrapperWaitsAndCapsVoters(t *testing.T) {
	nodes := newUnjoinedNodes(t, 3, 3)
	bootstrapper := func(n *reconcileNode) *Bootstrapper {
		return &Bootstrapper{Node: n.raft, Members: n.members, Self: n.id, Expect: 3, MaxVoters: 2, Logger: transportTestLogger()}
	}
	joinAll(t, nodes[:2])
	testutil.WaitFor(t, 10*time.Second, "r0 and r1 to see each other", func() bool { return memberState(nodes[0], "r1") == StateAlive })
	for _, n := range nodes[:2] {
		if done := bootstrapper(n).tryBootstrap(); done || len(n.raft.Servers()) != 0 {
			t.Fatalf("%s bootstrapped with two of three expected nodes (done=%v)", n.id, done)
		}
	}
	joinAll(t, []*reconcileNode{nodes[0], nodes[2]})
	testutil.WaitFor(t, 10*time.Second, "r1 and r2 to see all three", func() bool {
		return memberState(nodes[1], "r2") == StateAlive && memberState(nodes[2], "r1") == StateAlive
	})
	for _, n := range nodes[1:] {
		if done := bootstrapper(n).tryBootstrap(); done || len(n.raft.Servers()) != 0 {
			t.Fatalf("%s, not the lowest id, bootstrapped (done=%v)", n.id, done)
		}
	}
	if done := bootstrapper(nodes[0]).tryBootstrap(); !done {
		t.Fatal("r0, the lowest id, did not bootstrap")
	}
	want := map[string]raft.ServerSuffrage{"r0": raft.Voter, "r1": raft.Voter, "r2": raft.Nonvoter}
	testutil.WaitForState(t, 20*time.Second, "the first configuration on every node", func() (bool, string) {
		for _, n := range nodes {
			if got := suffrages(n.raft); fmt.Sprint(got) != fmt.Sprint(want) {
				return false, n.id + ": " + fmt.Sprint(got)
			}
		}
		return true, ""
	})
}

// TestReconcilerReplacesAMovedMember: a member that comes back under the same id at a new cluster
// address replaces its stale Raft entry, keeping its vote.
func TestReconcilerReplacesAMovedMember(t *testing.T) {
	nodes := newReconcileNodes(t, 3)
	leader := nodes[0]
	r := &Reconciler{Node: leader.raft, Members: leader.members, Self: leader.id, MaxVoters: 3, MinQuorum: 2,
		Interval: time.Hour, Logger: transportTestLogger()}
	addresses := func() map[string]string {
		out := map[string]string{}
		for _, s := range leader.raft.Servers() {
			out[string(s.ID)] = fmt.Sprintf("%s/%v", s.Address, s.Suffrage)
		}
		return out
	}
	testutil.WaitForState(t, 20*time.Second, "three voters", func() (bool, string) {
		r.reconcile()
		got := addresses()
		return len(got) == 3 && got["r1"] == "r1/Voter", fmt.Sprint(got)
	})
	nodes[1].mu.Lock()
	nodes[1].meta.ClusterAddr = "r1-moved"
	nodes[1].mu.Unlock()
	if err := nodes[1].members.UpdateMeta(broadcastTimeout); err != nil {
		t.Fatal(err)
	}
	testutil.WaitForState(t, 20*time.Second, "r1 at its new address", func() (bool, string) {
		r.reconcile()
		got := addresses()
		return len(got) == 3 && got["r1"] == "r1-moved/Voter" && got["r2"] == "r2/Voter", fmt.Sprint(got)
	})
}
