package fsm

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// The state store is an on-disk format too: a node upgraded in place opens the store an older
// build wrote and goes on from its applied index. Each store-v<N> fixture holds the state the v1
// fixture log replays to, written by storeFormat N; every later build must open it and read the
// same state. Never edit one; a new store format gets a new directory and keeps the old tests.
//   - testdata/store-v1/state.db: format 1, bbolt (file and token rows v1), written on 2026-12-02.
//     This build migrates it into pebble at open.
//   - testdata/store-v2/: format 2, pebble v2.1.7 (STORE and the generation it names), written
//     on 2026-12-02.

var writeStoreFixture = flag.Bool("fsm.write-store-fixture", false, "write testdata/store-v<storeFormat>/ with this build")

func storeFixtureDir(format int) string {
	return filepath.Join("testdata", "store-v"+string(rune('0'+format)))
}

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

// TestWriteStoreFixture writes the store fixture of this build's format; it runs only with
// -fsm.write-store-fixture and refuses to overwrite one.
func TestWriteStoreFixture(t *testing.T) {
	if !*writeStoreFixture {
		t.Skip("writes the store fixture only with -fsm.write-store-fixture")
	}
	dir := storeFixtureDir(storeFormat)
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists; a fixture is never rewritten (a new format gets a new directory)", dir)
	}
	work := t.TempDir()
	f := openFSM(t, work)
	replayFixtureV1(t, f)
	if err := f.Close(); err != nil { // flushes: the fixture is the durable store
		t.Fatal(err)
	}
	copyTree(t, work, dir)
}

// TestStoreFixtureV1Migrates opens (a copy of) the committed bbolt store: this build migrates it
// into pebble, which holds the state the v1 log led to at its last index, and a replay of that
// log, as raft does after a restart, executes nothing. state.db is gone afterwards, and the
// migrated store reopens as it is.
func TestStoreFixtureV1Migrates(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(storeFixtureDir(1), LegacyStoreFile), filepath.Join(dir, LegacyStoreFile))
	checkStoreFixture(t, dir)
	if _, err := os.Stat(filepath.Join(dir, LegacyStoreFile)); !os.IsNotExist(err) {
		t.Fatalf("the migrated bbolt store is still there (%v)", err)
	}
	assertOnlyCurrentStore(t, dir)
	checkStoreFixture(t, dir)
}

// TestStoreFixtureV1MigrationRestartsAfterACrash: a crash mid-migration leaves state.db, a
// half-built generation and no STORE; the next open migrates again from scratch.
func TestStoreFixtureV1MigrationRestartsAfterACrash(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(storeFixtureDir(1), LegacyStoreFile), filepath.Join(dir, LegacyStoreFile))
	half := filepath.Join(dir, generationPrefix+"halfbuilt")
	if err := os.MkdirAll(half, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "000001.sst"), []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkStoreFixture(t, dir)
	assertOnlyCurrentStore(t, dir)
}

// TestStoreFixtureV2Opens opens (a copy of) the committed pebble store.
func TestStoreFixtureV2Opens(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, storeFixtureDir(2), dir)
	checkStoreFixture(t, dir)
}

// checkStoreFixture opens the store in dir, checks it holds the v1 log's state at its last index,
// replays the log over it (nothing may execute) and closes it.
func checkStoreFixture(t *testing.T, dir string) {
	t.Helper()
	f, err := New(dir, Options{})
	if err != nil {
		t.Fatalf("open the store fixture: %v", err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}()
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

// copyTree copies the regular files under from into to, keeping the layout.
func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if strings.HasSuffix(rel, ".lock") || filepath.Base(rel) == "LOCK" {
			return nil
		}
		copyFile(t, path, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
