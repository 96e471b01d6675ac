package cluster

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
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
	store := &trackedStore{BoltStore: bolt}

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
	var logs bytes.Buffer
	leader := &raftTransport{NetworkTransport: leaderNet, stallAfter: 5 * time.Second,
		stall:  func() time.Duration { return store.writeStall(time.Now().Add(time.Duration(ahead.Load()))) },
		logger: slog.New(slog.NewTextHandler(&logs, nil))}
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
	if !bytes.Contains(logs.Bytes(), []byte("withholding this node's heartbeats")) || !bytes.Contains(logs.Bytes(), []byte("heartbeats resume")) {
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
