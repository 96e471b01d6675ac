package fsm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// The committed fixtures are what a cluster of an older build really wrote: its Raft log (the
// raft-boltdb file) and an FSM snapshot taken at the end of that log. Every later build must
// replay and restore them to the same state. These tests must keep passing forever; a change that
// breaks them breaks every cluster that still holds such entries. Never edit the files under
// testdata; a new format gets a new directory (see DESIGN.md, "Evolving commands and snapshots").

// fixtureV1 is what the fixture of command and snapshot version 1 (written on 2026-12-01 by
// TestWriteFixtures, before any other version existed) must replay to.
var fixtureV1 = fixtureSpec{
	dir: "testdata/v1",
	results: []string{
		"not_initialized", "", "already_initialized", "", "", // early create, init, second init, barrier, api key
		"", "", "", "", "", // files 1 and 2, token create and delete, replayed upload
		"conflict", "last_full_token", "", "", "not_found", // refusals, file 3 created and deleted, unknown delete
		"", "", "", "", // settings, rotation, temporary key created and revoked
		"", "conflict", "", "", // repair, stale repair, move, remove node
		"", "", "invalid_command", "", // expire, file 4, malformed entry, final barrier
	},
	lastIndex: 29,
	check:     checkFixtureStateV1,
}

// fixtureSpec is what one committed fixture must replay and restore to.
type fixtureSpec struct {
	dir string
	// results are the error codes of the command entries, in log order.
	results []string
	// lastIndex is the applied index of the snapshot and the last index of the log.
	lastIndex uint64
	// check asserts the state the log leads to, through the read API only.
	check func(t *testing.T, f *FSM)
}

// fixtureV3 is the fixture of protocol 3 (written on 2026-12-02 by TestWriteFixtures): the v1
// log followed by token creates that name their authority (CreateToken.Authority), each kind of
// refusal among them: a key that may not see the file, a revoked key, a deleted file, a read
// token asking for a full token, a deleted, a foreign and an expired full token.
var fixtureV3 = fixtureSpec{
	dir: "testdata/v3",
	results: append(slices.Clone(fixtureV1.results[:len(fixtureV1.results)-1]),
		"", "", "not_found", "no_authority", "not_found", // guest key, token by key, by a blind key, revoked key, deleted file
		"", "no_authority", "no_authority", "no_authority", // full by full, full by read, by a deleted, by a foreign token
		"", "no_authority", "", // expiring full token, by it once expired, final barrier
	),
	lastIndex: 40,
	check:     checkFixtureStateV3,
}

// checkFixtureStateV3 asserts what the protocol-3 entries add to the v1 state: the tokens that
// were granted, and none of those that were refused.
func checkFixtureStateV3(t *testing.T, f *FSM) {
	t.Helper()
	var keys []string
	for _, k := range f.APIKeys() {
		keys = append(keys, k.ID)
	}
	if slices.Sort(keys); !slices.Equal(keys, []string{"guest", "ops", "root"}) {
		t.Errorf("api keys %v, want [guest ops root]", keys)
	}
	want := map[string][]string{
		fxFile1: {"TOKfixture0000000011"},
		fxFile4: {"TOKfixture0000000041", "TOKfixture0000000042", "TOKfixture0000000043", "TOKfixture0000000044", "TOKfixture0000000046"},
	}
	for fileID, ids := range want {
		var got []string
		for _, tk := range f.FileTokens(fileID) {
			got = append(got, tk.ID)
		}
		if slices.Sort(got); !slices.Equal(got, ids) {
			t.Errorf("tokens of %s: %v, want %v", fileID, got, ids)
		}
	}
	if tk, ok := f.TokenBySecret("fixture-secret-TOKfixture0000000043"); !ok || tk.Access != AccessRead || tk.CreatorID != "ops" {
		t.Errorf("token created by the ops key: %+v %v", tk, ok)
	}
	if tk, ok := f.TokenBySecret("fixture-secret-TOKfixture0000000044"); !ok || tk.Access != AccessFull {
		t.Errorf("full token created by a full token: %+v %v", tk, ok)
	}
	for _, refused := range []string{"39", "45", "47", "48", "49", "15", "16"} {
		if _, ok := f.Token("TOKfixture00000000" + refused); ok {
			t.Errorf("refused token TOKfixture00000000%s exists", refused)
		}
	}
}

