package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// apFuture is a completed raft future.
type apFuture struct {
	err  error
	conf raft.Configuration
}

func (f apFuture) Error() error                      { return f.err }
func (f apFuture) Index() uint64                     { return 1 }
func (f apFuture) Configuration() raft.Configuration { return f.conf }

// apRaft is a Raft that applies configuration changes at once, with no quorum of its own: the
// tests see exactly which changes autopilot asks for. Server "s0" is this node.
type apRaft struct {
	mu       sync.Mutex
	state    raft.RaftState
	servers  []raft.Server
	removed  []raft.ServerID
	promoted []raft.ServerID
}

func newAPRaft(voters, nonVoters int) *apRaft {
	r := &apRaft{state: raft.Leader}
	for i := range voters + nonVoters {
		s := raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("s%d", i)), Address: raft.ServerAddress(fmt.Sprintf("s%d:1", i))}
		if i >= voters {
			s.Suffrage = raft.Nonvoter
		}
		r.servers = append(r.servers, s)
	}
	return r
}

func (r *apRaft) AddNonvoter(raft.ServerID, raft.ServerAddress, uint64, time.Duration) raft.IndexFuture {
	return apFuture{err: errors.New("autopilot must not add servers")}
}

func (r *apRaft) AddVoter(id raft.ServerID, _ raft.ServerAddress, _ uint64, _ time.Duration) raft.IndexFuture {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.servers {
		if r.servers[i].ID == id {
			r.servers[i].Suffrage = raft.Voter
			r.promoted = append(r.promoted, id)
			return apFuture{}
		}
	}
	return apFuture{err: errors.New("autopilot must not add servers")}
}

func (r *apRaft) DemoteVoter(raft.ServerID, uint64, time.Duration) raft.IndexFuture {
	return apFuture{err: errors.New("autopilot must not demote")}
}

func (r *apRaft) LastIndex() uint64          { return 10 }
func (r *apRaft) Leader() raft.ServerAddress { return "s0:1" }

func (r *apRaft) GetConfiguration() raft.ConfigurationFuture {
	r.mu.Lock()
	defer r.mu.Unlock()
	return apFuture{conf: raft.Configuration{Servers: slices.Clone(r.servers)}}
}

func (r *apRaft) RemoveServer(id raft.ServerID, _ uint64, _ time.Duration) raft.IndexFuture {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.servers = slices.DeleteFunc(r.servers, func(s raft.Server) bool { return s.ID == id })
	r.removed = append(r.removed, id)
	return apFuture{}
}

func (r *apRaft) Stats() map[string]string {
	return map[string]string{"last_contact": "0", "last_log_term": "1", "last_log_index": "10"}
}

func (r *apRaft) LeadershipTransferToServer(raft.ServerID, raft.ServerAddress) raft.Future {
	return apFuture{err: errors.New("autopilot must not transfer leadership")}
}

func (r *apRaft) State() raft.RaftState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

func (r *apRaft) changes() (removed, promoted []raft.ServerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.removed), slices.Clone(r.promoted)
}

type apMembers []Member

func (m apMembers) Members() []Member { return m }

// apMember is server id as gossip sees it, in state since age ago.
func apMember(id, state string, age time.Duration) Member {
	return Member{Meta: NodeMeta{ID: id, ClusterAddr: id + ":1"}, State: state, Since: time.Now().Add(-age)}
}

// apStats answers every server as caught up and in contact, except those listed as down.
type apStats struct{ down map[string]bool }

func (s apStats) RaftStats(_ context.Context, addr string) (autopilot.ServerStats, error) {
	if s.down[addr] {
		return autopilot.ServerStats{}, errors.New("unreachable")
	}
	return autopilot.ServerStats{LastTerm: 1, LastIndex: 10}, nil
}

func apConfig() AutopilotConfig {
	return AutopilotConfig{
		Self: "s0", Stats: apStats{}, CleanupDeadServers: true, DeadServerCleanupAfter: time.Minute,
		LastContactThreshold: 200 * time.Millisecond, MaxTrailingLogs: 250, MinQuorum: 3,
		Interval: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	}
}

// runAP runs autopilot until the test ends, and checks that it stops.
func runAP(t *testing.T, cfg AutopilotConfig, r *apRaft, members memberLister) *Autopilot {
	t.Helper()
	a := newAutopilot(cfg, r, members)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if status, _ := a.ap.IsRunning(); status != autopilot.NotRunning {
			t.Errorf("autopilot still %s after Run returned", status)
		}
	})
	return a
}

