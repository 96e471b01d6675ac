package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/fsmtest"

	"github.com/cairn-dev/cairn/internal/testutil"
)

type staticServers []raft.Server

func (s staticServers) Servers() []raft.Server { return s }

func protoMember(id string, lo, hi int, state string) Member {
	return Member{Meta: NodeMeta{ID: id, ProtocolMin: lo, ProtocolMax: hi}, State: state}
}

func TestProtocolGate(t *testing.T) {
	voters := staticServers{
		{ID: "a", Suffrage: raft.Voter}, {ID: "b", Suffrage: raft.Voter}, {ID: "c", Suffrage: raft.Nonvoter},
	}
	tests := []struct {
		name    string
		servers staticServers
		members apMembers
		want    int
	}{
		{"all speak 3", voters, apMembers{protoMember("a", 1, 3, StateAlive), protoMember("b", 2, 3, StateAlive), protoMember("c", 1, 3, StateAlive)}, 3},
		{"a voter of today's build", voters, apMembers{protoMember("a", 1, 3, StateAlive), protoMember("b", 0, 0, StateAlive), protoMember("c", 1, 3, StateAlive)}, 1},
		{"a lagging non-voter counts", voters, apMembers{protoMember("a", 1, 3, StateAlive), protoMember("b", 1, 3, StateAlive), protoMember("c", 1, 2, StateAlive)}, 2},
		{"a failed server keeps its last word", voters, apMembers{protoMember("a", 1, 3, StateAlive), protoMember("b", 1, 2, StateDead), protoMember("c", 1, 3, StateAlive)}, 2},
		{"a server never seen counts as protocol 1", voters, apMembers{protoMember("a", 1, 3, StateAlive), protoMember("b", 1, 3, StateAlive)}, 1},
		{"members outside raft do not count", staticServers{{ID: "a"}, {ID: "b"}}, apMembers{protoMember("a", 1, 3, StateAlive), protoMember("b", 1, 3, StateAlive), protoMember("z", 0, 0, StateAlive)}, 3},
		{"no configuration", nil, apMembers{protoMember("a", 1, 3, StateAlive)}, fsm.MinProtocolVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// "self" is a: its own range is this build's whatever gossip says, so clamp the
			// expectation to what this build speaks.
			g := NewProtocolGate("a", tt.servers, tt.members)
			want := min(tt.want, fsm.ProtocolVersion)
			if got := g.ClusterProtocol(); got != want {
				t.Fatalf("ClusterProtocol = %d, want %d", got, want)
			}
			for v := 1; v <= 4; v++ {
				err := g.require("feature", v)
				if allowed := v <= fsm.MinProtocolVersion || v <= want; (err == nil) != allowed {
					t.Errorf("require(%d) = %v, want allowed=%v", v, err, allowed)
				}
				if err != nil && !errors.Is(err, fsm.ErrNotEnabled) {
					t.Errorf("require(%d) = %v, want ErrNotEnabled", v, err)
				}
				if g.Supports(v) != (err == nil) {
					t.Errorf("Supports(%d) disagrees with require", v)
				}
			}
			for _, typ := range fsm.CommandTypes() {
				since, _ := fsm.CommandProtocol(typ)
				if err := g.Allows(typ); (err == nil) != (since <= max(want, fsm.MinProtocolVersion)) {
					t.Errorf("Allows(%s) = %v", typ, err)
				}
			}
			if err := g.Allows("noSuchCommand"); !errors.Is(err, fsm.ErrInvalidCommand) {
				t.Errorf("Allows(unknown) = %v", err)
			}
		})
	}
}

func TestNodeMetaProtocols(t *testing.T) {
	for _, tt := range []struct {
		meta NodeMeta
		want ProtocolRange
	}{
		{NodeMeta{}, ProtocolRange{1, 1}}, // a build from before protocol versions
		{NodeMeta{ProtocolMin: 1, ProtocolMax: 2}, ProtocolRange{1, 2}},
		{NodeMeta{ProtocolMin: 3, ProtocolMax: 1}, ProtocolRange{3, 3}},
	} {
		if got := tt.meta.Protocols(); got != tt.want {
			t.Errorf("%+v.Protocols() = %+v, want %+v", tt.meta, got, tt.want)
		}
	}
}

// refuseGate refuses one command type, as a ProtocolGate does for a type some server lacks.
type refuseGate fsm.CommandType

