package cluster

import (
	"bytes"
	"errors"
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

// A log write that does not return shows as a growing stall, and while it is older than the limit
// the node sends no AppendEntries or InstallSnapshot (heartbeats included): a leader whose disk
// hangs goes quiet, so its followers elect another. Once the write returns, RPCs flow again.
func TestStalledLogWriteWithholdsRaftRPCs(t *testing.T) {
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(t.TempDir(), "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	var logs bytes.Buffer
	store := &trackedStore{BoltStore: bolt, logger: slog.New(slog.NewTextHandler(&logs, nil))}

	// The follower end: a real network transport that answers every AppendEntries.
	follower, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { follower.Close() })
	var received atomic.Int64
	go func() {
		for rpc := range follower.Consumer() {
			received.Add(1)
			switch rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			default:
				rpc.Respond(nil, errors.New("unexpected rpc"))
			}
		}
	}()
	leaderNet, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leaderNet.Close() })
	var ahead atomic.Int64 // how far the fence's clock runs ahead of the real one
	leader := &raftTransport{NetworkTransport: leaderNet, log: store, stallAfter: 5 * time.Second,
		now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }}
	heartbeat := func() error {
		var resp raft.AppendEntriesResponse
		return leader.AppendEntries("follower", follower.LocalAddr(), &raft.AppendEntriesRequest{Term: 1}, &resp)
	}

	if err := heartbeat(); err != nil {
		t.Fatalf("heartbeat with no write in flight: %v", err)
	}
	if received.Load() != 1 {
		t.Fatalf("follower received %d RPCs, want 1", received.Load())
	}

	// A write that hangs, as one to a frozen filesystem does.
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- store.write(func() error {
			<-release
			return bolt.SetUint64([]byte("CurrentTerm"), 2)
		})
	}()
	testutil.WaitForNil(t, 5*time.Second, "the write in flight", func() error {
		if store.writeStall(time.Now().Add(time.Second)) < time.Second {
			return errors.New("no write in flight yet")
		}
		return nil
	})
	if err := heartbeat(); err != nil {
		t.Fatalf("heartbeat while a write is in flight for less than the limit: %v", err)
	}

	ahead.Store(int64(6 * time.Second))
	if err := heartbeat(); !errors.Is(err, errLogWriteStalled) {
		t.Fatalf("heartbeat with a write in flight for 6 s: %v, want errLogWriteStalled", err)
	}
	var snapResp raft.InstallSnapshotResponse
	if err := leader.InstallSnapshot("follower", follower.LocalAddr(), &raft.InstallSnapshotRequest{Term: 1}, &snapResp, bytes.NewReader(nil)); !errors.Is(err, errLogWriteStalled) {
		t.Fatalf("snapshot with a write in flight for 6 s: %v, want errLogWriteStalled", err)
	}
	if got := received.Load(); got != 2 {
		t.Fatalf("follower received %d RPCs, want 2 (the withheld ones must not reach it)", got)
	}
	if got := leader.withheld.Load(); got != 2 {
		t.Fatalf("withheld = %d, want 2", got)
	}

	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the write, once released: %v", err)
	}
	if got := store.writeStall(time.Now().Add(time.Hour)); got != 0 {
		t.Fatalf("stall with no write in flight = %s, want 0", got)
	}
	if err := heartbeat(); err != nil {
		t.Fatalf("heartbeat once the write returned: %v", err)
	}
	if received.Load() != 3 {
		t.Fatalf("follower received %d RPCs, want 3", received.Load())
	}
	if !bytes.Contains(logs.Bytes(), []byte("withholding this node's heartbeats")) || !bytes.Contains(logs.Bytes(), []byte("heartbeats and replication resume")) {
		t.Errorf("the fence should log when it starts and ends; logged:\n%s", logs.String())
	}
}

// Overlapping writes: the stall is the age of a write still in flight, never of one that returned.
func TestLogWriteStallOfOverlappingWrites(t *testing.T) {
	store := &trackedStore{}
	first, second := make(chan struct{}), make(chan struct{})
	firstDone, secondDone := make(chan error, 1), make(chan error, 1)
	go func() { firstDone <- store.write(func() error { <-first; return nil }) }()
	waitWriting := func(n int) {
		testutil.WaitForNil(t, 5*time.Second, "writes in flight", func() error {
			store.mu.Lock()
			defer store.mu.Unlock()
			if store.writing != n {
				return errors.New("not yet")
			}
			return nil
		})
	}
	waitWriting(1)
	go func() { secondDone <- store.write(func() error { <-second; return nil }) }()
	waitWriting(2)
	close(first)
	<-firstDone
	waitWriting(1)
	returned := time.Now()
	if got := store.writeStall(returned); got > time.Second {
		t.Errorf("stall right after the older write returned = %s; it must not count that write's age", got)
	}
	if got := store.writeStall(returned.Add(10 * time.Second)); got < 9*time.Second {
		t.Errorf("stall 10 s later = %s, want about 10 s", got)
	}
	close(second)
	<-secondDone
	if got := store.writeStall(time.Now().Add(time.Hour)); got != 0 {
		t.Errorf("stall with no write in flight = %s, want 0", got)
	}
}

