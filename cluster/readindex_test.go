package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/fsmtest"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// inProcessForward is the follower-to-leader hop without sockets: it calls the leader side the
// internal RPC server runs (LeaderEndpoint) directly (rpc_test.go covers the wire). It counts the
// read-index rounds that reach the leader and can hold them, to line requests up behind one.
type inProcessForward struct {
	endpoints map[string]LeaderService // by Raft address
	rounds    atomic.Int32
	mu        sync.Mutex
	hold      chan struct{} // non-nil: each round waits for it to be closed
}

func (f *inProcessForward) ApplyForwarded(ctx context.Context, addr string, cmd []byte) (uint64, string, error) {
	return f.endpoints[addr].ApplyForwarded(ctx, cmd)
}

func (f *inProcessForward) ReadIndex(ctx context.Context, addr string) (uint64, error) {
	f.rounds.Add(1)
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return f.endpoints[addr].ReadIndex(ctx)
}

// readIndexCluster is three real Rafts on in-memory transports with their FSMs and Consensus.
// r0 leads: r1 and r2 wait far longer before they would stand for election, and r1, the follower
// the tests read on, keeps trusting its leader through a short partition.
type readIndexCluster struct {
	trans   []*raft.InmemTransport
	conf    raft.Configuration
	fsms    []*fsm.FSM
	cons    []*Consensus
	forward *inProcessForward
}

func newReadIndexCluster(t *testing.T) *readIndexCluster {
	t.Helper()
	trans, conf := testutil.InmemRafts("ri", 3)
	c := &readIndexCluster{trans: trans, conf: conf, forward: &inProcessForward{endpoints: map[string]LeaderService{}}}
	for i := range 3 {
		cfg := testutil.RaftConfig(conf.Servers[i].ID)
		if i > 0 {
			cfg.HeartbeatTimeout, cfg.ElectionTimeout = 10*time.Second, 10*time.Second
		}
		f := fsmtest.New(t)
		r := testutil.StartRaft(t, cfg, NewRaftFSM(f), trans[i], conf.Servers)
		cons := NewConsensus(string(conf.Servers[i].ID), r, f, c.forward, transportTestLogger())
		cons.LeaderWait = 20 * time.Second
		t.Cleanup(cons.Close)
		c.fsms, c.cons = append(c.fsms, f), append(c.cons, cons)
		c.forward.endpoints[string(conf.Servers[i].Address)] = cons.LeaderEndpoint()
	}
	testutil.WaitFor(t, 10*time.Second, "r0 leads", func() bool { return c.cons[0].IsLeader() })
	c.propose(t, fsm.CmdInitCluster, fsm.InitCluster{
		Config: fsm.ClusterConfig{ClusterID: "ri", Geometry: erasure.Geometry{Data: 2, Parity: 1}, BlockSize: 4096,
			BlocksPerSegment: 4, SigningKey: randomKey(t), CreatedAt: time.Now().UTC()},
		RootKey: fsm.APIKey{ID: "root", Name: "root", Hash: fsm.HashSecret("root-secret"), Permissions: []string{fsm.PermManageAPIKeys}},
	})
	return c
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// propose commits a command through the leader.
func (c *readIndexCluster) propose(t *testing.T, typ fsm.CommandType, payload any) {
	t.Helper()
	cmd, err := fsm.EncodeCommand(typ, fmt.Sprintf("%s-%d", typ, time.Now().UnixNano()), time.Now().UTC(), payload)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.cons[0].Propose(ctx, cmd); err != nil {
		t.Fatalf("propose %s: %v", typ, err)
	}
}

// addKey commits an API key whose secret is name.
func (c *readIndexCluster) addKey(t *testing.T, name string) {
	t.Helper()
	c.propose(t, fsm.CmdCreateAPIKey, fsm.CreateAPIKey{Key: fsm.APIKey{ID: name, Name: name, Hash: fsm.HashSecret(name)}})
}

// partition cuts node i off from the others in both directions; heal reconnects it.
func (c *readIndexCluster) partition(i int) {
	c.trans[i].DisconnectAll()
	for j := range c.trans {
		if j != i {
			c.trans[j].Disconnect(c.conf.Servers[i].Address)
		}
	}
}

func (c *readIndexCluster) heal(i int) {
	for j := range c.trans {
		if j != i {
			c.trans[i].Connect(c.conf.Servers[j].Address, c.trans[j])
			c.trans[j].Connect(c.conf.Servers[i].Address, c.trans[i])
		}
	}
}

// TestFollowerReadIndexWaitsForTheCommittedWrite: a write commits while a follower cannot receive
// it; a read index on that follower, begun after the write, returns only once the follower has
// applied it, so the read that follows sees the write.
func TestFollowerReadIndexWaitsForTheCommittedWrite(t *testing.T) {
	c := newReadIndexCluster(t)
	const follower = 1
	c.partition(follower)
	c.addKey(t, "written-during-the-partition") // commits with r0 and r2
	if _, ok := c.fsms[follower].APIKeyBySecret("written-during-the-partition"); ok {
		t.Fatal("the partitioned follower applied the write")
	}

	type outcome struct {
		err  error
		seen bool
	}
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := c.cons[follower].ReadIndex(ctx)
		_, seen := c.fsms[follower].APIKeyBySecret("written-during-the-partition")
		done <- outcome{err, seen}
	}()
	testutil.WaitFor(t, 10*time.Second, "the follower's read index round to reach the leader", func() bool {
		return c.forward.rounds.Load() >= 1
	})
	select {
	case o := <-done:
		t.Fatalf("the read index returned (err %v, write seen %v) while the follower could not apply the write", o.err, o.seen)
	default:
	}
	c.heal(follower)
	o := <-done
	if o.err != nil || !o.seen {
		t.Fatalf("read index after the heal: err %v, write seen %v; want nil and the write applied", o.err, o.seen)
	}
}

