package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestVerifyMemberOfAnOlderBuild: a peer without the identity route (an older build) passed the
// handshake but cannot say its id. VerifyMember says exactly that (ErrIdentityUnknown) instead of
// taking it as proof: the proof is of the node at the address, not of the member naming it, and a
// gossip-key holder naming an old node's address under any id was verified and given a Raft place
// (helper-47). The node takes it only for the Raft server already at that address.
func TestVerifyMemberOfAnOlderBuild(t *testing.T) {
	oldAddr := rpcTestServe(t, newRPCTestShards(), &rpcTestLeader{}) // no ServeIdentity
	client := rpcTestClient(t, OSNetwork{}, muxTestSecret)
	if err := client.VerifyMember(rpcTestCtx(t), "intruder", oldAddr); !errors.Is(err, ErrIdentityUnknown) {
		t.Fatalf("VerifyMember at an older build = %v, want ErrIdentityUnknown", err)
	}
}

// newVerifyTestMember starts a membership announcing clusterAddr.
func newVerifyTestMember(t *testing.T, id, clusterAddr string) *Membership {
	t.Helper()
	m, err := NewMembership(MembershipConfig{NodeID: id, BindAddr: "127.0.0.1:0", Network: OSNetwork{},
		Meta: func() NodeMeta { return NodeMeta{ID: id, ClusterAddr: clusterAddr} }, Logger: transportTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// TestSetVerifierChecksMembersAlreadyKnown: memberlist takes pushes as soon as NewMembership
// returns, before the node sets the verifier. A member seen in that window is checked once the
// verifier is set; before, it stayed unverified until its metadata changed (helper-47).
func TestSetVerifierChecksMembersAlreadyKnown(t *testing.T) {
	a, b := newVerifyTestMember(t, "a", "127.0.0.1:1"), newVerifyTestMember(t, "b", "127.0.0.1:2")
	if _, err := b.Join([]string{a.LocalGossipAddr()}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a sees b", func() bool { _, ok := a.Member("b"); return ok })
	var calls atomic.Int64
	a.SetVerifier(func(context.Context, string, string) error { calls.Add(1); return nil })
	testutil.WaitFor(t, 10*time.Second, "b verified", func() bool { mem, _ := a.Member("b"); return mem.Verified })
	if calls.Load() == 0 {
		t.Fatal("verified without a check")
	}
}

// TestShutdownCutsAVerificationShort: a member whose cluster address never answers must not hold
// Shutdown for the check's timeout: the check's context ends with Shutdown (before, it ran under
// its own 5 s timeout, helper-47).
func TestShutdownCutsAVerificationShort(t *testing.T) {
	a, b := newVerifyTestMember(t, "a", "127.0.0.1:1"), newVerifyTestMember(t, "b", "127.0.0.1:2")
	started := make(chan struct{})
	ended := make(chan error, 1)
	a.SetVerifier(func(ctx context.Context, id, _ string) error {
		close(started)
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	})
	if _, err := b.Join([]string{a.LocalGossipAddr()}); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the verification ended with %v, want it cancelled by Shutdown", err)
	}
}

// TestBootstrapWaitsForAnUnverifiedClusterMember: new nodes started with --bootstrap-expect join a
// running cluster. A member of it that is not verified yet still says the cluster exists, so they
// do not bootstrap a second one; before, an unverified member was skipped with its Bootstrapped
// flag, and a late identity answer split the brain (helper-47).
func TestBootstrapWaitsForAnUnverifiedClusterMember(t *testing.T) {
	nodes := newUnjoinedNodes(t, 4, 3)
	r0 := nodes[0]
	if err := r0.raft.Raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(r0.id), Address: raft.ServerAddress(r0.meta.ClusterAddr)}}}).Error(); err != nil {
		t.Fatal(err)
	}
	r0.mu.Lock()
	r0.meta.Bootstrapped = true
	r0.mu.Unlock()
	if err := r0.members.UpdateMeta(broadcastTimeout); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		n.members.SetVerifier(func(ctx context.Context, id, _ string) error {
			if id == r0.id { // the existing node's answer has not come yet
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
	}
	joinAll(t, nodes)
	for _, n := range nodes[1:] {
		testutil.WaitFor(t, 10*time.Second, n.id+" sees the others, "+r0.id+" unverified", func() bool {
			verified := 0
			for _, m := range n.members.Members() {
				if m.State == StateAlive && m.Verified && m.Meta.ID != r0.id {
					verified++
				}
			}
			m0, ok := n.members.Member(r0.id)
			return verified == 3 && ok && m0.State == StateAlive && m0.Meta.Bootstrapped && !m0.Verified
		})
	}
	for _, n := range nodes[1:] {
		b := &Bootstrapper{Node: n.raft, Members: n.members, Self: n.id, Expect: 3, Logger: transportTestLogger()}
		if b.tryBootstrap() {
			t.Fatalf("%s found nothing left to do", n.id)
		}
		if s := n.raft.Servers(); len(s) > 0 {
			t.Fatalf("%s bootstrapped a second cluster beside %s's: %v", n.id, r0.id, s)
		}
	}
}