func (g refuseGate) Allows(typ fsm.CommandType) error {
	if typ == fsm.CommandType(g) {
		return fmt.Errorf("%w: %s", fsm.ErrNotEnabled, typ)
	}
	return nil
}

func (g refuseGate) Supports(int) bool { return true }

// newLeaderConsensus is a Consensus over a real single-server Raft ("n1", in memory) that leads,
// with its FSM; it has no gate until the test sets one.
func newLeaderConsensus(t *testing.T) (*Consensus, *raft.Raft, *fsm.FSM) {
	t.Helper()
	cfg := testutil.RaftConfig("n1")
	f := fsmtest.New(t)
	store := raft.NewInmemStore()
	_, trans := raft.NewInmemTransport("n1")
	r, err := raft.NewRaft(cfg, NewRaftFSM(f), store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "n1"}}}).Error(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	c := NewConsensus("n1", r, f, nil, transportTestLogger())
	return c, r, f
}

// TestConsensusGateKeepsRefusedCommandsOutOfTheLog: the leader checks every command against its
// gate before appending it; a refused one never reaches the log, and the refusal is the
// command's result (not retried as a transport failure).
func TestConsensusGateKeepsRefusedCommandsOutOfTheLog(t *testing.T) {
	c, r, f := newLeaderConsensus(t)
	c.Gate = refuseGate(fsm.CmdRemoveNode)
	t.Cleanup(c.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	before := r.LastIndex()
	cmd, err := fsm.EncodeCommand(fsm.CmdRemoveNode, "req-1", time.Now(), fsm.RemoveNode{NodeID: "n9"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CanPropose(fsm.CmdRemoveNode); !errors.Is(err, fsm.ErrNotEnabled) {
		t.Fatalf("CanPropose = %v, want ErrNotEnabled", err)
	}
	if _, err := c.Propose(ctx, cmd); !errors.Is(err, fsm.ErrNotEnabled) {
		t.Fatalf("Propose = %v, want ErrNotEnabled", err)
	}
	idx, code, err := c.ApplyForwarded(ctx, cmd)
	if err != nil || code != fsm.ErrorCode(fsm.ErrNotEnabled) || idx != 0 {
		t.Fatalf("ApplyForwarded = %d, %q, %v; want the not_enabled result", idx, code, err)
	}
	if got := r.LastIndex(); got != before {
		t.Fatalf("log moved from %d to %d: a refused command was appended", before, got)
	}
	if cfg, _ := f.Config(); len(cfg.RemovedNodes) != 0 {
		t.Fatal("the refused command was applied")
	}
	if err := c.CanPropose(fsm.CmdBarrier); err != nil {
		t.Fatalf("CanPropose(barrier) = %v", err)
	}
}

// mutableMembers is a gossip view a test changes as servers upgrade.
type mutableMembers struct {
	mu      sync.Mutex
	members apMembers
}

func (m *mutableMembers) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Member(nil), m.members...)
}

func (m *mutableMembers) set(members ...Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.members = members
}

// TestConsensusGateChecksNewFieldsOfOldCommands: a createToken is a protocol-1 type, but its
// authority field is protocol 3, and a protocol-2 replica refuses the unknown field where the
// others apply it. While some Raft server speaks only 2, the leader keeps a createToken that sets
// the field out of the log (whatever its proposer believed), and still admits one that does not;
// once every server speaks 3 it admits both.
func TestConsensusGateChecksNewFieldsOfOldCommands(t *testing.T) {
	c, r, f := newLeaderConsensus(t)
	t.Cleanup(c.Close)
	// The gate sees a second server, n2, that speaks protocols 1 and 2 only.
	members := &mutableMembers{}
	members.set(protoMember("n2", 1, 2, StateAlive))
	c.Gate = NewProtocolGate("n1", staticServers{{ID: "n1"}, {ID: "n2"}}, members)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	propose := func(typ fsm.CommandType, req string, p any) (uint64, error) {
		t.Helper()
		cmd, err := fsm.EncodeCommand(typ, req, time.Unix(2, 0).UTC(), p)
		if err != nil {
			t.Fatal(err)
		}
		return c.Propose(ctx, cmd)
	}
	if _, err := propose(fsm.CmdInitCluster, "init", initClusterPayload()); err != nil {
		t.Fatal(err)
	}
	file := createFilePayload(1)
	if _, err := propose(fsm.CmdCreateFile, "upload", file); err != nil {
		t.Fatal(err)
	}
	fullToken := file.Tokens[0].ID
	readToken := func(n int) fsm.Token {
		return fsm.Token{ID: fmt.Sprintf("TOKread%013d", n), Secret: fmt.Sprintf("read-secret-%d", n), FileID: file.File.ID,
			Access: fsm.AccessRead, CreatedAt: time.Unix(2, 0).UTC()}
	}
	byToken := func(n int) fsm.CreateToken {
		return fsm.CreateToken{Token: readToken(n), Authority: &fsm.TokenAuthority{TokenID: fullToken}}
	}

	before := r.LastIndex()
	if _, err := propose(fsm.CmdCreateToken, "with-authority", byToken(1)); !errors.Is(err, fsm.ErrNotEnabled) {
		t.Fatalf("createToken with authority on a protocol-2 cluster = %v, want ErrNotEnabled", err)
	}
	if got := r.LastIndex(); got != before {
		t.Fatalf("log moved from %d to %d: a command a replica cannot apply was appended", before, got)
	}
	if _, ok := f.Token(readToken(1).ID); ok {
		t.Fatal("the refused token exists")
	}
	if _, err := propose(fsm.CmdCreateToken, "without-authority", fsm.CreateToken{Token: readToken(2)}); err != nil {
		t.Fatalf("createToken without authority on a protocol-2 cluster = %v", err)
	}
	if _, ok := f.Token(readToken(2).ID); !ok {
		t.Fatal("the token without authority was not created")
	}

	members.set(protoMember("n2", 1, fsm.ProtocolTokenAuthority, StateAlive))
	if _, err := propose(fsm.CmdCreateToken, "with-authority-upgraded", byToken(3)); err != nil {
		t.Fatalf("createToken with authority once every server speaks %d = %v", fsm.ProtocolTokenAuthority, err)
	}
	if _, ok := f.Token(readToken(3).ID); !ok {
		t.Fatal("the token with authority was not created after the upgrade")
	}
}

// TestLeaderRefusesNULFileIDs: the leader runs the FSM's proposal rules on every entry it appends,
// so a command built by hand (a buggy or crafted proposer, bypassing fsm.EncodeCommand) whose file
// id holds a 0x00 byte is refused as invalid, whether proposed here or forwarded, and never
// reaches the log; the same command with a clean id is appended.
func TestLeaderRefusesNULFileIDs(t *testing.T) {
	c, r, f := newLeaderConsensus(t)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	init, err := fsm.EncodeCommand(fsm.CmdInitCluster, "init", time.Unix(2, 0).UTC(), initClusterPayload())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Propose(ctx, init); err != nil {
		t.Fatal(err)
	}
	handBuilt := func(p fsm.CreateFile) []byte {
		payload, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(fsm.Command{Version: fsm.CommandVersion, Type: fsm.CmdCreateFile, RequestID: "upload-" + p.File.ID,
			Time: time.Unix(2, 0).UTC(), Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bad := createFilePayload(1)
	bad.File.ID = "FIL\x00P"
	bad.Tokens[0].FileID = bad.File.ID

	before := r.LastIndex()
	if _, err := c.Propose(ctx, handBuilt(bad)); !errors.Is(err, fsm.ErrInvalidCommand) {
		t.Fatalf("Propose of a file id with a 0x00 byte = %v, want ErrInvalidCommand", err)
	}
	idx, code, err := c.ApplyForwarded(ctx, handBuilt(bad))
	if err != nil || code != fsm.ErrorCode(fsm.ErrInvalidCommand) || idx != 0 {
		t.Fatalf("ApplyForwarded = %d, %q, %v; want the invalid_command result", idx, code, err)
	}
	if got := r.LastIndex(); got != before {
		t.Fatalf("log moved from %d to %d: a refused command was appended", before, got)
	}
	if _, ok := f.File(bad.File.ID); ok {
		t.Fatal("the refused file exists")
	}
	good := createFilePayload(2)
	if _, err := c.Propose(ctx, handBuilt(good)); err != nil {
		t.Fatalf("Propose of the same command with a clean id = %v", err)
	}
	if _, ok := f.File(good.File.ID); !ok {
		t.Fatal("the clean file was not created")
	}
}
