// Package coretest builds a real core.Service without a cluster, for the unit tests of core and of
// the front-ends: the real fsm.FSM, a consensus that applies each command to it at once, and shard
// nodes held in memory. Every product rule a test meets is production code; only Raft, sockets
// and disks are left out, and what they can do wrong is injected where they stand (a consensus
// Fault, a node down, a shard corrupted or lost). It must not be imported by non-test code.
package coretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/fsmtest"
)

// RootKey is the API key of the root principal, which holds every permission.
const RootKey = "coretest-root-key"

// Options shape a Harness; zero values take the defaults noted.
type Options struct {
	Geometry         erasure.Geometry // 2+1
	Nodes            int              // Geometry.Total()
	BlockSize        int              // 4 KiB, so that small files span blocks and segments
	BlocksPerSegment int              // 4
	// Uninitialized leaves the cluster uninitialised, as a node that has not joined one yet: no
	// configuration, no keys (Harness.Root stays empty).
	Uninitialized bool
	// Start is the clock's first reading (2026-03-04T05:06:07Z).
	Start time.Time
	// Configure adjusts core's configuration (MaxFileSize defaults to 1 MiB).
	Configure func(*core.Config)
}

// Harness is one core.Service over the real FSM, with the pieces tests steer.
type Harness struct {
	FSM       *fsm.FSM
	Consensus *Consensus
	Shards    *Shards
	Clock     *Clock
	Service   *core.Service
	Root      core.Principal

	opts Options // with the defaults filled in
}

// ClusterInit is the initialisation New gives the cluster: the options' layout and RootKey.
func (h *Harness) ClusterInit() core.ClusterInit {
	o := h.opts
	return core.ClusterInit{Geometry: o.Geometry, BlockSize: o.BlockSize, BlocksPerSegment: o.BlocksPerSegment, RootKey: RootKey}
}

// New returns a harness with an initialised cluster (unless opts say otherwise); the service is closed when the test ends.
func New(t testing.TB, opts Options) *Harness {
	t.Helper()
	if opts.Geometry.Data == 0 {
		opts.Geometry = erasure.Geometry{Data: 2, Parity: 1}
	}
	if opts.Nodes == 0 {
		opts.Nodes = opts.Geometry.Total()
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = 4 << 10
	}
	if opts.BlocksPerSegment == 0 {
		opts.BlocksPerSegment = 4
	}
	if opts.Start.IsZero() {
		opts.Start = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	}
	h := &Harness{opts: opts, FSM: fsmtest.New(t), Clock: NewClock(opts.Start)}
	h.Consensus = &Consensus{fsm: h.FSM}
	h.Shards = NewShards(opts.Nodes)
	cfg := core.Config{NodeID: "n1", MaxFileSize: 1 << 20, Now: h.Clock.Now}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	h.Service = core.NewService(cfg, h.FSM, h.Consensus, h.Shards, h.Shards, core.NewMetrics(prometheus.NewRegistry()))
	t.Cleanup(h.Service.Close)

	if opts.Uninitialized {
		return h
	}
	if err := h.Service.InitCluster(context.Background(), h.ClusterInit()); err != nil {
		t.Fatalf("init cluster: %v", err)
	}
	var err error
	if h.Root, err = h.Service.Authenticate(context.Background(), RootKey); err != nil {
		t.Fatalf("root key: %v", err)
	}
	return h
}

