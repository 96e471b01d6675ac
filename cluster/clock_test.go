package cluster

import (
	"errors"
	"fmt"
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
	if skew.Agree != 1 || skew.Of != 3 || !near(skew.Median, -ahead) {
		t.Errorf("c's verdict: %+v; want 1 of 3 agreeing, median about -1h", skew)
	}
	t.Logf("c: %v", err)
	if err := c.ClockSkew(0); err != nil {
		t.Errorf("ClockSkew(0) must be off: %v", err)
	}
}

// The verdict's rules, on given offsets.
func TestClockSkewNeedsAMajorityToAgree(t *testing.T) {
	off := func(peer string, d, uncertainty time.Duration) ClockOffset {
		return ClockOffset{Peer: peer, Offset: d, Uncertainty: uncertainty}
	}
	const limit = 5 * time.Second
	for _, tc := range []struct {
		name    string
		offsets []ClockOffset
		skewed  bool
	}{
		{"no peer measured", nil, false},
		{"all agree", []ClockOffset{off("b", time.Second, 0), off("c", -2*time.Second, 0)}, false},
		{"one of two peers off: the other agrees with us", []ClockOffset{off("b", 0, 0), off("c", time.Hour, 0)}, false},
		{"both peers off: we are the odd one", []ClockOffset{off("b", time.Hour, 0), off("c", time.Hour, 0)}, true},
		{"two nodes that disagree: neither can tell", []ClockOffset{off("b", 10*time.Second, 0)}, true},
		{"beyond the limit only by less than the uncertainty", []ClockOffset{off("b", 6*time.Second, 2*time.Second)}, false},
		{"five nodes, two off", []ClockOffset{off("b", 0, 0), off("c", 0, 0), off("d", time.Hour, 0), off("e", -time.Hour, 0)}, false},
		{"five nodes, three off", []ClockOffset{off("b", 0, 0), off("c", time.Minute, 0), off("d", time.Hour, 0), off("e", -time.Hour, 0)}, true},
		{"exactly at the limit agrees", []ClockOffset{off("b", limit, 0)}, false},
	} {
		err := clockSkewOf(tc.offsets, limit)
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
		{now.Add(-time.Hour), false}, // behind: a forwarded command retried for a while
		{now.Add(5 * time.Second), false},
		{now.Add(6 * time.Second), true},
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
	c.MaxClockAhead = 0
	cmd, _ := fsm.EncodeCommand(fsm.CmdDeleteFile, "req-2", now.Add(time.Hour), fsm.DeleteFile{FileID: "FIL1"})
	if err := c.admit(cmd); err != nil {
		t.Errorf("with the check off: %v", err)
	}
	if code := fsm.ErrorCode(fmt.Errorf("x: %w", fsm.ErrClockAhead)); fsm.ErrorFromCode(code) != fsm.ErrClockAhead {
		t.Errorf("ErrClockAhead does not travel to the proposer: code %q", code)
	}
}
