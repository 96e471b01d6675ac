package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/erasure"
)

// t0 is the command time of the first entry in every test log.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var testGeometry = erasure.Geometry{Data: 2, Parity: 1}

func initPayload() InitCluster {
	return InitCluster{
		Config: ClusterConfig{
			ClusterID: "c1", Geometry: testGeometry, BlockSize: 1 << 20, BlocksPerSegment: 4,
			SigningKey: []byte("signing-key"), CreatedAt: t0,
		},
		RootKey: APIKey{ID: "root", Name: "root", Hash: HashSecret("root-secret"), Permissions: []string{"*"}, CreatedAt: t0},
	}
}

func tok(id, fileID string, access AccessLevel) Token {
	return Token{ID: id, Secret: "secret-" + id, FileID: fileID, Access: access, CreatorID: "u1", CreatedAt: t0}
}

func expiring(t Token, at time.Time) Token {
	t.ExpiresAt = at
	return t
}

func file(id string, size int64) File {
	return File{
		ID: id, Name: id + ".bin", MimeType: "application/octet-stream", CreatorID: "u1", CreatedBy: "n1",
		Size: size, Tags: []string{"a"}, CreatedAt: t0, UpdatedAt: t0, ETag: HashSecret(id),
		Layout: Layout{Geometry: testGeometry, BlockSize: 1 << 20, Segments: []Segment{
			{Offset: 0, Size: size, Nodes: []string{"n1", "n2", "n3"}},
		}},
	}
}

func fileCmd(id string, tokens ...Token) CreateFile {
	if tokens == nil {
		tokens = []Token{tok(id+"-full", id, AccessFull)}
	}
	return CreateFile{File: file(id, 100), Tokens: tokens}
}

func mustEncode(t testing.TB, typ CommandType, req string, at time.Time, p any) []byte {
	t.Helper()
	b, err := EncodeCommand(typ, req, at, p)
	if err != nil {
		t.Fatalf("encode %s: %v", typ, err)
	}
	return b
}

func cmdLog(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// dump returns f's whole state as snapshot bytes: equal dumps mean equal tables.
func dump(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// body drops the header line (applied index and clock) from a dump.
func body(b []byte) []byte {
	_, rest, _ := bytes.Cut(b, []byte("\n"))
	return rest
}

// commandGen produces a random but mostly meaningful command sequence: creates, deletes, token
// churn, conflicts, replays of earlier request ids, malformed entries, and time jumps large
// enough to age de-duplication entries out.
type commandGen struct {
	rng    *rand.Rand
	now    time.Time
	seq    int
	files  []string
	tokens []Token
	sent   [][]byte
}

func newCommandGen(seed uint64) *commandGen {
	return &commandGen{rng: rand.New(rand.NewPCG(seed, seed)), now: t0}
}

func (g *commandGen) next(t testing.TB) []byte {
	g.seq++
	g.now = g.now.Add(time.Duration(g.rng.IntN(180)) * time.Second)
	req := fmt.Sprintf("req-%d", g.seq)
	if g.seq == 1 {
		return g.keep(mustEncode(t, CmdInitCluster, req, g.now, initPayload()))
	}
	switch r := g.rng.IntN(100); {
	case r < 30:
		id := fmt.Sprintf("FIL%d", g.rng.IntN(g.seq))
		toks := []Token{tok(fmt.Sprintf("TOK%d", g.rng.IntN(4*g.seq)), id, AccessFull)}
		if g.rng.IntN(2) == 0 {
			toks = append(toks, tok(fmt.Sprintf("TOK%d", g.rng.IntN(4*g.seq)), id, AccessRead))
		}
		g.files = append(g.files, id)
		g.tokens = append(g.tokens, toks...)
		return g.keep(mustEncode(t, CmdCreateFile, req, g.now, fileCmd(id, toks...)))
	case r < 40:
		return g.keep(mustEncode(t, CmdDeleteFile, req, g.now, DeleteFile{FileID: g.pickFile()}))
	case r < 65:
		access := AccessRead
		if g.rng.IntN(2) == 0 {
			access = AccessFull
		}
		nt := tok(fmt.Sprintf("TOK%d", g.rng.IntN(4*g.seq)), g.pickFile(), access)
		if g.rng.IntN(3) == 0 {
			nt.ExpiresAt = g.now.Add(time.Duration(g.rng.IntN(600)-300) * time.Second)
		}
		g.tokens = append(g.tokens, nt)
		return g.keep(mustEncode(t, CmdCreateToken, req, g.now, CreateToken{Token: nt}))
	case r < 85:
		d := DeleteToken{FileID: g.pickFile(), TokenID: "TOKnone"}
		if len(g.tokens) > 0 {
			tk := g.tokens[g.rng.IntN(len(g.tokens))]
			d = DeleteToken{FileID: tk.FileID, TokenID: tk.ID}
		}
		return g.keep(mustEncode(t, CmdDeleteToken, req, g.now, d))
	case r < 95:
		// A retry: same bytes, same request id; mostly recent, sometimes aged out.
		recent := max(0, len(g.sent)-10)
		if g.rng.IntN(4) == 0 {
			recent = 0
		}
		return g.sent[recent+g.rng.IntN(len(g.sent)-recent)]
	default:
		return []byte(`{"v":1,"type":"deleteFile","requestId":"x","time":"2026-01-01T00:00:00Z","payload":{"fileId":"a","junk":1}}`)
	}
}

func (g *commandGen) keep(b []byte) []byte {
	g.sent = append(g.sent, b)
	return b
}

func (g *commandGen) pickFile() string {
	if len(g.files) == 0 {
		return "FILnone"
	}
	return g.files[g.rng.IntN(len(g.files))]
}

// applyAll applies n generated commands to each FSM one by one, from index start.
func applyAll(t testing.TB, g *commandGen, start uint64, n int, fsms ...*FSM) uint64 {
	for i := range n {
		l := cmdLog(start+uint64(i), g.next(t))
		for _, f := range fsms {
			f.Apply(l)
		}
	}
	return start + uint64(n)
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// newTestFSM opens an FSM on a fresh store in a temporary directory, closed when the test ends.
func newTestFSM(t testing.TB) *FSM {
	t.Helper()
	f, err := New(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close fsm: %v", err)
		}
	})
	return f
}

// persistedSnapshot is f's snapshot as raft persists and then releases it.
func persistedSnapshot(t testing.TB, f *FSM) *memSink {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := new(memSink)
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	return sink
}

// fsmWithFiles is an initialized FSM with n files FIL00000000… (one full token each), applied
// in batches of 64 at indexes 2 to n+1.
func fsmWithFiles(t testing.TB, n int) *FSM {
	f := newTestFSM(t)
	f.Apply(cmdLog(1, mustEncode(t, CmdInitCluster, "init", t0, initPayload())))
	logs := make([]*raft.Log, 0, n)
	for i := range n {
		id := fmt.Sprintf("FIL%08d", i)
		logs = append(logs, cmdLog(uint64(i+2), mustEncode(t, CmdCreateFile, "r"+id, t0, fileCmd(id))))
	}
	applyInBatches(f, logs, 64)
	return f
}