// TestFollowerReadIndexesShareRounds: reads that arrive while a read-index round is out at the
// leader all wait for one next round, so many concurrent reads cost a few leader round trips, and
// each still sees every write committed before it began.
func TestFollowerReadIndexesShareRounds(t *testing.T) {
	c := newReadIndexCluster(t)
	const follower = 1
	hold := make(chan struct{})
	c.forward.mu.Lock()
	c.forward.hold = hold
	c.forward.mu.Unlock()

	var started atomic.Int32
	read := func(key string, out chan<- error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		started.Add(1)
		err := c.cons[follower].ReadIndex(ctx)
		if _, ok := c.fsms[follower].APIKeyBySecret(key); err == nil && !ok {
			err = fmt.Errorf("the read index returned before the follower applied %q", key)
		}
		out <- err
	}
	c.addKey(t, "before-the-first-read")
	first := make(chan error, 1)
	go read("before-the-first-read", first)
	testutil.WaitFor(t, 10*time.Second, "the first round out at the leader", func() bool { return c.forward.rounds.Load() == 1 })

	// Round 1 is held; a write commits, and twenty reads begin after it: none may be answered
	// by round 1, whose commit index may predate the write.
	c.addKey(t, "before-the-batch")
	const readers = 20
	batch := make(chan error, readers)
	for range readers {
		go read("before-the-batch", batch)
	}
	testutil.WaitFor(t, 10*time.Second, "the reads queued behind round 1", func() bool {
		rounds := c.cons[follower].followerRounds
		rounds.mu.Lock()
		defer rounds.mu.Unlock()
		return started.Load() == readers+1 && rounds.next != nil
	})
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range readers {
		if err := <-batch; err != nil {
			t.Fatal(err)
		}
	}
	// Round 1, the round the queued reads share, and at most one more for reads that had not
	// queued yet when that round started.
	if got := c.forward.rounds.Load(); got > 3 {
		t.Fatalf("%d read-index rounds reached the leader for %d reads, want at most 3", got, readers+1)
	}
}

// TestLeaderReadIndexCommitsOneBarrierPerTerm: a leader's commit index is only trusted once an
// entry of its own term committed, so its first read index of a term commits a barrier, and later
// reads of the same term write nothing. A new leader does the same in its term.
func TestLeaderReadIndexCommitsOneBarrierPerTerm(t *testing.T) {
	c := newReadIndexCluster(t)
	readOn := func(i int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.cons[i].ReadIndex(ctx); err != nil {
			t.Fatalf("read index on r%d: %v", i, err)
		}
	}
	readOn(0) // the term's barrier, unless the init's proposal already committed one
	before := c.cons[0].raft.LastIndex()
	for range 5 {
		readOn(0)
	}
	if got := c.cons[0].raft.LastIndex(); got != before {
		t.Fatalf("reads within one term moved the log from %d to %d", before, got)
	}

	if err := c.cons[0].raft.LeadershipTransferToServer(c.conf.Servers[2].ID, c.conf.Servers[2].Address).Error(); err != nil {
		t.Fatal(err)
	}
	r2 := c.cons[2].raft
	// raft's own no-op of the new term is not the read index's doing: wait until it is in the log.
	testutil.WaitFor(t, 10*time.Second, "r2 leads with an entry of its term", func() bool {
		return c.cons[2].IsLeader() && r2.Stats()["last_log_term"] == fmt.Sprint(r2.CurrentTerm())
	})
	start := r2.LastIndex()
	readOn(2)
	barrier := c.cons[2].raft.LastIndex()
	if barrier != start+1 {
		t.Fatalf("the new leader's first read index moved its log from %d to %d, want one barrier", start, barrier)
	}
	for range 5 {
		readOn(2)
	}
	if got := c.cons[2].raft.LastIndex(); got != barrier {
		t.Fatalf("later reads of the term moved the log from %d to %d", barrier, got)
	}
	if got := c.fsms[2].AppliedIndex(); got < barrier {
		t.Fatalf("the new leader answered before applying its barrier: applied %d < %d", got, barrier)
	}
}
