package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// freezableDisk stands between a trackedStore and bbolt: once frozen, every write blocks until the
// thaw, as writes to a frozen filesystem do. thawLog lets the log's writes through first and
// holds the stable store's (the term and the vote) until the full thaw, which orders the writes of
// a thaw the way a race might.
type freezableDisk struct {
	mu                  sync.Mutex
	logGate, stableGate chan struct{} // closed at the thaw; nil while not frozen
	stableHeld          atomic.Int64  // stable-store writes waiting at the gate
}

func (d *freezableDisk) freeze() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.logGate == nil {
		d.logGate, d.stableGate = make(chan struct{}), make(chan struct{})
	}
}

func (d *freezableDisk) thawLog() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.logGate != nil {
		close(d.logGate)
		d.logGate = nil
	}
}

func (d *freezableDisk) thaw() {
	d.thawLog()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stableGate != nil {
		close(d.stableGate)
		d.stableGate = nil
	}
}

func (d *freezableDisk) do(stable bool, op func() error) error {
	d.mu.Lock()
	gate := d.logGate
	if stable {
		gate = d.stableGate
	}
	d.mu.Unlock()
	if gate != nil {
		if stable {
			d.stableHeld.Add(1)
			defer d.stableHeld.Add(-1)
		}
		<-gate
	}
	return op()
}

// frozenLogStore is the production trackedStore with its bbolt writes going through a
// freezableDisk.
type frozenLogStore struct {
	*trackedStore
	disk *freezableDisk
}

func (s *frozenLogStore) onDisk(stable bool, op func() error) error {
	return s.write(func() error { return s.disk.do(stable, op) })
}
func (s *frozenLogStore) StoreLog(l *raft.Log) error {
	return s.onDisk(false, func() error { return s.BoltStore.StoreLog(l) })
}
func (s *frozenLogStore) StoreLogs(l []*raft.Log) error {
	return s.onDisk(false, func() error { return s.BoltStore.StoreLogs(l) })
}
func (s *frozenLogStore) DeleteRange(lo, hi uint64) error {
	return s.onDisk(false, func() error { return s.BoltStore.DeleteRange(lo, hi) })
}
func (s *frozenLogStore) Set(k, v []byte) error {
	return s.onDisk(true, func() error { return s.BoltStore.Set(k, v) })
}
func (s *frozenLogStore) SetUint64(k []byte, v uint64) error {
	return s.onDisk(true, func() error { return s.BoltStore.SetUint64(k, v) })
}

// fencedNode is one member of a fencedCluster.
type fencedNode struct {
	node *RaftNode
	disk *freezableDisk
	fsm  *raftTestFSM
	// fenceLog is what the store logs (the fence's start and end); raftLog is raft's own output
	// through the production hclog bridge.
	fenceLog, raftLog *testutil.SyncBuffer
	stopped           bool
}

// startFencedCluster starts three real Rafts on loopback TCP, each with the production
// trackedStore over bbolt (on a freezableDisk) and the production raftTransport with a stall
// limit of stallAfter, and the cluster's timings of in-process tests.
func startFencedCluster(t *testing.T, stallAfter time.Duration) []*fencedNode {
	t.Helper()
	var transports []*raft.NetworkTransport
	var conf raft.Configuration
	for i := range 3 {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 2*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		transports = append(transports, tr)
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i)), Address: tr.LocalAddr()})
	}
	var nodes []*fencedNode
	for i, tr := range transports {
		bolt, err := raftboltdb.NewBoltStore(filepath.Join(t.TempDir(), "raft.db"))
		if err != nil {
			t.Fatal(err)
		}
		n := &fencedNode{disk: &freezableDisk{}, fsm: &raftTestFSM{}, fenceLog: &testutil.SyncBuffer{}, raftLog: &testutil.SyncBuffer{}}
		store := &trackedStore{BoltStore: bolt, logger: slog.New(slog.NewTextHandler(n.fenceLog, nil))}
		logs := &frozenLogStore{trackedStore: store, disk: n.disk}
		fenced := &raftTransport{NetworkTransport: tr, log: store, stallAfter: stallAfter, now: time.Now}
		cfg := testutil.RaftConfig(conf.Servers[i].ID)
		cfg.Logger = NewHCLogger(slog.New(slog.NewTextHandler(n.raftLog, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(cfg, logs, logs, snaps, fenced, conf); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(cfg, n.fsm, logs, logs, snaps, fenced)
		if err != nil {
			t.Fatal(err)
		}
		n.node = &RaftNode{Raft: r, Transport: tr, transport: fenced, store: store}
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.disk.thaw()
			if !n.stopped {
				if err := n.node.Shutdown(); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			}
		}
	})
	return nodes
}