// One stall is logged once when the fence starts and once when it ends, however many heartbeat
// goroutines ask at once and whichever side of the limit each measures; the end is logged when the
// write returns, not at the next RPC, which a node that lost the lead in the meantime never sends.
func TestLogStallFenceLogsOneStartAndOneEnd(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	store := &trackedStore{logger: slog.New(slog.NewTextHandler(logs, nil))}
	var ahead atomic.Int64
	fence := &raftTransport{log: store, stallAfter: time.Second,
		now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }}
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- store.write(func() error { <-release; return nil }) }()
	testutil.WaitFor(t, 5*time.Second, "the write in flight", func() bool { return store.writeStall(time.Now()) > 0 })

	// Heartbeat goroutines (one per follower, several rounds) around the limit: those whose clock
	// reads past it withhold, the others send, and none ends the stall.
	const askers = 16
	var wg sync.WaitGroup
	var withheld atomic.Int64
	for i := range askers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ahead.CompareAndSwap(0, int64(2*time.Second)) // the first one moves past the limit
			if i%2 == 0 {
				return
			}
			for range 50 {
				if errors.Is(fence.withhold(), errLogWriteStalled) {
					withheld.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if withheld.Load() != askers/2*50 || fence.withheld.Load() != uint64(withheld.Load()) {
		t.Errorf("withheld %d RPCs (counted %d); want all %d asked past the limit", withheld.Load(), fence.withheld.Load(), askers/2*50)
	}
	if got := logs.String(); strings.Count(got, "withholding this node's heartbeats") != 1 || strings.Contains(got, "resume") {
		t.Fatalf("while the write hangs the fence logged:\n%s\nwant one start and no end", got)
	}

	close(release) // no RPC after this: the end is the write's to log
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := logs.String(); strings.Count(got, "withholding this node's heartbeats") != 1 || strings.Count(got, "heartbeats and replication resume") != 1 {
		t.Errorf("after the write returned the fence logged:\n%s\nwant one start and one end", got)
	}
	if err := fence.withhold(); err != nil {
		t.Errorf("withhold with no write in flight: %v", err)
	}
}

// Close waits for the writes in flight before it closes bbolt, so that none of them fails with
// "database not open", and a second Close is a no-op.
func TestLogStoreCloseWaitsForWritesInFlight(t *testing.T) {
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(t.TempDir(), "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	store := &trackedStore{BoltStore: bolt, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	release := make(chan struct{})
	written := make(chan error, 1)
	go func() {
		written <- store.write(func() error {
			<-release
			return bolt.SetUint64([]byte("CurrentTerm"), 7)
		})
	}()
	testutil.WaitFor(t, 5*time.Second, "the write in flight", func() bool { return store.writeStall(time.Now()) > 0 })
	closed := make(chan error, 1)
	go func() { closed <- store.Close() }()
	testutil.WaitFor(t, 5*time.Second, "Close to begin", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.closing
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a write in flight", err)
	default:
	}
	close(release)
	if err := <-written; err != nil {
		t.Fatalf("the write in flight when Close began: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := store.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// The stall limit follows the failure detector: an operator who lengthens Raft's timeouts to ride
// out a slow machine lets slow writes last longer too, and never less than 5 s.
func TestDefaultLogStallTimeoutScalesWithTheMultiplier(t *testing.T) {
	for _, c := range []struct {
		multiplier int
		want       time.Duration
	}{{1, 5 * time.Second}, {2, 5 * time.Second}, {4, 10 * time.Second}, {10, 25 * time.Second}} {
		conf := raft.DefaultConfig() // 1 s heartbeat timeout
		RaftTimings{Multiplier: c.multiplier}.scale(conf)
		if got := defaultLogStallTimeout(conf.HeartbeatTimeout); got != c.want {
			t.Errorf("multiplier %d (heartbeat timeout %s): stall limit %s, want %s", c.multiplier, conf.HeartbeatTimeout, got, c.want)
		}
	}
}
