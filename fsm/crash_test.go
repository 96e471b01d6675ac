package fsm

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// crashHelperEnv makes the test binary run crashHelper instead of the tests: it is the process
// TestCrashConsistency kills.
const crashHelperEnv = "CAIRN_FSM_CRASH_HELPER"

const (
	crashSeed    = 21
	crashLogLen  = 4000
	crashBatch   = 48
	crashSnapDir = "snaps"
)

// crashHelper applies the deterministic log to the store in dir from its applied index on, in
// batches, forever (it starts over at a restore), while snapshots are persisted to files and,
// every few batches, one of them is restored. It prints "batch <applied index>" after each
// commit so the parent knows when to kill it.
func crashHelper(dir string) error {
	logs := genLog(crashT{}, crashSeed, crashLogLen)
	f, err := New(filepath.Join(dir, "fsm"), Options{})
	if err != nil {
		return err
	}
	snaps := filepath.Join(dir, crashSnapDir)
	if err := os.MkdirAll(snaps, 0o700); err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	for round := 0; ; round++ {
		next := int(f.AppliedIndex())
		if next >= len(logs) {
			next = 0 // start over on a fresh store: restore the first snapshot
		}
		switch {
		case round%6 == 5:
			if err := restoreNewest(f, snaps); err != nil {
				return err
			}
		case round%3 == 1:
			snap, err := f.Snapshot()
			if err != nil {
				return err
			}
			done := make(chan error, 1)
			go func() { done <- persistTo(snap, snaps, f.AppliedIndex()) }()
			f.ApplyBatch(logs[next:min(next+crashBatch, len(logs))]) // apply goes on meanwhile
			if err := <-done; err != nil {
				return err
			}
		default:
			f.ApplyBatch(logs[next:min(next+crashBatch, len(logs))])
		}
		fmt.Fprintf(out, "batch %d\n", f.AppliedIndex())
		if err := out.Flush(); err != nil {
			return err
		}
	}
}

// persistTo writes a snapshot to snaps/<index>.snap through a temporary file, as raft's file
// snapshot store does (only a complete snapshot gets its final name).
func persistTo(snap raft.FSMSnapshot, snaps string, index uint64) error {
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		return err
	}
	tmp := filepath.Join(snaps, "tmp")
	if err := os.WriteFile(tmp, sink.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(snaps, fmt.Sprintf("%020d.snap", index)))
}

func restoreNewest(f *FSM, snaps string) error {
	names, err := filepath.Glob(filepath.Join(snaps, "*.snap"))
	if err != nil || len(names) == 0 {
		return err
	}
	r, err := os.Open(names[len(names)/2]) // an older one too: the state moves back and replays
	if err != nil {
		return err
	}
	return f.Restore(r)
}

// crashT lets genLog run outside a test (its Fatalf cannot fire on the generator's own commands).
type crashT struct{ testing.TB }

func (crashT) Helper()                      {}
func (crashT) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

// TestCrashConsistency SIGKILLs a process that applies batches, persists snapshots and restores
// them, at many points, and reopens its store each time: the state must be exactly a replica's
// that applied the same log up to the store's applied index, and replaying the rest of the log
// must converge with a replica that applied all of it.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes")
	}
	logs := genLog(t, crashSeed, crashLogLen)
	dir := t.TempDir()
	for kill := range 10 {
		waitFor := 2 + kill%6 // batches the helper reports before it is killed
		applied := runAndKill(t, dir, waitFor)
		f := openFSM(t, filepath.Join(dir, "fsm"))
		index := f.AppliedIndex()
		if index > uint64(len(logs)) {
			t.Fatalf("kill %d: applied index %d past the log", kill, index)
		}
		t.Logf("kill %d: helper reported index %d, store reopened at %d", kill, applied, index)
		replica := newTestFSM(t)
		applyInBatches(replica, logs[:index], 7)
		if !bytes.Equal(dump(t, f), dump(t, replica)) {
			t.Fatalf("kill %d: store at index %d differs from a replica that applied the same prefix", kill, index)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		assertOnlyCurrentStore(t, filepath.Join(dir, "fsm"))
	}
	f := openFSM(t, filepath.Join(dir, "fsm"))
	defer f.Close()
	applyInBatches(f, logs, 100)
	all := newTestFSM(t)
	applyInBatches(all, logs, 100)
	if !bytes.Equal(dump(t, f), dump(t, all)) {
		t.Fatal("replaying the rest of the log after the crashes does not converge")
	}
}

