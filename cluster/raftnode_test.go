package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// restartableRaft is one Raft server on a real raft-boltdb log, a file snapshot store and the
// fsm's bbolt store, all in dir, started the way StartRaft starts it (skipRestoreIfCurrent).
type restartableRaft struct {
	raft *raft.Raft
	fsm  *fsm.FSM
	logs *raftboltdb.BoltStore
}

func startRestartable(t *testing.T, dir string) *restartableRaft {
	t.Helper()
	f, err := fsm.New(filepath.Join(dir, "fsm"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("a")
	conf := testutil.RaftConfig("a")
	conf.BatchApplyCh = true
	conf.SnapshotThreshold, conf.SnapshotInterval, conf.TrailingLogs = 1<<20, time.Hour, 1<<20
	if err := skipRestoreIfCurrent(conf, NewRaftFSM(f), logs, snaps, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, NewRaftFSM(f), logs, logs, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	return &restartableRaft{raft: r, fsm: f, logs: logs}
}

func (n *restartableRaft) stop(t *testing.T) {
	t.Helper()
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.fsm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.logs.Close(); err != nil {
		t.Fatal(err)
	}
}

func (n *restartableRaft) apply(t *testing.T, typ fsm.CommandType, req string, p any) uint64 {
	t.Helper()
	cmd, err := fsm.EncodeCommand(typ, req, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), p)
	if err != nil {
		t.Fatal(err)
	}
	f := n.raft.Apply(cmd, 10*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if r := f.Response().(*fsm.Result); r.Err != nil {
		t.Fatalf("%s: %v", typ, r.Err)
	}
	return f.Index()
}

func (n *restartableRaft) waitLeader(t *testing.T) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, "leader", func() bool { return n.raft.State() == raft.Leader })
}

var testGeometry = erasure.Geometry{Data: 1, Parity: 0}

func initClusterPayload() fsm.InitCluster {
	return fsm.InitCluster{
		Config:  fsm.ClusterConfig{ClusterID: "c", Geometry: testGeometry, BlockSize: 1 << 20, BlocksPerSegment: 1},
		RootKey: fsm.APIKey{ID: "root", Hash: fsm.HashSecret("root")},
	}
}

func createFilePayload(i int) fsm.CreateFile {
	id := fmt.Sprintf("FIL%017d", i)
	return fsm.CreateFile{
		File: fsm.File{ID: id, Name: "f", CreatedAt: time.Unix(1, 0).UTC(), UpdatedAt: time.Unix(1, 0).UTC(),
			Layout: fsm.Layout{Geometry: testGeometry, BlockSize: 1 << 20}},
		Tokens: []fsm.Token{{ID: "TOK" + id[3:], Secret: "s" + id, FileID: id, Access: fsm.AccessFull}},
	}
}

// TestRestartReplaysOnlyTheLogTail: a clean restart with the store at or past the newest snapshot
// restores nothing and executes only what is new; a node whose store was lost restores the
// snapshot and replays the log after it.
func TestRestartReplaysOnlyTheLogTail(t *testing.T) {
	dir := t.TempDir()
	n := startRestartable(t, dir)
	if err := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "a", Address: "a"}}}).Error(); err != nil {
		t.Fatal(err)
	}
	n.waitLeader(t)
	n.apply(t, fsm.CmdInitCluster, "init", initClusterPayload())
	for i := range 40 {
		n.apply(t, fsm.CmdCreateFile, fmt.Sprintf("c%d", i), createFilePayload(i))
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for i := 40; i < 70; i++ {
		n.apply(t, fsm.CmdCreateFile, fmt.Sprintf("c%d", i), createFilePayload(i))
	}
	applied := n.fsm.AppliedIndex()
	n.stop(t)

	n = startRestartable(t, dir)
	if got := n.fsm.AppliedIndex(); got != applied {
		t.Fatalf("store reopened at %d, want %d", got, applied)
	}
	n.waitLeader(t)
	last := n.apply(t, fsm.CmdCreateFile, "after-restart", createFilePayload(70))
	testutil.WaitFor(t, 10*time.Second, "apply", func() bool { return n.fsm.AppliedIndex() >= last })
	// The 30 entries after the snapshot are handed over again by raft and skipped; only the new
	// entry runs.
	if got := n.fsm.ExecutedEntries(); got != 1 {
		t.Fatalf("restart executed %d entries, want only the 1 proposed after it", got)
	}
	if files, _ := n.fsm.Counts(); files != 71 {
		t.Fatalf("%d files after restart, want 71", files)
	}
	n.stop(t)

	// Lose the state store: the next start restores the snapshot and replays the tail.
	if err := os.RemoveAll(filepath.Join(dir, "fsm")); err != nil {
		t.Fatal(err)
	}
	n = startRestartable(t, dir)
	defer n.stop(t)
	n.waitLeader(t)
	last = n.apply(t, fsm.CmdBarrier, "barrier", fsm.Barrier{Node: "a"})
	testutil.WaitFor(t, 10*time.Second, "apply", func() bool { return n.fsm.AppliedIndex() >= last })
	if files, _ := n.fsm.Counts(); files != 71 {
		t.Fatalf("%d files after rebuilding the store, want 71", files)
	}
	if _, ok := n.fsm.File(createFilePayload(55).File.ID); !ok {
		t.Fatal("a file from the log after the snapshot is missing")
	}
}

// TestStoreAheadOfRaftIsRefused: a state store from another history (ahead of the raft dir) must
// not be trusted to skip entries.
func TestStoreAheadOfRaftIsRefused(t *testing.T) {
	dir := t.TempDir()
	f, err := fsm.New(filepath.Join(dir, "fsm"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd, _ := fsm.EncodeCommand(fsm.CmdBarrier, "b", time.Unix(1, 0), fsm.Barrier{})
	f.ApplyEntries([]fsm.Entry{{Index: 5, Command: true, Data: cmd}})
	logs := raft.NewInmemStore()
	err = skipRestoreIfCurrent(raft.DefaultConfig(), NewRaftFSM(f), logs, raft.NewInmemSnapshotStore(), slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("a store at index 5 over an empty raft dir was accepted")
	}
}