func waitPasses(t *testing.T, a *Autopilot, n uint64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%d cleanup passes", n), func() bool {
		h, _ := a.Health()
		return h.CleanupPasses >= n
	})
}

func TestAutopilotDeadServerCleanup(t *testing.T) {
	hour := time.Hour
	cases := []struct {
		name              string
		voters, nonVoters int
		minQuorum         int
		cleanupAfter      time.Duration
		states            map[string]string // gossip state of a server; "gone" = unknown to gossip
		age               time.Duration     // how long the listed servers have been in that state
		want              []raft.ServerID
	}{
		{name: "one of five dead past the delay", voters: 5, minQuorum: 3, cleanupAfter: time.Minute,
			states: map[string]string{"s4": StateDead}, age: hour, want: []raft.ServerID{"s4"}},
		{name: "dead for less than the delay", voters: 5, minQuorum: 3, cleanupAfter: time.Minute,
			states: map[string]string{"s4": StateDead}, age: time.Second},
		{name: "three voters keep their dead one (MinQuorum 3)", voters: 3, minQuorum: 3, cleanupAfter: time.Minute,
			states: map[string]string{"s2": StateDead}, age: hour},
		// Three of five dead: a real cluster has no quorum and commits nothing. Even given one,
		// autopilot removes at most a minority per pass and stops at MinQuorum voters.
		{name: "three of five dead", voters: 5, minQuorum: 3, cleanupAfter: time.Minute,
			states: map[string]string{"s2": StateDead, "s3": StateDead, "s4": StateDead}, age: hour,
			want: []raft.ServerID{"s2", "s3"}},
		{name: "left members are the Reconciler's", voters: 5, minQuorum: 3, cleanupAfter: time.Minute,
			states: map[string]string{"s4": StateLeft}, age: hour},
		{name: "a dead non-voter goes whatever the quorum", voters: 3, nonVoters: 1, minQuorum: 3, cleanupAfter: time.Minute,
			states: map[string]string{"s3": StateDead}, age: hour, want: []raft.ServerID{"s3"}},
		{name: "unknown to gossip: counted from when first missed", voters: 5, minQuorum: 3, cleanupAfter: time.Minute,
			states: map[string]string{"s4": "gone"}},
		{name: "unknown to gossip, no delay", voters: 5, minQuorum: 3,
			states: map[string]string{"s4": "gone"}, want: []raft.ServerID{"s4"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newAPRaft(tc.voters, tc.nonVoters)
			var members apMembers
			for _, s := range r.servers {
				id := string(s.ID)
				switch st := tc.states[id]; st {
				case "gone":
				case "":
					members = append(members, apMember(id, StateAlive, hour))
				default:
					members = append(members, apMember(id, st, tc.age))
				}
			}
			cfg := apConfig()
			cfg.MinQuorum, cfg.DeadServerCleanupAfter = tc.minQuorum, tc.cleanupAfter
			a := runAP(t, cfg, r, members)
			waitPasses(t, a, 5)
			removed, promoted := r.changes()
			if !slices.Equal(removed, tc.want) {
				t.Errorf("removed %v, want %v", removed, tc.want)
			}
			if len(promoted) != 0 {
				t.Errorf("promoted %v, want none", promoted)
			}
		})
	}
}

func TestAutopilotCleanupDisabled(t *testing.T) {
	r := newAPRaft(5, 0)
	members := apMembers{apMember("s0", StateAlive, time.Hour), apMember("s1", StateAlive, time.Hour),
		apMember("s2", StateAlive, time.Hour), apMember("s3", StateAlive, time.Hour), apMember("s4", StateDead, time.Hour)}
	cfg := apConfig()
	cfg.CleanupDeadServers = false
	a := runAP(t, cfg, r, members)
	// With cleanup off autopilot never asks for removals; health updates still flow.
	testutil.WaitFor(t, 10*time.Second, "health naming the dead server", func() bool {
		h, ok := a.Health()
		return ok && slices.Equal(h.Unhealthy, []string{"s4"})
	})
	h, _ := a.Health()
	if removed, _ := r.changes(); len(removed) != 0 || h.CleanupPasses != 0 {
		t.Fatalf("cleanup disabled, yet removed %v in %d passes", removed, h.CleanupPasses)
	}
}

