package fsm

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/cairn-dev/cairn/erasure"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// writeFixtures regenerates nothing that exists: it writes the fixtures of this build's protocol
// version into testdata/v<ProtocolVersion> and refuses to touch a directory that is already
// there, because a committed fixture is what an old cluster really wrote and must stay as it is.
//
//	go test ./fsm -run TestWriteFixtures -fsm.write-fixtures
var writeFixtures = flag.Bool("fsm.write-fixtures", false, "write testdata/<version>/ fixtures (raft.db and snapshot.ndjson) with this build")

// fixtureNode is the Raft server id and in-memory address of the single node that wrote the log.
const fixtureNode = "fixture-node"

// fixtureT0 is the command time of the first fixture entry. Every entry lies within the
// de-duplication window of the last one, so that replays of the fixture's request ids are still
// answered from the requests table.
var fixtureT0 = time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)

// Fixture ids, shared by the generator and the replay test.
const (
	fxFile1 = "FILfixture0000000001" // lives; its read token is deleted
	fxFile2 = "FILfixture0000000002" // degraded, two segments, expires and is expired
	fxFile3 = "FILfixture0000000003" // deleted
	fxFile4 = "FILfixture0000000004" // lives, with an expiring token that outlives the log
)

// fixtureEntry is one command of the fixture log with the outcome its apply must keep giving.
type fixtureEntry struct {
	name string
	raw  []byte // as written (encoded by the generator, or deliberately malformed)
	want error
}

func fxAt(minutes int) time.Time { return fixtureT0.Add(time.Duration(minutes) * time.Minute) }

func fxToken(id, fileID string, access AccessLevel, at time.Time) Token {
	return Token{ID: id, Secret: "fixture-secret-" + id, FileID: fileID, Access: access,
		CreatorID: "ops", CreatedAt: at, CreatedBy: "n1"}
}

func fxFile(id string, size int64, at time.Time) File {
	return File{
		ID: id, Name: id + ".txt", MimeType: "text/plain", CreatorID: "ops", CreatedBy: "n1",
		Size: size, CreatedAt: at, UpdatedAt: at, ETag: HashSecret("content of " + id),
		Layout: Layout{Geometry: erasure.Geometry{Data: 2, Parity: 1}, BlockSize: 1 << 20, Segments: []Segment{
			{Offset: 0, Size: size, Nodes: []string{"n1", "n2", "n3"}},
		}},
	}
}

