package fsm

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// The state store is an on-disk format too: a node upgraded in place opens the state.db an older
// build wrote and goes on from its applied index. testdata/store-v1/state.db was written by
// storeFormat 1 (file and token rows v1) on 2026-12-02, by replaying the v1 fixture log; every
// later build must open it and read the same state. Never edit it; a new store format gets a new
// directory and keeps this test.

var writeStoreFixture = flag.Bool("fsm.write-store-fixture", false, "write testdata/store-v<storeFormat>/state.db with this build")

func storeFixtureDir() string { return filepath.Join("testdata", "store-v1") }

// replayFixtureV1 applies the whole v1 fixture log to f.
func replayFixtureV1(t *testing.T, f *FSM) {
	t.Helper()
	logs := openFixtureStore(t, fixtureV1.dir)
	first, _ := logs.FirstIndex()
	last, _ := logs.LastIndex()
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		f.Apply(&l)
	}
}

// TestWriteStoreFixture writes the store fixture; it runs only with -fsm.write-store-fixture and
// refuses to overwrite one.
func TestWriteStoreFixture(t *testing.T) {
	if !*writeStoreFixture {
		t.Skip("writes the store fixture only with -fsm.write-store-fixture")
	}
	dir := storeFixtureDir()
	if _, err := os.Stat(filepath.Join(dir, StoreFile)); err == nil {
		t.Fatalf("%s exists; a fixture is never rewritten (a new format gets a new directory)", dir)
	}
	f := newTestFSM(t)
	replayFixtureV1(t, f)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A copy holds the pages in use only; the store itself is grown in 16 MiB steps.
	if err := f.db.Load().View(func(tx *bbolt.Tx) error {
		return tx.CopyFile(filepath.Join(dir, StoreFile), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestStoreFixtureV1Opens opens (a copy of) the committed store: it holds the state the v1 log led
// to at its last index, and a replay of that log, as raft does after a restart, executes nothing.
func TestStoreFixtureV1Opens(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(storeFixtureDir(), StoreFile), filepath.Join(dir, StoreFile))
	f, err := New(dir, Options{})
	if err != nil {
		t.Fatalf("open the v1 store fixture: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if f.AppliedIndex() != fixtureV1.lastIndex {
		t.Fatalf("applied index %d, want %d", f.AppliedIndex(), fixtureV1.lastIndex)
	}
	checkFixtureStateV1(t, f)
	replayFixtureV1(t, f)
	if n := f.ExecutedEntries(); n != 0 {
		t.Fatalf("replaying the log over a current store executed %d entries", n)
	}
	checkFixtureStateV1(t, f)
}