// TestAutopilotHealth: health follows the stats fetched from every alive server, and autopilot
// leaves caught-up non-voters alone (promotion is the Reconciler's).
func TestAutopilotHealth(t *testing.T) {
	r := newAPRaft(4, 2)
	var members apMembers
	for _, s := range r.servers {
		members = append(members, apMember(string(s.ID), StateAlive, time.Hour))
	}
	cfg := apConfig()
	cfg.Stats = apStats{down: map[string]bool{"s5:1": true}}
	a := runAP(t, cfg, r, members)
	testutil.WaitFor(t, 10*time.Second, "health of six servers, s5 out of contact", func() bool {
		h, ok := a.Health()
		return ok && len(h.Voters) == 4 && slices.Equal(h.Unhealthy, []string{"s5"}) && !h.Healthy && h.FailureTolerance == 1
	})
	state := &autopilot.State{Servers: map[raft.ServerID]*autopilot.ServerState{"s4": {
		Server: autopilot.Server{ID: "s4", NodeStatus: autopilot.NodeAlive}, State: autopilot.RaftNonVoter,
		Health: autopilot.ServerHealth{Healthy: true, StableSince: time.Now().Add(-time.Hour)},
	}}}
	if got := (&cleanupPromoter{}).CalculatePromotionsAndDemotions(&autopilot.Config{}, state); len(got.Promotions)+len(got.Demotions) != 0 || got.Leader != "" {
		t.Fatalf("promoter asked for %+v; suffrage is the Reconciler's", got)
	}
	if removed, promoted := r.changes(); len(removed)+len(promoted) != 0 {
		t.Fatalf("removed %v, promoted %v; want no changes", removed, promoted)
	}
}