// AddKey stores an API key with the given id and secret, as CreateAPIKey would with drawn ones,
// and returns the principal it authenticates as. Fixed ids let a test name its principals.
func (h *Harness) AddKey(t testing.TB, id, secret string, perms ...string) core.Principal {
	t.Helper()
	cmd, err := fsm.EncodeCommand(fsm.CmdCreateAPIKey, "key-"+id, h.Clock.Now(), fsm.CreateAPIKey{Key: fsm.APIKey{
		ID: id, Name: id, Hash: fsm.HashSecret(secret), Permissions: perms, CreatedAt: h.Clock.Now(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Consensus.Propose(context.Background(), cmd); err != nil {
		t.Fatalf("add key %s: %v", id, err)
	}
	p, err := h.Service.Authenticate(context.Background(), secret)
	if err != nil {
		t.Fatalf("key %s: %v", id, err)
	}
	return p
}

// Files counts the files the FSM holds, expired ones included (until they are reaped).
func (h *Harness) Files() int {
	n := 0
	h.FSM.Files(func(fsm.File) bool { n++; return true })
	return n
}

// Stray counts the shards on the nodes whose file the FSM does not hold: what an aborted or
// refused upload, or a deleted file, leaves until it is cleaned up.
func (h *Harness) Stray() int {
	n := 0
	for file, shards := range h.Shards.ByFile() {
		if _, ok := h.FSM.File(file); !ok {
			n += shards
		}
	}
	return n
}

// Upload streams data as one file of principal p and commits it.
func (h *Harness) Upload(ctx context.Context, p core.Principal, attrs core.FileAttrs, data []byte) (core.FileInfo, []core.TokenInfo, error) {
	up, err := h.Service.BeginUpload(ctx, p)
	if err != nil {
		return core.FileInfo{}, nil, err
	}
	if _, err := up.ReadFrom(bytes.NewReader(data)); err != nil {
		up.Abort()
		return core.FileInfo{}, nil, err
	}
	info, tokens, err := up.Commit(ctx, attrs)
	if err != nil {
		up.Abort()
	}
	return info, tokens, err
}

// Read returns the whole content of the file a token opens.
func (h *Harness) Read(ctx context.Context, secret string) ([]byte, error) {
	info, content, err := h.Service.OpenFile(ctx, secret)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = content.ReadRange(ctx, &buf, 0, info.Size)
	return buf.Bytes(), err
}

// Consensus applies every proposal to the FSM at once, in order, as a single-node Raft whose
// every entry commits would. Reads are always current, so ReadIndex only honours the context.
type Consensus struct {
	fsm *fsm.FSM

	mu        sync.Mutex
	index     uint64
	proposals int
	refuse    map[fsm.CommandType]bool
	fault     Fault
}

// Fault decides a consensus call's answer before it runs, as a Raft that lost its leader, its
// quorum or its log disk would: read is true for ReadIndex, typ names a proposal's command. A
// non-nil error is the answer (and a proposal is not applied). A fault may also panic, as a bug
// below core would, to exercise the recovery above it.
type Fault func(read bool, typ fsm.CommandType) error

// SetFault installs f for every later call; nil removes it.
func (c *Consensus) SetFault(f Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fault = f
}

func (c *Consensus) injected(read bool, typ fsm.CommandType) error {
	c.mu.Lock()
	f := c.fault
	c.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(read, typ)
}

// Propose applies cmd and returns its result.
func (c *Consensus) Propose(ctx context.Context, cmd []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	typ, err := fsm.PeekCommandType(cmd)
	if err == nil {
		if err := c.CanPropose(typ); err != nil {
			return 0, err
		}
	}
	if err := c.injected(false, typ); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index++
	c.proposals++
	res := c.fsm.ApplyEntries([]fsm.Entry{{Index: c.index, Command: true, Data: cmd}})[0].(*fsm.Result)
	return res.Index, res.Err
}

// ReadIndex is immediate: the FSM has applied everything proposed.
func (c *Consensus) ReadIndex(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.injected(true, "")
}

// CanPropose admits every type this build knows, except those Refuse named, which it answers as
// a leader whose cluster does not speak their protocol yet.
func (c *Consensus) CanPropose(typ fsm.CommandType) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse[typ] {
		return fmt.Errorf("%w: %s (refused by the test)", fsm.ErrNotEnabled, typ)
	}
	if _, ok := fsm.CommandProtocol(typ); !ok {
		return fmt.Errorf("%w: unknown type %q", fsm.ErrInvalidCommand, typ)
	}
	return nil
}

// Refuse makes CanPropose and Propose refuse typ, as during a rolling upgrade.
func (c *Consensus) Refuse(typ fsm.CommandType) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse == nil {
		c.refuse = map[fsm.CommandType]bool{}
	}
	c.refuse[typ] = true
}

// Proposals counts the commands proposed so far (refused ones excluded).
func (c *Consensus) Proposals() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proposals
}

// errNodeDown is what a shard node that is down answers.
var errNodeDown = errors.New("coretest: node down")

// Shards is a set of shard nodes held in memory: core's ShardTransport, Placer and NodeHealth.
type Shards struct {
	mu     sync.Mutex
	nodes  []string
	shards map[string]map[erasure.ShardID][]byte
	down   map[string]time.Time
}

// NewShards returns n empty, alive nodes n1…nN.
func NewShards(n int) *Shards {
	s := &Shards{shards: map[string]map[erasure.ShardID][]byte{}, down: map[string]time.Time{}}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		s.nodes = append(s.nodes, id)
		s.shards[id] = map[erasure.ShardID][]byte{}
	}
	return s
}

// SetDown marks a node down (refusing every call, and no placement candidate) or up again.
func (s *Shards) SetDown(nodeID string, down bool, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if down {
		s.down[nodeID] = since
	} else {
		delete(s.down, nodeID)
	}
}