// fencedLeader waits for a leader other than not.
func fencedLeader(t *testing.T, nodes []*fencedNode, not *fencedNode) *fencedNode {
	t.Helper()
	var leader *fencedNode
	testutil.WaitForNil(t, 20*time.Second, "a leader", func() error {
		for _, n := range nodes {
			if n != not && n.node.Raft.State() == raft.Leader {
				leader = n
				return nil
			}
		}
		return errors.New("no leader")
	})
	return leader
}

// A leader whose disk hangs is deposed, and stopped while its disk is still frozen. Its heartbeat
// goroutines, which Raft.Shutdown does not wait for, have queued writes of the new leader's term
// behind the hung append; once the disk thaws they must reach bbolt before Shutdown closes it
// (raft panics on a failed term write: "failed to save current term: database not open"). The
// fence logs its start and its end once each, though the node no longer leads at the end, and
// raft's own line for every withheld RPC stays below ERROR.
func TestDeposedLeaderWithAHungDiskShutsDownCleanly(t *testing.T) {
	nodes := startFencedCluster(t, time.Second)
	old := fencedLeader(t, nodes, nil)
	for i := range 5 {
		if err := old.node.Raft.Apply(fmt.Appendf(nil, "before-%d", i), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	old.disk.freeze()
	hung := old.node.Raft.Apply([]byte("on-the-frozen-leader"), 0)
	leader := fencedLeader(t, nodes, old)
	if err := leader.node.Raft.Apply([]byte("after-the-freeze"), 5*time.Second).Error(); err != nil {
		t.Fatalf("apply on the new leader: %v", err)
	}
	// The new leader's heartbeats carry its newer term; the deposed node's goroutines that handle
	// them block writing it.
	testutil.WaitFor(t, 20*time.Second, "a term write held on the frozen disk", func() bool {
		return old.disk.stableHeld.Load() > 0
	})

	// Stop it, and let the disk return with the hung append first: Raft.Shutdown then returns
	// and the store is closed while the term writes are still on their way.
	shutdown := make(chan error, 1)
	go func() { shutdown <- old.node.Shutdown() }()
	old.stopped = true
	old.disk.thawLog()
	testutil.WaitFor(t, 20*time.Second, "the store's Close to begin", func() bool {
		old.node.store.mu.Lock()
		defer old.node.store.mu.Unlock()
		return old.node.store.closing
	})
	old.disk.thaw()
	if err := <-shutdown; err != nil {
		t.Fatalf("shutdown of the deposed leader: %v", err)
	}
	if err := hung.Error(); err == nil {
		t.Logf("the append on the frozen leader committed after the thaw")
	}
	old.node.store.mu.Lock()
	writing, lastErr := old.node.store.writing, old.node.store.lastErr
	old.node.store.mu.Unlock()
	if writing != 0 || lastErr != nil {
		t.Errorf("after shutdown: %d writes in flight, last write error %v; want every queued write done before the store closed", writing, lastErr)
	}

	fenceLog := old.fenceLog.String()
	if starts, ends := strings.Count(fenceLog, "withholding this node's heartbeats"), strings.Count(fenceLog, "resume"); starts != 1 || ends != 1 {
		t.Errorf("the fence logged %d starts and %d ends for one stall; want 1 and 1:\n%s", starts, ends, fenceLog)
	}
	withheld := 0
	for line := range strings.SplitSeq(old.raftLog.String(), "\n") {
		if strings.Contains(line, "not sent: this node's raft log write has stalled") {
			withheld++
			if !strings.Contains(line, "level=DEBUG") {
				t.Errorf("raft logs a withheld RPC above DEBUG: %s", line)
				break
			}
		}
	}
	if old.node.WithheldRPCs() == 0 || withheld == 0 {
		t.Errorf("withheld %d RPCs, of which raft logged %d; want both above 0", old.node.WithheldRPCs(), withheld)
	}
	t.Logf("withheld %d RPCs; raft logged %d of them at DEBUG", old.node.WithheldRPCs(), withheld)

	// The two others go on, and hold what was committed.
	if err := leader.node.Raft.Apply([]byte("after-the-shutdown"), 5*time.Second).Error(); err != nil {
		t.Fatalf("apply after the old leader stopped: %v", err)
	}
	applied := leader.fsm.applied()
	if len(applied) < 7 || applied[0] != "before-0" || applied[4] != "before-4" {
		t.Errorf("the new leader applied %q; want the 5 entries from before the freeze first", applied)
	}
}