// TestAutopilotRunsForItsTerm: autopilot runs while its leader task runs, and the end of the
// term stops it and clears the leader's health view.
func TestAutopilotRunsForItsTerm(t *testing.T) {
	r := newAPRaft(3, 0)
	members := apMembers{apMember("s0", StateAlive, time.Hour), apMember("s1", StateAlive, time.Hour), apMember("s2", StateAlive, time.Hour)}
	a := newAutopilot(apConfig(), r, members)
	running := func(want autopilot.ExecutionStatus) func() bool {
		return func() bool { s, _ := a.ap.IsRunning(); return s == want }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	testutil.WaitFor(t, 10*time.Second, "autopilot running for the term", running(autopilot.Running))
	testutil.WaitFor(t, 10*time.Second, "leader health", func() bool { h, ok := a.Health(); return ok && h.Healthy })
	cancel()
	<-done
	if s, _ := a.ap.IsRunning(); s != autopilot.NotRunning {
		t.Fatalf("autopilot %s after its term ended", s)
	}
	if _, ok := a.Health(); ok {
		t.Fatal("health still reported after the term ended")
	}
}

func TestKnownServers(t *testing.T) {
	r := newAPRaft(2, 1) // s0, s1 voters; s2 non-voter
	r.servers = append(r.servers, raft.Server{Suffrage: raft.Voter, ID: "s3", Address: "s3:1"})
	members := apMembers{apMember("s0", StateAlive, 0), apMember("s1", StateDead, 0), apMember("s2", StateLeft, 0),
		apMember("x9", StateAlive, 0)} // x9: not in Raft yet; s3: not in gossip
	now := time.Now()
	d := &autopilotDelegate{raft: r, members: members, now: func() time.Time { return now }, missingSince: map[raft.ServerID]time.Time{}}
	got := d.KnownServers()
	want := map[raft.ServerID]autopilot.Server{
		"s0": {ID: "s0", Name: "s0", Address: "s0:1", NodeStatus: autopilot.NodeAlive, NodeType: autopilot.NodeVoter},
		"s1": {ID: "s1", Name: "s1", Address: "s1:1", NodeStatus: autopilot.NodeFailed, NodeType: autopilot.NodeVoter},
		"s2": {ID: "s2", Name: "s2", Address: "s2:1", NodeStatus: autopilot.NodeLeft},
		"s3": {ID: "s3", Name: "s3", Address: "s3:1", NodeStatus: autopilot.NodeFailed, NodeType: autopilot.NodeVoter},
		"x9": {ID: "x9", Name: "x9", Address: "x9:1", NodeStatus: autopilot.NodeAlive},
	}
	if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
		t.Fatalf("known %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	for id, w := range want {
		if g := *got[id]; g.ID != w.ID || g.Name != w.Name || g.Address != w.Address || g.NodeStatus != w.NodeStatus || g.NodeType != w.NodeType {
			t.Errorf("%s: got %+v, want %+v", id, g, w)
		}
	}
	// A server gossip does not know keeps the time it was first missed.
	first := d.downAt("s3")
	now = now.Add(time.Minute)
	d.KnownServers()
	if !first.Equal(d.downAt("s3")) || !first.Equal(now.Add(-time.Minute)) {
		t.Fatalf("s3 missing since %v, then %v; want %v throughout", first, d.downAt("s3"), now.Add(-time.Minute))
	}
}

func TestParseRaftStats(t *testing.T) {
	cases := []struct {
		name    string
		stats   map[string]string
		want    autopilot.ServerStats
		wantErr bool
	}{
		{name: "leader", stats: map[string]string{"last_contact": "0", "last_log_term": "3", "last_log_index": "17"},
			want: autopilot.ServerStats{LastContact: 0, LastTerm: 3, LastIndex: 17}},
		{name: "follower", stats: map[string]string{"last_contact": "12.5ms", "last_log_term": "3", "last_log_index": "16"},
			want: autopilot.ServerStats{LastContact: 12500 * time.Microsecond, LastTerm: 3, LastIndex: 16}},
		{name: "never contacted", stats: map[string]string{"last_contact": "never", "last_log_term": "0", "last_log_index": "0"},
			want: autopilot.ServerStats{LastContact: -1}},
		{name: "bad contact", stats: map[string]string{"last_contact": "soon", "last_log_term": "3", "last_log_index": "16"}, wantErr: true},
		{name: "bad term", stats: map[string]string{"last_contact": "0", "last_log_term": "-1", "last_log_index": "16"}, wantErr: true},
		{name: "missing index", stats: map[string]string{"last_contact": "0", "last_log_term": "3"}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRaftStats(tc.stats)
			if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
				t.Fatalf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzParseRaftStats(f *testing.F) {
	f.Add("0", "1", "2")
	f.Add("never", "0", "0")
	f.Add("1h2m3.5s", "18446744073709551615", "9")
	f.Fuzz(func(t *testing.T, contact, term, index string) {
		st, err := parseRaftStats(map[string]string{"last_contact": contact, "last_log_term": term, "last_log_index": index})
		if err == nil && contact == "never" && st.LastContact != -1 {
			t.Fatalf("never parsed as %v", st.LastContact)
		}
	})
}

// TestRaftStatsRPC: the stats route carries a node's progress (including "never") and its
// failures; before it is served, callers get an error and judge the node unhealthy.
func TestRaftStatsRPC(t *testing.T) {
	m := muxTestServe(t, muxTestSecret, 0)
	s := NewRPCServer(newRPCTestShards(), &rpcTestLeader{}, transportTestLogger())
	served := make(chan error, 1)
	go func() { served <- s.Serve(m.Listener(ConnRPC)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := errors.Join(s.Shutdown(ctx), <-served); err != nil {
			t.Errorf("rpc server: %v", err)
		}
	})
	addr := m.Listener(ConnRPC).Addr().String()
	c := rpcTestClient(t, OSNetwork{}, muxTestSecret)
	ctx := rpcTestCtx(t)
	if _, err := c.RaftStats(ctx, addr); !errors.Is(err, ErrRemote) {
		t.Fatalf("stats before the route is served: %v, want ErrRemote", err)
	}
	var mu sync.Mutex
	answer := map[string]string{"last_contact": "never", "last_log_term": "0", "last_log_index": "0"}
	s.ServeRaftStats(func() (autopilot.ServerStats, error) {
		mu.Lock()
		defer mu.Unlock()
		return parseRaftStats(answer)
	})
	if st, err := c.RaftStats(ctx, addr); err != nil || st != (autopilot.ServerStats{LastContact: -1}) {
		t.Fatalf("stats: %+v, %v; want never contacted", st, err)
	}
	mu.Lock()
	answer = map[string]string{"last_contact": "40ms", "last_log_term": "7", "last_log_index": "99"}
	mu.Unlock()
	if st, err := c.RaftStats(ctx, addr); err != nil || st != (autopilot.ServerStats{LastContact: 40 * time.Millisecond, LastTerm: 7, LastIndex: 99}) {
		t.Fatalf("stats: %+v, %v", st, err)
	}
	mu.Lock()
	answer = map[string]string{}
	mu.Unlock()
	if _, err := c.RaftStats(ctx, addr); !errors.Is(err, ErrRemote) {
		t.Fatalf("failing stats: %v, want ErrRemote", err)
	}
}
