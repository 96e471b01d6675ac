package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// Three real memberlists, one with its clock an hour ahead: every node measures the others on its
// probes, the one whose clock is wrong finds itself refused, and the two others go on.
func TestClockOffsetsAreMeasuredOnGossipProbes(t *testing.T) {
	const ahead = time.Hour
	start := func(id string, skew time.Duration) *Membership {
		m, err := NewMembership(MembershipConfig{NodeID: id, BindAddr: "127.0.0.1:0", Network: OSNetwork{},
			Timings: GossipTimings{ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, GossipInterval: 20 * time.Millisecond},
			Meta:    func() NodeMeta { return NodeMeta{ID: id} },
			Now:     func() time.Time { return time.Now().Add(skew) },
			Logger:  transportTestLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Shutdown() })
		return m
	}
	a, b, c := start("a", 0), start("b", 0), start("c", ahead)
	for _, m := range []*Membership{b, c} {
		if _, err := m.Join([]string{a.LocalGossipAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []*Membership{a, b, c} {
		testutil.WaitFor(t, 20*time.Second, m.cfg.NodeID+" measures both peers", func() bool { return len(m.ClockOffsets()) == 2 })
	}
	near := func(got, want time.Duration) bool { return (got - want).Abs() < time.Second }
	for _, tc := range []struct {
		m    *Membership
		want map[string]time.Duration
	}{
		{a, map[string]time.Duration{"b": 0, "c": ahead}},
		{b, map[string]time.Duration{"a": 0, "c": ahead}},
		{c, map[string]time.Duration{"a": -ahead, "b": -ahead}},
	} {
		for _, o := range tc.m.ClockOffsets() {
			if !near(o.Offset, tc.want[o.Peer]) || o.Uncertainty < 0 || o.Uncertainty > time.Second {
				t.Errorf("%s measures %v; want an offset of about %s", tc.m.cfg.NodeID, o, tc.want[o.Peer])
			}
		}
	}
	for _, m := range []*Membership{a, b} {
		if err := m.ClockSkew(5 * time.Second); err != nil {
			t.Errorf("%s, whose clock is right: %v", m.cfg.NodeID, err)
		}
	}
	err := c.ClockSkew(5 * time.Second)
	var skew *ClockSkewError
	if !errors.As(err, &skew) || !errors.Is(err, clusterapi.ErrClockSkew) {
		t.Fatalf("c, an hour ahead: %v; want a ClockSkewError", err)
	}
	if skew.Disagree != 2 || skew.Voters != 3 || !near(skew.Median, -ahead) {
		t.Errorf("c's verdict: %+v; want 2 of 3 disagreeing, median about -1h", skew)
	}
	if !a.ClockConfirmed(5*time.Second) || c.ClockConfirmed(5*time.Second) {
		t.Errorf("clock confirmed: a %v, c %v; want a's and not c's", a.ClockConfirmed(5*time.Second), c.ClockConfirmed(5*time.Second))
	}
	t.Logf("c: %v", err)
	if err := c.ClockSkew(0); err != nil {
		t.Errorf("ClockSkew(0) must be off: %v", err)
	}
}

// The verdict's rules, on given offsets: only a positive quorum of the voters counts.
func TestClockSkewNeedsAQuorumOfVotersToDisagree(t *testing.T) {
	off := func(peer string, d, uncertainty time.Duration) ClockOffset {
		return ClockOffset{Peer: peer, Offset: d, Uncertainty: uncertainty}
	}
	const limit = 5 * time.Second
	abc, abcde := []string{"a", "b", "c"}, []string{"a", "b", "c", "d", "e"}
	for _, tc := range []struct {
		name    string
		offsets []ClockOffset
		voters  []string
		skewed  bool
	}{
		{"no peer measured", nil, abc, false},
		{"all agree", []ClockOffset{off("b", time.Second, 0), off("c", -2*time.Second, 0)}, abc, false},
		{"one of two peers off: we are fine", []ClockOffset{off("b", 0, 0), off("c", time.Hour, 0)}, abc, false},
		{"both peers off: we are the odd one", []ClockOffset{off("b", time.Hour, 0), off("c", time.Hour, 0)}, abc, true},
		{"one peer off, the third down or unmeasured: not a quorum", []ClockOffset{off("b", 10*time.Second, 0)}, abc, false},
		{"two voters that disagree: neither can tell", []ClockOffset{off("b", 10*time.Second, 0)}, []string{"a", "b"}, false},
		{"a non-voter off does not count", []ClockOffset{off("b", 0, 0), off("x", time.Hour, 0), off("y", time.Hour, 0)}, abc, false},
		{"a single voter and a joining non-voter off", []ClockOffset{off("x", time.Hour, 0)}, []string{"a"}, false},
		{"a non-voter measured off by a quorum of voters", []ClockOffset{off("a", time.Hour, 0), off("b", time.Hour, 0)}, []string{"a", "b", "c"}, true},
		{"beyond the limit only by less than the uncertainty", []ClockOffset{off("b", 6*time.Second, 2*time.Second), off("c", 6*time.Second, 2*time.Second)}, abc, false},
		{"five voters, two off", []ClockOffset{off("b", 0, 0), off("c", 0, 0), off("d", time.Hour, 0), off("e", -time.Hour, 0)}, abcde, false},
		{"five voters, three off", []ClockOffset{off("b", 0, 0), off("c", time.Minute, 0), off("d", time.Hour, 0), off("e", -time.Hour, 0)}, abcde, true},
		{"exactly at the limit agrees", []ClockOffset{off("b", limit, 0), off("c", limit, 0)}, abc, false},
		{"no voter list: every measured peer votes", []ClockOffset{off("b", time.Hour, 0), off("c", time.Hour, 0)}, nil, true},
	} {
		self := "a"
		if tc.name == "a non-voter measured off by a quorum of voters" {
			self = "z"
		}
		err := clockSkewOf(tc.offsets, tc.voters, self, limit)
		if skewed := err != nil; skewed != tc.skewed {
			t.Errorf("%s: %v; want skewed %v", tc.name, err, tc.skewed)
		}
	}
}

// The leader refuses a command stamped further ahead of its clock than the allowed offset: a node
// that has not measured its peers yet (just started) cannot push the state's clock forward.
func TestLeaderRefusesCommandsFromAClockAhead(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	c := &Consensus{MaxClockAhead: 5 * time.Second, Now: func() time.Time { return now }}
	for _, tc := range []struct {
		at      time.Time
		refused bool
	}{
		{now, false},
		{now.Add(-time.Hour), false},       // behind: a forwarded command retried for a while
		{now.Add(10 * time.Second), false}, // two nodes that each pass may be twice the bound apart
		{now.Add(11 * time.Second), true},
		{now.Add(365 * 24 * time.Hour), true},
	} {
		cmd, err := fsm.EncodeCommand(fsm.CmdDeleteFile, "req-1", tc.at, fsm.DeleteFile{FileID: "FIL1"})
		if err != nil {
			t.Fatal(err)
		}
		err = c.admit(cmd)
		if refused := errors.Is(err, fsm.ErrClockAhead); refused != tc.refused {
			t.Errorf("a command at %s with the leader at %s: %v; want refused %v", tc.at, now, err, tc.refused)
		}
	}
	// A leader whose own clock is skewed does not judge others by it (it hands the lead over).
	c.ClockSkew = func() error { return clusterapi.ErrClockSkew }
	ahead, _ := fsm.EncodeCommand(fsm.CmdDeleteFile, "req-3", now.Add(time.Hour), fsm.DeleteFile{FileID: "FIL1"})
	if err := c.admit(ahead); err != nil {
		t.Errorf("a skewed leader judged a command by its own clock: %v", err)
	}
	c.ClockSkew = nil
	c.MaxClockAhead = 0
	cmd, _ := fsm.EncodeCommand(fsm.CmdDeleteFile, "req-2", now.Add(time.Hour), fsm.DeleteFile{FileID: "FIL1"})
	if err := c.admit(cmd); err != nil {
		t.Errorf("with the check off: %v", err)
	}
	if code := fsm.ErrorCode(fmt.Errorf("x: %w", fsm.ErrClockAhead)); fsm.ErrorFromCode(code) != fsm.ErrClockAhead {
		t.Errorf("ErrClockAhead does not travel to the proposer: code %q", code)
	}
}

func skewedMembership(t *testing.T, id string, skew *atomic.Int64) *Membership {
	t.Helper()
	m, err := NewMembership(MembershipConfig{NodeID: id, BindAddr: "127.0.0.1:0", Network: OSNetwork{},
		Timings: GossipTimings{ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, GossipInterval: 20 * time.Millisecond},
		Meta:    func() NodeMeta { return NodeMeta{ID: id} },
		Now:     func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
		Logger:  transportTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// Two nodes that each pass the skew check may be twice the bound apart (here the leader 3.5 s
// behind, a follower 3.5 s ahead): the leader must admit that follower's commands, or a ready node
// would answer 503 to every write (helper-51's review).
func TestLeaderAdmitsAFollowerThatPassesItsOwnCheck(t *testing.T) {
	var sl, sm, sf atomic.Int64
	sl.Store(int64(-3500 * time.Millisecond)) // the leader, 3.5 s behind
	sf.Store(int64(3500 * time.Millisecond))  // a follower, 3.5 s ahead
	l, mid, f := skewedMembership(t, "l", &sl), skewedMembership(t, "m", &sm), skewedMembership(t, "f", &sf)
	for _, m := range []*Membership{mid, f} {
		if _, err := m.Join([]string{l.LocalGossipAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []*Membership{l, mid, f} {
		testutil.WaitFor(t, 20*time.Second, m.cfg.NodeID+" measures both peers", func() bool { return len(m.ClockOffsets()) == 2 })
	}
	for _, m := range []*Membership{l, mid, f} {
		if err := m.ClockSkew(5 * time.Second); err != nil {
			t.Fatalf("%s: %v (precondition: every node passes the skew check)", m.cfg.NodeID, err)
		}
	}
	leader := &Consensus{MaxClockAhead: 5 * time.Second, Now: l.now}
	cmd, _ := fsm.EncodeCommand(fsm.CmdDeleteFile, "req-1", f.now(), fsm.DeleteFile{FileID: "FIL1"})
	if err := leader.admit(cmd); err != nil {
		t.Errorf("f passes its own clock check (ready), yet the leader refuses all its writes: %v", err)
	}
}

// A node whose clock is right, with one peer 10 s ahead and the third down (or of an older
// release, or unverified), is not refused: one disagreeing peer is not a quorum (helper-51).
func TestHealthyNodeIsNotRefusedWhenTheThirdVoterIsDown(t *testing.T) {
	var sa, sb, sc atomic.Int64
	sb.Store(int64(10 * time.Second))
	a, b, c := skewedMembership(t, "a", &sa), skewedMembership(t, "b", &sb), skewedMembership(t, "c", &sc)
	for _, m := range []*Membership{b, c} {
		if _, err := m.Join([]string{a.LocalGossipAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "a measures b and c", func() bool { return len(a.ClockOffsets()) == 2 })
	if err := a.ClockSkew(5 * time.Second); err != nil {
		t.Fatalf("precondition: %v", err)
	}
	_ = c.Shutdown() // c crashes (or is an old build that sends no payload, or is unverified)
	testutil.WaitFor(t, 20*time.Second, "a sees c gone", func() bool { return len(a.ClockOffsets()) == 1 })
	if err := a.checkClockSkew(5 * time.Second); err != nil { // uncached
		t.Errorf("a (clock right, raft quorum a+b intact) refuses every request: %v", err)
	}
}

// An offset measured long ago (the peer has fixed its clock since, or answers only indirectly or
// over TCP, whose acks carry no clock) no longer counts (helper-51).
func TestStaleClockOffsetsAreNotUsed(t *testing.T) {
	var s atomic.Int64
	a := skewedMembership(t, "a", &s)
	a.mu.Lock()
	a.members["b"] = Member{Meta: NodeMeta{ID: "b"}, State: StateAlive, Verified: true}
	a.mu.Unlock()
	a.recordClock(ClockOffset{Peer: "b", Offset: time.Hour, MeasuredAt: time.Now().Add(-time.Hour)})
	if err := a.ClockSkew(5 * time.Second); err != nil {
		t.Errorf("an offset measured an hour ago still refuses this node: %v", err)
	}
}

// A leader whose clock is skewed writes no barrier, the one command it would stamp on a
// follower's read index (LeaderReadIndex skips the proposal path), so it cannot move the state's
// clock that way either (helper-51).
func TestSkewedLeaderWritesNoBarrier(t *testing.T) {
	c, r, _ := newLeaderConsensus(t)
	t.Cleanup(c.Close)
	c.ClockSkew = func() error {
		return &ClockSkewError{MaxOffset: 5 * time.Second, Disagree: 2, Voters: 3, Quorum: 2, Median: -time.Hour}
	}
	before := r.LastIndex()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.LeaderReadIndex(ctx) // what a follower's forwarded read index runs
	if err == nil && r.LastIndex() > before {
		t.Errorf("a leader whose clock is skewed appended a barrier stamped with its clock (index %d -> %d)", before, r.LastIndex())
	}
}

// The barrier is stamped with Consensus.Now, the clock the leader judges commands by, so a leader
// whose clock is behind does not refuse its own barrier (helper-51).
func TestBarrierIsStampedWithTheConsensusClock(t *testing.T) {
	c, _, _ := newLeaderConsensus(t)
	t.Cleanup(c.Close)
	c.MaxClockAhead = 5 * time.Second
	c.Now = func() time.Time { return time.Now().Add(-time.Minute) }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Barrier(ctx); errors.Is(err, fsm.ErrClockAhead) {
		t.Errorf("the leader refuses its own barrier: %v", err)
	}
}
