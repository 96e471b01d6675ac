package cluster

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/internal/fsmtest"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// taskEvent is one leader task starting or stopping on one node.
type taskEvent struct {
	node  int
	task  string
	start bool
}

// taskRecorder keeps every event of every node in the order they happened.
type taskRecorder struct {
	mu      sync.Mutex
	events  []taskEvent
	running map[int]int
}

func (r *taskRecorder) record(e taskEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if e.start {
		r.running[e.node]++
	} else {
		r.running[e.node]--
	}
}

func (r *taskRecorder) runningOn(node int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running[node]
}

func (r *taskRecorder) snapshot() []taskEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// leadershipCluster is three real Rafts over in-memory transports, each with the real FSM, a
// Consensus for the barrier and a Leadership running two long tasks and one that returns at once.
type leadershipCluster struct {
	rafts  []*raft.Raft
	trans  []*raft.InmemTransport
	loops  []*Leadership
	cancel []context.CancelFunc
	wgs    []*sync.WaitGroup
	rec    *taskRecorder
}

const longTasks = 2

func newLeadershipCluster(t *testing.T) *leadershipCluster {
	t.Helper()
	c := &leadershipCluster{rec: &taskRecorder{running: map[int]int{}}}
	trans, conf := testutil.InmemRafts("n", 3)
	c.trans = trans
	for i := range 3 {
		cfg := testutil.RaftConfig(conf.Servers[i].ID)
		f := fsmtest.New(t)
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(cfg, NewRaftFSM(f), store, store, raft.NewInmemSnapshotStore(), c.trans[i])
		if err != nil {
			t.Fatal(err)
		}
		cons := NewConsensus(string(cfg.LocalID), r, f, nil, transportTestLogger())
		node := i
		task := func(name string) LeaderTask {
			return LeaderTask{Name: name, Run: func(ctx context.Context) {
				c.rec.record(taskEvent{node: node, task: name, start: true})
				<-ctx.Done()
				c.rec.record(taskEvent{node: node, task: name})
			}}
		}
		l := &Leadership{Raft: r, Barrier: cons.Barrier, Poll: 20 * time.Millisecond, Logger: transportTestLogger(),
			Tasks: []LeaderTask{task("reconcile"), task("repair"), {Name: "initialise", Run: func(context.Context) {}}}}
		ctx, cancel := context.WithCancel(context.Background())
		wg := &sync.WaitGroup{}
		l.Run(ctx, wg)
		c.rafts, c.loops, c.cancel, c.wgs = append(c.rafts, r), append(c.loops, l), append(c.cancel, cancel), append(c.wgs, wg)
		t.Cleanup(func() {
			cancel()
			wg.Wait()
			cons.Close()
			_ = r.Shutdown().Error()
		})
	}
	if err := c.rafts[0].BootstrapCluster(conf).Error(); err != nil {
		t.Fatal(err)
	}
	return c
}

// leaderWithTasks waits for a leader other than not whose tasks all run, and returns it.
func (c *leadershipCluster) leaderWithTasks(t *testing.T, not int) int {
	t.Helper()
	leader := -1
	testutil.WaitFor(t, 10*time.Second, "a new leader running its tasks", func() bool {
		for i, r := range c.rafts {
			if i != not && r.State() == raft.Leader && c.rec.runningOn(i) == longTasks {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// TestLeadershipHandoverStopsOldTasksFirst: on a leadership transfer the old leader's tasks have
// all returned before the new leader starts any of its own, and only one node ever runs them.
func TestLeadershipHandoverStopsOldTasksFirst(t *testing.T) {
	c := newLeadershipCluster(t)
	first := c.leaderWithTasks(t, -1)
	for range 2 {
		mark := len(c.rec.snapshot())
		if err := c.loops[first].Transfer(); err != nil {
			t.Fatalf("transfer from n%d: %v", first, err)
		}
		next := c.leaderWithTasks(t, first)
		events := c.rec.snapshot()[mark:]
		stopped, started := 0, false
		for _, e := range events {
			switch {
			case e.node == first && !e.start:
				if started {
					t.Fatalf("n%d stopped %s after n%d started its tasks: %+v", first, e.task, next, events)
				}
				stopped++
			case e.node == next && e.start:
				started = true
			case e.node != next:
				t.Fatalf("unexpected event %+v", e)
			}
		}
		if stopped != longTasks || c.rec.runningOn(first) != 0 {
			t.Fatalf("old leader n%d stopped %d of %d tasks, %d still running", first, stopped, longTasks, c.rec.runningOn(first))
		}
		first = next
	}
}

// TestLeadershipLostWithoutNotice: a leader cut off from the others stops its tasks once Raft
// steps down, and a node that stops cancels its tasks and waits for them.
func TestLeadershipLostWithoutNotice(t *testing.T) {
	c := newLeadershipCluster(t)
	old := c.leaderWithTasks(t, -1)
	c.trans[old].DisconnectAll()
	for i := range c.trans {
		if i != old {
			c.trans[i].Disconnect(c.trans[old].LocalAddr())
		}
	}
	testutil.WaitFor(t, 10*time.Second, "the cut-off leader to stop its tasks", func() bool { return c.rec.runningOn(old) == 0 })
	next := c.leaderWithTasks(t, old)

	c.cancel[next]()
	c.wgs[next].Wait()
	if n := c.rec.runningOn(next); n != 0 {
		t.Fatalf("%d leader tasks still running after the loop returned", n)
	}
}
