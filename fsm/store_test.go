package fsm

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// genLog returns n deterministic log entries (index 1..n) from commandGen's seed.
func genLog(t testing.TB, seed uint64, n int) []*raft.Log {
	g := newCommandGen(seed)
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = cmdLog(uint64(i+1), g.next(t))
	}
	return logs
}

// applyInBatches applies logs in batches of size.
func applyInBatches(f *FSM, logs []*raft.Log, size int) {
	for len(logs) > 0 {
		n := min(size, len(logs))
		f.ApplyBatch(logs[:n])
		logs = logs[n:]
	}
}

func openFSM(t testing.TB, dir string) *FSM {
	t.Helper()
	f, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRestartSkipsWhatTheStoreApplied(t *testing.T) {
	logs := genLog(t, 11, 600)
	dir := t.TempDir()
	f := openFSM(t, dir)
	applyInBatches(f, logs[:400], 64)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	f = openFSM(t, dir)
	defer f.Close()
	if got := f.AppliedIndex(); got != 400 {
		t.Fatalf("reopened store at applied index %d, want 400", got)
	}
	// Raft replays from its snapshot (here: from the start); only the tail may be executed.
	applyInBatches(f, logs, 64)
	if got := f.ExecutedEntries(); got != 200 {
		t.Fatalf("restart executed %d entries, want the 200 after the store's applied index", got)
	}
	want := newTestFSM(t)
	applyInBatches(want, logs, 1)
	if !bytes.Equal(dump(t, f), dump(t, want)) {
		t.Fatal("restarted store differs from a replica that applied the same log")
	}
}

func TestScansIndexesAndCounters(t *testing.T) {
	f := newTestFSM(t)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	const n = 2*scanChunk + 17 // several chunks
	logs := make([]*raft.Log, 0, n)
	for i := range n {
		id := fmt.Sprintf("FIL%05d", i)
		c := fileCmd(id)
		c.File.CreatedAt = t0.Add(time.Duration(n-i) * time.Second) // creation order is the reverse of id order
		if i%3 == 0 {
			c.File.ExpiresAt = t0.Add(time.Duration(i) * time.Minute)
			c.Tokens[0].ExpiresAt = c.File.ExpiresAt.Add(time.Hour)
		}
		logs = append(logs, cmdLog(uint64(i+2), mustEncode(t, CmdCreateFile, "r"+id, t0, c)))
	}
	applyInBatches(f, logs, 256)
	if files, tokens := f.Counts(); files != n || tokens != n {
		t.Fatalf("Counts = %d files, %d tokens, want %d each", files, tokens, n)
	}
	var ids []string
	f.Files(func(file File) bool { ids = append(ids, file.ID); return true })
	if len(ids) != n || ids[0] != "FIL00000" || ids[n-1] != fmt.Sprintf("FIL%05d", n-1) {
		t.Fatalf("Files visited %d files (%v...), want %d in id order", len(ids), ids[:3], n)
	}
	var created []string
	f.FilesByCreation(func(file File) bool { created = append(created, file.ID); return len(created) < scanChunk+5 })
	if len(created) != scanChunk+5 || created[0] != fmt.Sprintf("FIL%05d", n-1) {
		t.Fatalf("FilesByCreation gave %d files starting %s, want %d from the newest id", len(created), created[0], scanChunk+5)
	}
	tokens := 0
	f.Tokens(func(Token) bool { tokens++; return true })
	if tokens != n {
		t.Fatalf("Tokens visited %d, want %d", tokens, n)
	}
	now := t0.Add(30 * time.Minute) // files 0, 3, ..., 30 expire at or before now
	exp := f.ExpiredFiles(now, 100)
	if len(exp) != 11 || exp[0].ID != "FIL00000" || exp[10].ID != "FIL00030" {
		t.Fatalf("ExpiredFiles = %d files, want the 11 that expire by %s", len(exp), now)
	}
	if got := f.ExpiredFiles(now, 4); len(got) != 4 {
		t.Fatalf("ExpiredFiles with limit 4 returned %d", len(got))
	}
	if got := f.ExpiredTokens(now.Add(time.Hour), 1000); len(got) != 11 {
		t.Fatalf("ExpiredTokens = %d, want 11", len(got))
	}
	ids = ids[:0]
	for _, file := range exp {
		ids = append(ids, file.ID)
	}
	r := f.Apply(cmdLog(uint64(n+2), mustEncode(t, CmdExpire, "exp", now, Expire{FileIDs: ids}))).(*Result)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if files, tokens := f.Counts(); files != n-11 || tokens != n-11 {
		t.Fatalf("after expiry Counts = %d, %d, want %d each", files, tokens, n-11)
	}
	if got := f.ExpiredFiles(now, 100); len(got) != 0 {
		t.Fatalf("expired files left in the index: %d", len(got))
	}
	if got := f.ExpiredTokens(now.Add(time.Hour), 1000); len(got) != 0 {
		t.Fatalf("tokens of expired files left in the expiry index: %d", len(got))
	}
}

func TestRefusedSnapshotLeavesStateAndNoFiles(t *testing.T) {
	f := newTestFSM(t)
	applyInBatches(f, genLog(t, 5, 200), 32)
	before := dump(t, f)
	other := newTestFSM(t)
	applyInBatches(other, genLog(t, 6, 300), 32)
	good := dump(t, other)
	truncated := good[:len(good)-len(`{"kind":"end"}`)-1]
	for name, stream := range map[string][]byte{
		"truncated": truncated,
		"garbage":   []byte("{\"version\":1}\n{\"kind\":\"file\",\"data\":{\"id\":\"x\",\"bogus\":1}}\n"),
		"version":   []byte(`{"version":99}`),
	} {
		err := f.Restore(io.NopCloser(bytes.NewReader(stream)))
		if !errors.Is(err, ErrInvalidSnapshot) {
			t.Fatalf("%s: Restore = %v, want ErrInvalidSnapshot", name, err)
		}
		if !bytes.Equal(dump(t, f), before) {
			t.Fatalf("%s: a refused snapshot changed the state", name)
		}
	}
	assertOnlyCurrentStore(t, f.Dir())
}

// assertOnlyCurrentStore checks that dir holds the STORE pointer and the generation it names,
// and nothing else (no half-built or replaced generation).
func assertOnlyCurrentStore(t *testing.T, dir string) {
	t.Helper()
	current, err := currentGeneration(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != StorePointerFile || names[1] != current {
		t.Fatalf("store dir holds %v, want only %s and %s", names, StorePointerFile, current)
	}
}

// TestRestoreSwapIsAtomicForReaders restores two different states over and over while readers
// run: every read must come from one whole state, never a mix or an error.
func TestRestoreSwapIsAtomicForReaders(t *testing.T) {
	states := make([][]byte, 2)
	counts := make([][2]int, 2)
	for i := range states {
		src := newTestFSM(t)
		src.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
		logs := []*raft.Log{cmdLog(2, mustEncode(t, CmdCreateFile, "common", t0, fileCmd("FILcommon")))}
		for j := range 50 * (i + 1) {
			id := fmt.Sprintf("FIL%d-%d", i, j)
			logs = append(logs, cmdLog(uint64(j+3), mustEncode(t, CmdCreateFile, "r"+id, t0, fileCmd(id))))
		}
		applyInBatches(src, logs, 64)
		states[i] = dump(t, src)
		counts[i][0], counts[i][1] = src.Counts()
	}
	f := newTestFSM(t)
	if err := f.Restore(io.NopCloser(bytes.NewReader(states[0]))); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Value
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				files, tokens := f.Counts()
				if [2]int{files, tokens} != counts[0] && [2]int{files, tokens} != counts[1] {
					bad.Store(fmt.Sprintf("Counts = %d, %d: neither state", files, tokens))
				}
				if _, ok := f.Config(); !ok {
					bad.Store("Config missing during a swap")
				}
				n := 0
				f.Files(func(File) bool { n++; return true })
				if n != counts[0][0] && n != counts[1][0] { // one chunk: one state
					bad.Store(fmt.Sprintf("Files saw %d files: neither state", n))
				}
				if _, ok := f.TokenBySecret("secret-FILcommon-full"); !ok {
					bad.Store("a token both states hold did not resolve")
				}
			}
		})
	}
	for i := range 20 {
		if err := f.Restore(io.NopCloser(bytes.NewReader(states[i%2]))); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if msg := bad.Load(); msg != nil {
		t.Fatal(msg)
	}
	if !bytes.Equal(dump(t, f), states[1]) {
		t.Fatal("after the last restore the state is not the last snapshot's")
	}
}