// Count returns how many shards of fileID the nodes hold in all.
func (s *Shards) Count(fileID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.shards {
		for id := range m {
			if id.File == fileID {
				n++
			}
		}
	}
	return n
}

// Shard returns a copy of a stored shard's bytes, header included.
func (s *Shards) Shard(nodeID string, id erasure.ShardID) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.shards[nodeID][id]
	return slices.Clone(b), ok
}

// ByFile counts the stored shards of each file.
func (s *Shards) ByFile() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, m := range s.shards {
		for id := range m {
			out[id.File]++
		}
	}
	return out
}

// Remove deletes every stored shard for which match holds, as a lost disk would, and returns how
// many it deleted.
func (s *Shards) Remove(match func(nodeID string, id erasure.ShardID) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for node, m := range s.shards {
		for id := range m {
			if match(node, id) {
				delete(m, id)
				n++
			}
		}
	}
	return n
}

// Corrupt flips one byte of a stored shard; false if there is no such shard.
func (s *Shards) Corrupt(nodeID string, id erasure.ShardID, at int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.shards[nodeID][id]
	if !ok || at >= len(b) {
		return false
	}
	b = slices.Clone(b)
	b[at] ^= 0xff
	s.shards[nodeID][id] = b
	return true
}

func (s *Shards) node(nodeID string) (map[erasure.ShardID][]byte, error) {
	if _, down := s.down[nodeID]; down {
		return nil, fmt.Errorf("%s: %w", nodeID, errNodeDown)
	}
	m, ok := s.shards[nodeID]
	if !ok {
		return nil, fmt.Errorf("unknown node %q: %w", nodeID, errNodeDown)
	}
	return m, nil
}

// PutShard stores the whole body once it has been read to a clean end, as the shard RPC does: a
// node commits every request whose body ended cleanly, even if the caller gave up just after.
// A cancelled ctx ends a body still in transfer (a pipe's reader is closed, as the HTTP
// transport closes the connection), and that put fails.
func (s *Shards) PutShard(ctx context.Context, nodeID string, id erasure.ShardID, body io.Reader) error {
	if pr, ok := body.(interface{ CloseWithError(error) error }); ok {
		stop := context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
		defer stop()
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.node(nodeID)
	if err != nil {
		return err
	}
	m[id] = b
	return nil
}

// OpenShard returns a shard as erasure.ShardStore.OpenFrames does: its header, then the frame
// bytes [off, off+n) counted from the first frame (n < 0: to the end); a range outside the shard
// wraps erasure.ErrInvalidRange.
func (s *Shards) OpenShard(_ context.Context, nodeID string, id erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.node(nodeID)
	if err != nil {
		return nil, err
	}
	b, ok := m[id]
	if !ok {
		return nil, fmt.Errorf("%s on %s: %w", id, nodeID, erasure.ErrShardNotFound)
	}
	if len(b) < erasure.ShardHeaderLen {
		return nil, fmt.Errorf("%s on %s: shorter than its header: %w", id, nodeID, erasure.ErrInvalidRange)
	}
	header, frames := b[:erasure.ShardHeaderLen], b[erasure.ShardHeaderLen:]
	size := int64(len(frames))
	if n < 0 && off >= 0 && off <= size {
		n = size - off
	}
	if off < 0 || n < 0 || off > size-n {
		return nil, fmt.Errorf("%s on %s frames [%d,+%d) of %d bytes: %w", id, nodeID, off, n, size, erasure.ErrInvalidRange)
	}
	return io.NopCloser(io.MultiReader(bytes.NewReader(header), bytes.NewReader(frames[off:off+n]))), nil
}

// DeleteShard removes a shard; a missing one is not an error.
func (s *Shards) DeleteShard(_ context.Context, nodeID string, id erasure.ShardID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.node(nodeID)
	if err != nil {
		return err
	}
	delete(m, id)
	return nil
}

// ShardCandidates lists the nodes that are up.
func (s *Shards) ShardCandidates() []erasure.Candidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []erasure.Candidate
	for _, id := range s.nodes {
		if _, down := s.down[id]; !down {
			out = append(out, erasure.Candidate{NodeID: id})
		}
	}
	return out
}

// FullNodes is 0: memory never fills.
func (s *Shards) FullNodes() int { return 0 }

// DownSince reports since when a node is down.
func (s *Shards) DownSince(nodeID string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	since, down := s.down[nodeID]
	return since, down
}

// Clock is a settable clock for core's Config.Now.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock starts at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t, backwards too, so that a test can date what it creates.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