// fixtureLog is the command sequence of the fixture: every command type, a rejected command of
// each kind of refusal, a replayed request id and a malformed entry.
func fixtureLog(t testing.TB) []fixtureEntry {
	enc := func(typ CommandType, req string, at time.Time, p any) []byte { return mustEncode(t, typ, req, at, p) }

	file2 := fxFile(fxFile2, 3<<20, fxAt(2))
	file2.Tags, file2.Title, file2.Description = []string{"scan", "x-ray"}, "Scan", "two segments, one degraded"
	file2.ExpiresAt = fxAt(5)
	file2.Layout.Segments = []Segment{
		{Offset: 0, Size: 2 << 20, Nodes: []string{"n1", "n2", "n3"}},
		{Offset: 2 << 20, Size: 1 << 20, Nodes: []string{"n2", "n3", ""}},
	}
	upload1 := enc(CmdCreateFile, "upload-1", fxAt(1), CreateFile{File: fxFile(fxFile1, 100, fxAt(1)), Tokens: []Token{
		fxToken("TOKfixture0000000011", fxFile1, AccessFull, fxAt(1)),
		fxToken("TOKfixture0000000012", fxFile1, AccessRead, fxAt(1)),
	}})
	expiringToken := fxToken("TOKfixture0000000013", fxFile1, AccessRead, fxAt(3))
	expiringToken.ExpiresAt = fxAt(4)
	lateToken := fxToken("TOKfixture0000000042", fxFile4, AccessRead, fxAt(7))
	lateToken.ExpiresAt = fxAt(60)
	shortFullToken := fxToken("TOKfixture0000000046", fxFile4, AccessFull, fxAt(7))
	shortFullToken.ExpiresAt = fxAt(7).Add(30 * time.Second)
	byKey := func(req, id, fileID, keyID string) []byte {
		tok := fxToken(id, fileID, AccessRead, fxAt(7))
		tok.CreatorID = keyID
		return enc(CmdCreateToken, req, fxAt(7), CreateToken{Token: tok, Authority: &TokenAuthority{APIKeyID: keyID}})
	}
	byToken := func(req, id, fileID string, access AccessLevel, authority string, at time.Time) []byte {
		return enc(CmdCreateToken, req, at, CreateToken{Token: fxToken(id, fileID, access, at), Authority: &TokenAuthority{TokenID: authority}})
	}
	return []fixtureEntry{
		{"create file before init", enc(CmdCreateFile, "too-early", fxAt(0), CreateFile{
			File: fxFile(fxFile3, 10, fxAt(0)), Tokens: []Token{fxToken("TOKfixture0000000099", fxFile3, AccessFull, fxAt(0))},
		}), ErrNotInitialized},
		{"init cluster", enc(CmdInitCluster, "init-cluster", fxAt(0), InitCluster{
			Config: ClusterConfig{ClusterID: "fixturecluster", Geometry: erasure.Geometry{Data: 2, Parity: 1},
				BlockSize: 1 << 20, BlocksPerSegment: 64, SigningKey: []byte("fixture-signing-key-one-32-bytes"), CreatedAt: fxAt(0)},
			RootKey: APIKey{ID: "root", Name: "root", Hash: HashSecret("fixture-root-key"),
				Permissions: []string{"MANAGE_API_KEYS", "VIEW_FILES"}, CreatedAt: fxAt(0)},
		}), nil},
		{"second init", enc(CmdInitCluster, "init-again", fxAt(0), InitCluster{
			Config: ClusterConfig{ClusterID: "other", Geometry: erasure.Geometry{Data: 1, Parity: 0},
				BlockSize: 1, BlocksPerSegment: 1, CreatedAt: fxAt(0)},
			RootKey: APIKey{ID: "root2", Hash: HashSecret("x"), CreatedAt: fxAt(0)},
		}), ErrAlreadyInitialized},
		{"barrier", enc(CmdBarrier, "barrier-1", fxAt(0), Barrier{Node: fixtureNode}), nil},
		{"create api key", enc(CmdCreateAPIKey, "key-ops", fxAt(0), CreateAPIKey{Key: APIKey{
			ID: "ops", Name: "operations", Hash: HashSecret("fixture-ops-key"), Permissions: []string{"VIEW_FILES"}, CreatedAt: fxAt(0),
		}}), nil},
		{"create file 1", upload1, nil},
		{"create file 2", enc(CmdCreateFile, "upload-2", fxAt(2), CreateFile{File: file2, Tokens: []Token{
			fxToken("TOKfixture0000000021", fxFile2, AccessFull, fxAt(2)),
		}}), nil},
		{"create token", enc(CmdCreateToken, "token-13", fxAt(3), CreateToken{Token: expiringToken}), nil},
		{"delete token", enc(CmdDeleteToken, "untoken-12", fxAt(3), DeleteToken{FileID: fxFile1, TokenID: "TOKfixture0000000012"}), nil},
		{"replayed upload", upload1, nil},
		{"conflicting upload", enc(CmdCreateFile, "upload-1-again", fxAt(3), CreateFile{File: fxFile(fxFile1, 100, fxAt(3)), Tokens: []Token{
			fxToken("TOKfixture0000000014", fxFile1, AccessFull, fxAt(3)),
		}}), ErrConflict},
		{"last full token", enc(CmdDeleteToken, "untoken-11", fxAt(3), DeleteToken{FileID: fxFile1, TokenID: "TOKfixture0000000011"}), ErrLastFullToken},
		{"create file 3", enc(CmdCreateFile, "upload-3", fxAt(3), CreateFile{File: fxFile(fxFile3, 10, fxAt(3)), Tokens: []Token{
			fxToken("TOKfixture0000000031", fxFile3, AccessFull, fxAt(3)),
		}}), nil},
		{"delete file 3", enc(CmdDeleteFile, "delete-3", fxAt(4), DeleteFile{FileID: fxFile3}), nil},
		{"delete unknown file", enc(CmdDeleteFile, "delete-unknown", fxAt(4), DeleteFile{FileID: "FILfixture0000000404"}), ErrNotFound},
		{"update settings", enc(CmdUpdateSettings, "settings-1", fxAt(4), UpdateSettings{Settings: ServiceSettings{
			DisableForceDownloadForMimeTypes: []string{"image/png", "text/plain"}, UpdatedAt: fxAt(4),
		}}), nil},
		{"rotate signing key", enc(CmdRotateSigningKey, "rotate-1", fxAt(4), RotateSigningKey{Key: []byte("fixture-signing-key-two-32-bytes")}), nil},
		{"create temporary key", enc(CmdCreateAPIKey, "key-tmp", fxAt(4), CreateAPIKey{Key: APIKey{
			ID: "tmp", Name: "temporary", Hash: HashSecret("fixture-tmp-key"), Permissions: []string{"MANAGE_API_KEYS"}, CreatedAt: fxAt(4),
		}}), nil},
		{"revoke temporary key", enc(CmdRevokeAPIKey, "revoke-tmp", fxAt(4), RevokeAPIKey{ID: "tmp"}), nil},
		{"repair degraded shard", enc(CmdMoveShard, "move-1", fxAt(5), MoveShard{FileID: fxFile2, Segment: 1, Index: 2, From: "", To: "n4"}), nil},
		{"stale repair", enc(CmdMoveShard, "move-2", fxAt(5), MoveShard{FileID: fxFile2, Segment: 1, Index: 2, From: "", To: "n5"}), ErrConflict},
		{"move shard of file 1", enc(CmdMoveShard, "move-3", fxAt(5), MoveShard{FileID: fxFile1, Segment: 0, Index: 0, From: "n1", To: "n4"}), nil},
		{"remove node", enc(CmdRemoveNode, "remove-n9", fxAt(5), RemoveNode{NodeID: "n9"}), nil},
		{"expire", enc(CmdExpire, "expire-1", fxAt(6), Expire{
			FileIDs: []string{fxFile2, fxFile1}, TokenIDs: []string{"TOKfixture0000000013", "TOKfixture0000000011"},
		}), nil},
		{"create file 4", enc(CmdCreateFile, "upload-4", fxAt(7), CreateFile{File: fxFile(fxFile4, 42, fxAt(7)), Tokens: []Token{
			fxToken("TOKfixture0000000041", fxFile4, AccessFull, fxAt(7)), lateToken,
		}}), nil},
		{"malformed entry", []byte(`{"v":1,"type":"deleteFile","requestId":"junk","time":"2026-12-01T21:07:00Z","payload":{"fileId":"a","junk":1}}`), ErrInvalidCommand},
		// Protocol 3 (ProtocolTokenAuthority): token creates that name their authority.
		{"create key without VIEW_FILES", enc(CmdCreateAPIKey, "key-guest", fxAt(7), CreateAPIKey{Key: APIKey{
			ID: "guest", Name: "guest", Hash: HashSecret("fixture-guest-key"), CreatedAt: fxAt(7),
		}}), nil},
		{"read token by api key", byKey("token-43", "TOKfixture0000000043", fxFile4, "ops"), nil},
		{"token by a key that may not see the file", byKey("token-guest", "TOKfixture0000000049", fxFile4, "guest"), ErrNotFound},
		{"token by a revoked key", byKey("token-tmp", "TOKfixture0000000048", fxFile4, "tmp"), ErrNoAuthority},
		{"token by api key for a deleted file", byKey("token-deleted-file", "TOKfixture0000000039", fxFile3, "ops"), ErrNotFound},
		{"full token by full token", byToken("token-44", "TOKfixture0000000044", fxFile4, AccessFull, "TOKfixture0000000041", fxAt(7)), nil},
		{"full token by read token", byToken("token-45", "TOKfixture0000000045", fxFile4, AccessFull, "TOKfixture0000000042", fxAt(7)), ErrNoAuthority},
		{"token by a deleted token", byToken("token-15", "TOKfixture0000000015", fxFile1, AccessRead, "TOKfixture0000000012", fxAt(7)), ErrNoAuthority},
		{"token by another file's token", byToken("token-16", "TOKfixture0000000016", fxFile1, AccessRead, "TOKfixture0000000041", fxAt(7)), ErrNoAuthority},
		{"expiring full token", enc(CmdCreateToken, "token-46", fxAt(7), CreateToken{Token: shortFullToken}), nil},
		{"token by an expired full token", byToken("token-47", "TOKfixture0000000047", fxFile4, AccessRead, "TOKfixture0000000046", fxAt(8)), ErrNoAuthority},
		{"barrier at the end", enc(CmdBarrier, "barrier-2", fxAt(8), Barrier{Node: fixtureNode}), nil},
	}
}