// TestFullDiskRefusesCleanlyAndRecovers fills a small filesystem until pebble cannot flush a full
// memtable: from then on batches are refused, the applied index and the state stay, snapshots
// are refused, and once space is back (and pebble's retried flush went through) the held-back
// entries are applied before the next batch, as if nothing had happened.
func TestFullDiskRefusesCleanlyAndRecovers(t *testing.T) {
	// Room for one flushed memtable once the ballast is gone, and not before.
	mnt := testutil.MountTmpfs(t, "48m")
	dir := filepath.Join(mnt, "fsm")
	f := openFSM(t, dir)
	defer f.Close()
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 44<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	// Each description is 16 KiB of its own seeded random text: pebble compresses its tables, and
	// a repeated description shrank the entries to tables that fit the disk after all.
	random := rand.New(rand.NewPCG(10, 10))
	incompressible := func() string {
		b := make([]byte, 12<<10)
		for i := range b {
			b[i] = byte(random.Uint32())
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	var all []*raft.Log
	index := uint64(1)
	batch := func() []*raft.Log {
		var logs []*raft.Log
		for range 16 {
			index++
			id := fmt.Sprintf("FIL%d", index)
			c := fileCmd(id)
			c.File.Description = incompressible()
			logs = append(logs, cmdLog(index, mustEncode(t, CmdCreateFile, "r"+id, t0, c)))
		}
		all = append(all, logs...)
		return logs
	}
	// Apply a memtable and a quarter: pebble rotates the full memtable and flushes it, and the
	// flushed table does not fit. The failure shows once pebble's writers have paused on the
	// full disk and retried (diskFullPause), so it may come after the last of these batches:
	// wait for it, then a batch must be refused.
	var lastGood uint64
	failed := false
	for written := 0; written < memTableBytes*5/4; {
		logs := batch()
		if r := f.ApplyBatch(logs)[0].(*Result); errors.Is(r.Err, ErrStateUnavailable) {
			failed = true
			break
		}
		lastGood = index
		for _, l := range logs {
			written += len(l.Data)
		}
	}
	if !failed {
		testutil.WaitFor(t, 30*time.Second, "the failed flush to show", func() bool { return f.db.Load().err() != nil })
		if r := f.ApplyBatch(batch())[0].(*Result); !errors.Is(r.Err, ErrStateUnavailable) {
			t.Fatalf("a batch after the flush failed: %v, want ErrStateUnavailable", r.Err)
		}
	}
	if f.AppliedIndex() != lastGood {
		t.Fatalf("applied index moved to %d on a failed commit, want %d", f.AppliedIndex(), lastGood)
	}
	if f.StateErr() == nil {
		t.Fatal("StateErr is nil after a failed commit")
	}
	if _, err := f.Snapshot(); err == nil {
		t.Fatal("Snapshot succeeded on a failing store")
	}
	// pebble's writers pause on the full disk instead of retrying the flush in a busy loop
	if f.db.Load().diskFullPauses.Load() == 0 {
		t.Fatal("no pause of the store's writers on the full disk")
	}
	files, _ := f.Counts()
	if uint64(files) != lastGood-1 {
		t.Fatalf("the failed batch is visible: %d files, want %d", files, lastGood-1)
	}
	// A second failing batch is held back too.
	if r := f.ApplyBatch(batch())[0].(*Result); !errors.Is(r.Err, ErrStateUnavailable) {
		t.Fatalf("second batch on a full disk: %v", r.Err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	// Pebble retries the failed flush in the background; once one succeeds, the next batch
	// applies the held-back entries and its own. (Applying batches while waiting would grow the
	// backlog towards maxBacklogBytes, where the FSM halts.)
	testutil.WaitFor(t, 30*time.Second, "pebble's retried flush to succeed", func() bool { return f.db.Load().flushFailure() == nil })
	if r := f.ApplyBatch(batch())[0].(*Result); r.Err != nil {
		t.Fatalf("apply after space came back: %v", r.Err)
	}
	if f.StateErr() != nil || f.AppliedIndex() != index {
		t.Fatalf("after recovery StateErr = %v, applied %d, want nil and %d", f.StateErr(), f.AppliedIndex(), index)
	}
	if files, _ := f.Counts(); uint64(files) != index-1 {
		t.Fatalf("held-back entries lost: %d files, want %d", files, index-1)
	}
	want := newTestFSM(t)
	want.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	applyInBatches(want, all, 16)
	if !bytes.Equal(dump(t, f), dump(t, want)) {
		t.Fatal("the store that ran full differs from a replica that applied the same log")
	}
}

// TestPersistEndsTheReadTransaction: raft.RecoverCluster persists a snapshot and never calls
// Release; the store must still close (an open read transaction would block Close for ever).
func TestPersistEndsTheReadTransaction(t *testing.T) {
	f := openFSM(t, t.TempDir())
	applyInBatches(f, genLog(t, 3, 50), 16)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	snap.Release() // after Persist, and after Close: harmless
}

// TestCloseReportsAFlushItCouldNotDo: a store whose background flush failed on a full disk is
// closed with a flush asked for, just after space came back. The store has no WAL, so Close
// drops what is not flushed: close(true) may return nil only if every write is durable. It
// skipped the flush once one had failed, and returned nil, so a Restore or migration on a full
// disk installed an empty generation as the restored state (helper-40): the replica's applied
// index said 5000 while its store was empty at 0.
func TestCloseReportsAFlushItCouldNotDo(t *testing.T) {
	mnt := testutil.MountTmpfs(t, "48m")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 40<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(mnt, "gen")
	o := storeOptions{cacheBytes: DefaultCacheBytes, logger: slog.New(slog.DiscardHandler)}
	h, err := openDB(path, o)
	if err != nil {
		t.Fatal(err)
	}
	random := rand.New(rand.NewPCG(7, 7))
	value := make([]byte, 64<<10)
	// A memtable and a quarter of incompressible values: the full memtable is flushed, and its
	// table does not fit the disk.
	keys := memTableBytes * 5 / 4 / len(value)
	for i := range keys {
		for j := range value {
			value[j] = byte(random.Uint32())
		}
		if err := h.db.Set(fmt.Appendf(nil, "k%06d", i), value, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 30*time.Second, "the failed flush to show", func() bool { return h.flushFailure() != nil })
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	closeErr := h.close(true)
	t.Logf("close: %v", closeErr)
	if closeErr != nil {
		return // said so: the caller does not take the store for its state
	}
	h, err = openDB(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close(false)
	for i := range keys {
		_, c, err := h.db.Get(fmt.Appendf(nil, "k%06d", i))
		if err != nil {
			t.Fatalf("close(true) returned nil, yet key %d of %d is gone after a reopen: %v", i, keys, err)
		}
		c.Close()
	}
}

// TestDamagedStorePointerIsRefused: a STORE pointer cut short (or naming a generation that is
// not there, or a file) is refused, and the real generation is kept. It was taken: the real
// generation was removed as a leftover and an empty store opened at index 0 (helper-40).
func TestDamagedStorePointerIsRefused(t *testing.T) {
	for _, damage := range []string{"cut", "missing", "file"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			f := openFSM(t, dir)
			f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			gen, err := currentGeneration(dir)
			if err != nil {
				t.Fatal(err)
			}
			named := map[string]string{"cut": gen[:len(gen)-3], "missing": generationPrefix + "999", "file": generationPrefix + "file"}[damage]
			if damage == "file" {
				os.WriteFile(filepath.Join(dir, named), []byte("x"), 0o600)
			}
			if err := os.WriteFile(filepath.Join(dir, StorePointerFile), []byte(named+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if g, err := New(dir, Options{}); err == nil {
				g.Close()
				t.Fatalf("a store whose pointer names %q opened", named)
			} else if !strings.Contains(err.Error(), "pointer is damaged") {
				t.Errorf("error %q does not say why", err)
			}
			if _, err := os.Stat(filepath.Join(dir, gen)); err != nil {
				t.Fatalf("the real generation is gone: %v", err)
			}
		})
	}
}

// endlessLine is a stream of 'a' without a newline.
type endlessLine struct{ left int64 }

func (r *endlessLine) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.left))
	for i := range p[:n] {
		p[i] = 'a'
	}
	r.left -= int64(n)
	return n, nil
}

// TestSnapshotLineIsBounded: a stream without newlines is refused once a line passes the
// bound (maxSnapshotLine in a restore; 1 MiB here), instead of being read into memory whole
// (helper-40: a 512 MiB line peaked at 1.5 GiB of heap; a larger file would have taken the node).
// A line within the bound, across many buffer fills, still reads.
func TestSnapshotLineIsBounded(t *testing.T) {
	src := &endlessLine{left: 1 << 30}
	lines := &lineReader{r: bufio.NewReaderSize(src, 64<<10), maxLine: 1 << 20}
	if _, err := lines.next(); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("a stream without newlines: %v, want the line bound", err)
	}
	if read := int64(1<<30) - src.left; read > 1<<20+128<<10 {
		t.Errorf("read %d bytes before refusing, want about 1 MiB", read)
	}
	long := append(bytes.Repeat([]byte("b"), 1<<20-1), '\n')
	lines = &lineReader{r: bufio.NewReaderSize(bytes.NewReader(long), 64<<10), maxLine: 1 << 20}
	if line, err := lines.next(); err != nil || len(line) != 1<<20-1 {
		t.Fatalf("a line just within the bound: %d bytes, %v", len(line), err)
	}
}