// checkFixtureStateV1 asserts the state the v1 fixture log leads to, through the read API only.
func checkFixtureStateV1(t *testing.T, f *FSM) {
	t.Helper()
	cfg, ok := f.Config()
	switch {
	case !ok:
		t.Fatal("no cluster config")
	case cfg.ClusterID != "fixturecluster" || cfg.Geometry.Data != 2 || cfg.Geometry.Parity != 1:
		t.Errorf("config %+v: wrong cluster id or geometry", cfg)
	case string(cfg.SigningKey) != "fixture-signing-key-two-32-bytes":
		t.Errorf("signing key %q, want the rotated one", cfg.SigningKey)
	case !slices.Equal(cfg.Settings.DisableForceDownloadForMimeTypes, []string{"image/png", "text/plain"}):
		t.Errorf("settings %+v", cfg.Settings)
	case !slices.Equal(cfg.RemovedNodes, []string{"n9"}):
		t.Errorf("removed nodes %v, want [n9]", cfg.RemovedNodes)
	}
	var keys []string
	for _, k := range f.APIKeys() {
		keys = append(keys, k.ID)
	}
	if slices.Sort(keys); !slices.Equal(keys, []string{"ops", "root"}) {
		t.Errorf("api keys %v, want [ops root]", keys)
	}
	if k, ok := f.APIKeyBySecret("fixture-ops-key"); !ok || k.ID != "ops" || !slices.Equal(k.Permissions, []string{"VIEW_FILES"}) {
		t.Errorf("ops key by secret: %+v %v", k, ok)
	}
	if _, ok := f.APIKeyBySecret("fixture-tmp-key"); ok {
		t.Error("the revoked key still resolves")
	}
	var files []string
	f.Files(func(file File) bool { files = append(files, file.ID); return true })
	if !slices.Equal(files, []string{fxFile1, fxFile4}) {
		t.Errorf("files %v, want [%s %s]", files, fxFile1, fxFile4)
	}
	if file, ok := f.File(fxFile1); !ok || !slices.Equal(file.Layout.Segments[0].Nodes, []string{"n4", "n2", "n3"}) || file.Size != 100 {
		t.Errorf("file 1: %+v %v (want its shard 0 moved to n4)", file, ok)
	}
	wantTokens := map[string][]string{
		fxFile1: {"TOKfixture0000000011"},
		fxFile4: {"TOKfixture0000000041", "TOKfixture0000000042"},
		fxFile2: nil, fxFile3: nil,
	}
	for fileID, want := range wantTokens {
		var got []string
		for _, tk := range f.FileTokens(fileID) {
			got = append(got, tk.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("tokens of %s: %v, want %v", fileID, got, want)
		}
	}
	if tk, ok := f.TokenBySecret("fixture-secret-TOKfixture0000000042"); !ok || tk.Access != AccessRead || !tk.ExpiresAt.Equal(fxAt(60)) {
		t.Errorf("expiring read token by secret: %+v %v", tk, ok)
	}
	for _, gone := range []string{"TOKfixture0000000012", "TOKfixture0000000013", "TOKfixture0000000021", "TOKfixture0000000031"} {
		if _, ok := f.TokenBySecret("fixture-secret-" + gone); ok {
			t.Errorf("token %s should be gone", gone)
		}
	}
}

// openFixtureStore copies a fixture raft.db into a temporary directory (Raft writes to its store)
// and opens it.
func openFixtureStore(t testing.TB, dir string) *raftboltdb.BoltStore {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raft.db")
	copyFile(t, filepath.Join(dir, "raft.db"), path)
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// TestFixtureV1LogReplays applies every entry of the v1 Raft log with this build: each command
// gives the result it gave when it was written, and the state is the one it led to.
func TestFixtureV1LogReplays(t *testing.T) { testFixtureLogReplays(t, fixtureV1) }

// TestFixtureV3LogReplays is TestFixtureV1LogReplays for the protocol-3 log.
func TestFixtureV3LogReplays(t *testing.T) {
	testFixtureLogReplays(t, fixtureV3)
	checkFixtureStateV1Prefix(t, fixtureV3)
}

// checkFixtureStateV1Prefix replays the v3 log up to where the v1 log ended and checks the v1
// state there: the protocol-3 build changed nothing of what the older entries do.
func checkFixtureStateV1Prefix(t *testing.T, fx fixtureSpec) {
	store := openFixtureStore(t, fx.dir)
	f := newTestFSM(t)
	for i := uint64(1); i < fixtureV1.lastIndex; i++ { // the v1 log's last entry is its barrier
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		f.Apply(&l)
	}
	checkFixtureStateV1(t, f)
}

func testFixtureLogReplays(t *testing.T, fx fixtureSpec) {
	store := openFixtureStore(t, fx.dir)
	first, _ := store.FirstIndex()
	last, _ := store.LastIndex()
	if last != fx.lastIndex {
		t.Fatalf("fixture log ends at %d, want %d", last, fx.lastIndex)
	}
	f := newTestFSM(t)
	var codes []string
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		res := f.Apply(&l)
		if l.Type != raft.LogCommand {
			continue
		}
		r, ok := res.(*Result)
		if !ok {
			t.Fatalf("log %d: result %T", i, res)
		}
		codes = append(codes, ErrorCode(r.Err))
	}
	if !slices.Equal(codes, fx.results) {
		t.Fatalf("results\n got %q\nwant %q", codes, fx.results)
	}
	fx.check(t, f)
	if f.AppliedIndex() != last {
		t.Errorf("applied index %d, want %d", f.AppliedIndex(), last)
	}
}

// TestFixtureV1RaftRestarts starts a real Raft on the v1 store, as a node restarting after an
// upgrade does: raft replays the log into the FSM once the node leads again.
func TestFixtureV1RaftRestarts(t *testing.T) { testFixtureRaftRestarts(t, fixtureV1) }

// TestFixtureV3RaftRestarts is TestFixtureV1RaftRestarts for the protocol-3 store.
func TestFixtureV3RaftRestarts(t *testing.T) { testFixtureRaftRestarts(t, fixtureV3) }

func testFixtureRaftRestarts(t *testing.T, fx fixtureSpec) {
	store := openFixtureStore(t, fx.dir)
	f := newTestFSM(t)
	r, _ := fixtureRaft(t, f, store)
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitApplied(ctx, fx.lastIndex); err != nil {
		t.Fatalf("replay to %d: %v (at %d)", fx.lastIndex, err, f.AppliedIndex())
	}
	fx.check(t, f)

	// The upgraded node goes on writing on top of the old log.
	b := mustEncode(t, CmdCreateAPIKey, "after-upgrade", fxAt(9), CreateAPIKey{Key: APIKey{
		ID: "new", Hash: HashSecret("fixture-new-key"), CreatedAt: fxAt(9)}})
	fu := r.Apply(b, 5*time.Second)
	if err := fu.Error(); err != nil {
		t.Fatal(err)
	}
	if res := fu.Response().(*Result); res.Err != nil {
		t.Fatalf("new command on the old log: %v", res.Err)
	}
}

// TestFixtureV1SnapshotRestores restores the v1 snapshot with this build: the state equals the
// replayed log's, the request ids still de-duplicate, and what this build writes back restores
// to the same state.
func TestFixtureV1SnapshotRestores(t *testing.T) { testFixtureSnapshotRestores(t, fixtureV1) }

// TestFixtureV3SnapshotRestores is TestFixtureV1SnapshotRestores for the protocol-3 snapshot.
func TestFixtureV3SnapshotRestores(t *testing.T) { testFixtureSnapshotRestores(t, fixtureV3) }

func testFixtureSnapshotRestores(t *testing.T, fx fixtureSpec) {
	raw, err := os.ReadFile(filepath.Join(fx.dir, "snapshot.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	f := newTestFSM(t)
	if err := f.Restore(readCloser{bytes.NewReader(raw)}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if f.AppliedIndex() != fx.lastIndex {
		t.Errorf("applied index %d, want %d", f.AppliedIndex(), fx.lastIndex)
	}
	fx.check(t, f)

	replayed := newTestFSM(t)
	store := openFixtureStore(t, fx.dir)
	var upload1 *raft.Log
	for i := uint64(1); i <= fx.lastIndex; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		replayed.Apply(&l)
		if upload1 == nil && l.Type == raft.LogCommand && bytes.Contains(l.Data, []byte(`"requestId":"upload-1"`)) {
			upload1 = &l
		}
	}
	if !bytes.Equal(body(dump(t, f)), body(dump(t, replayed))) {
		t.Error("restored snapshot and replayed log disagree")
	}
	// A client retrying the upload after the restore gets the original answer.
	if upload1 == nil {
		t.Fatal("no upload-1 entry in the fixture log")
	}
	if res := f.Apply(cmdLog(fx.lastIndex+1, upload1.Data)).(*Result); res.Err != nil || res.Index != upload1.Index {
		t.Errorf("retried upload after restore: %+v, want index %d and no error", res, upload1.Index)
	}

	again := newTestFSM(t)
	if err := again.Restore(readCloser{bytes.NewReader(dump(t, f))}); err != nil {
		t.Fatalf("restore of this build's snapshot: %v", err)
	}
	fx.check(t, again)
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