// TestWriteFixtures writes testdata/v<ProtocolVersion>/: raft.db, the raft-boltdb store of a real
// single-node Raft that applied fixtureLog, and snapshot.ndjson, the FSM snapshot after it.
func TestWriteFixtures(t *testing.T) {
	if !*writeFixtures {
		t.Skip("fixtures are written only with -fsm.write-fixtures")
	}
	dir := filepath.Join("testdata", fmt.Sprintf("v%d", ProtocolVersion))
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists: committed fixtures are never rewritten; bump the version first", dir)
	}
	work := t.TempDir()
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(work, "raft.db"), BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := newTestFSM(t)
	r, _ := fixtureRaft(t, f, store)
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: fixtureNode, Address: fixtureNode}}}).Error(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	for _, e := range fixtureLog(t) {
		fu := r.Apply(e.raw, 5*time.Second)
		if err := fu.Error(); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		if got := fu.Response().(*Result).Err; !errors.Is(got, e.want) || (e.want == nil && got != nil) {
			t.Fatalf("%s: result %v, want %v", e.name, got, e.want)
		}
	}
	snapshot := dump(t, f)
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(work, "raft.db"), filepath.Join(dir, "raft.db"))
	if err := os.WriteFile(filepath.Join(dir, "snapshot.ndjson"), snapshot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", dir)
}

// fixtureRaft starts a single-node Raft on store with tight timings and no snapshots, so that the
// whole log stays in the store.
func fixtureRaft(t testing.TB, f *FSM, store *raftboltdb.BoltStore) (*raft.Raft, *raft.InmemTransport) {
	t.Helper()
	cfg := testutil.RaftConfig(fixtureNode)
	cfg.BatchApplyCh = true
	cfg.SnapshotThreshold = 1 << 30
	cfg.SnapshotInterval = time.Hour
	_, trans := raft.NewInmemTransport(fixtureNode)
	r, err := raft.NewRaft(cfg, testRaftFSM{f}, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	return r, trans
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