// startHelper starts this test binary as the helper that env selects, on dir.
func startHelper(t *testing.T, env, dir string) (*exec.Cmd, io.ReadCloser, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+dir)
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, stderr
}

// runAndKill starts the helper on dir, waits until it has reported batches commits, SIGKILLs it
// mid-work and returns the last applied index it reported.
func runAndKill(t *testing.T, dir string, batches int) uint64 {
	t.Helper()
	cmd, stdout, stderr := startHelper(t, crashHelperEnv, dir)
	sc := bufio.NewScanner(stdout)
	var last uint64
	for n := 0; n < batches && sc.Scan(); n++ {
		last, _ = strconv.ParseUint(strings.TrimPrefix(sc.Text(), "batch "), 10, 64)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, stdout)
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("helper ended by itself (%v) before the kill: %s", err, stderr.String())
	}
	return last
}

// raftCrashHelperEnv makes the test binary run raftCrashHelper: the process
// TestCrashLosingTheMemtableReplaysFromRaft kills.
const raftCrashHelperEnv = "CAIRN_FSM_RAFT_CRASH_HELPER"

const raftCrashCommands = 300

// raftCrashHelper runs a real single-node Raft on a raft-boltdb log in dir, applies
// raftCrashCommands generated commands through it, prints "applied <index>" and waits to be
// killed. Nothing flushes the store's memtable meanwhile (no snapshot, far below its size).
func raftCrashHelper(dir string) error {
	f, err := New(filepath.Join(dir, "fsm"), Options{})
	if err != nil {
		return err
	}
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return err
	}
	r, _ := fixtureRaft(crashT{}, f, logs)
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: fixtureNode, Address: fixtureNode}}}).Error(); err != nil {
		return err
	}
	for r.State() != raft.Leader {
		<-r.LeaderCh()
	}
	g := newCommandGen(crashSeed)
	futures := make([]raft.ApplyFuture, raftCrashCommands)
	for i := range futures {
		futures[i] = r.Apply(g.next(crashT{}), 10*time.Second)
	}
	for _, fu := range futures {
		if err := fu.Error(); err != nil {
			return err
		}
	}
	fmt.Printf("applied %d\n", f.AppliedIndex())
	select {}
}

// TestCrashLosingTheMemtableReplaysFromRaft SIGKILLs a node whose applied batches are only in
// the store's memtable (apply writes no WAL): the reopened store is behind what it had applied,
// and a restarted Raft on the same log replays the difference, to exactly a replica's state.
func TestCrashLosingTheMemtableReplaysFromRaft(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a real process")
	}
	dir := t.TempDir()
	cmd, stdout, stderr := startHelper(t, raftCrashHelperEnv, dir)
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		_ = cmd.Wait()
		t.Fatalf("helper ended without applying: %s", stderr.String())
	}
	applied, err := strconv.ParseUint(strings.TrimPrefix(sc.Text(), "applied "), 10, 64)
	if err != nil || applied < raftCrashCommands {
		t.Fatalf("helper said %q", sc.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	f := openFSM(t, filepath.Join(dir, "fsm"))
	defer f.Close()
	if got := f.AppliedIndex(); got >= applied {
		t.Fatalf("store reopened at %d after the kill, want below %d: the memtable was not lost, the test shows nothing", got, applied)
	}
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	r, _ := fixtureRaft(t, f, logs)
	testutil.WaitFor(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	if err := r.Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() < applied {
		t.Fatalf("raft replayed up to %d, want at least %d", f.AppliedIndex(), applied)
	}
	replica := newTestFSM(t)
	for i := uint64(1); i <= f.AppliedIndex(); i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		replica.Apply(&l)
	}
	if !bytes.Equal(dump(t, f), dump(t, replica)) {
		t.Fatal("the replayed store differs from a replica that applied the same log")
	}
}
