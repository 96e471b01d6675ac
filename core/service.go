package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// State is the replicated metadata core reads. *fsm.FSM implements it. Reads are only
// linearizable after Consensus.ReadIndex returned.
type State interface {
	Config() (fsm.ClusterConfig, bool)
	File(id string) (fsm.File, bool)
	TokenBySecret(secret string) (fsm.Token, bool)
	FileTokens(fileID string) []fsm.Token
	APIKeyBySecret(secret string) (fsm.APIKey, bool)
	APIKeys() []fsm.APIKey
	Token(id string) (fsm.Token, bool)
	Files(fn func(fsm.File) bool)
	// FilesByCreation is Files in creation order (CreatedAt, then id).
	FilesByCreation(fn func(fsm.File) bool)
	Tokens(fn func(fsm.Token) bool)
	// ExpiredFiles and ExpiredTokens return up to limit rows expired at now, from the state's
	// expiry indexes (earliest first), so the expiry loop does not scan every row.
	ExpiredFiles(now time.Time, limit int) []fsm.File
	ExpiredTokens(now time.Time, limit int) []fsm.Token
}

// Consensus proposes commands and linearizes reads.
type Consensus interface {
	// Propose replicates an encoded fsm command and returns once it is applied locally. The command's
	// own outcome comes back as an fsm sentinel error (fsm.ErrNotFound, ...). Any failure to reach a
	// decision wraps ErrUnavailable.
	Propose(ctx context.Context, cmd []byte) (index uint64, err error)
	// ReadIndex returns once the local state has applied everything committed before the call.
	ReadIndex(ctx context.Context) error
	// CanPropose returns nil when a command of this type may be proposed now, and an error
	// wrapping fsm.ErrNotEnabled while some Raft server does not speak the protocol that
	// introduced it (a rolling upgrade). A use case that has an older way to do the same thing
	// checks it and falls back; the leader checks every command again before it enters the log,
	// and propose then fails with ErrUnavailable. See fsm/DESIGN.md.
	CanPropose(typ fsm.CommandType) error
}

// ShardTransport moves shards to and from nodes, local or remote.
type ShardTransport interface {
	PutShard(ctx context.Context, nodeID string, id erasure.ShardID, body io.Reader) error
	OpenShard(ctx context.Context, nodeID string, id erasure.ShardID, off, n int64) (io.ReadCloser, error)
	DeleteShard(ctx context.Context, nodeID string, id erasure.ShardID) error
}

// Placer lists the nodes that can take new shards now.
type Placer interface {
	ShardCandidates() []erasure.Candidate
	// FullNodes counts alive nodes that refuse shards for lack of space.
	FullNodes() int
}

// Config holds the use cases' settings.
type Config struct {
	NodeID               string
	MaxFileSize          int64
	AllowAnonymousUpload bool
	// WriteQuorum overrides the default (k, or k+1 when k == m) when > 0.
	WriteQuorum int
	// ShardPipelineDepth is how many blocks may queue per shard stream (memory bound per upload is
	// about (depth+1) blocks times (k+m)/k).
	ShardPipelineDepth int
	// MaxUploadAge bounds an upload from BeginUpload to Commit. The garbage collector removes
	// unreferenced shards older than its grace period, so an upload must commit well within it;
	// node sets half the grace period. 0 means no bound.
	MaxUploadAge time.Duration
	// ShardFormat is the shard format new uploads write (erasure.FormatV2, or erasure.FormatV1
	// while some Raft server speaks a protocol older than fsm.ProtocolShardFormatV2, so that it can
	// still read and serve them); nil means erasure.FormatCurrent.
	ShardFormat func() uint16
	// TokenAuthority reports whether every Raft server speaks fsm.ProtocolTokenAuthority, so that a
	// token create may name its authority (the API key or full token) for the FSM to check at
	// apply instead of after a read index; nil means no (the read index, as before).
	TokenAuthority func() bool
	// ShardStallTimeout is how long a shard stream (a put or a read) may make no progress before it
	// is abandoned; 0 means 15 s.
	ShardStallTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Keyring is the cluster-wide gossip keyring (keyring.go); nil: not managed here.
	Keyring GossipKeyring
}

// Service implements the use cases over the three planes.
type Service struct {
	cfg       Config
	state     State
	consensus Consensus
	shards    ShardTransport
	placer    Placer
	metrics   *Metrics
	log       *slog.Logger

	// background holds best-effort work that outlives a request (shard cleanup).
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	codecsMu sync.Mutex
	codecs   map[codecKey]*erasure.Codec

	healingSet
	settings settingsCache // CurrentSettings, for downloads
	// deleteSlots bounds the shard deletes in flight across the service.
	deleteSlots chan struct{}
}

type codecKey struct {
	geometry  erasure.Geometry
	blockSize int
}

// NewService wires the use cases. metrics may be nil.
func NewService(cfg Config, state State, consensus Consensus, shards ShardTransport, placer Placer, metrics *Metrics) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShardPipelineDepth <= 0 {
		cfg.ShardPipelineDepth = 2
	}
	if cfg.ShardStallTimeout <= 0 {
		cfg.ShardStallTimeout = 15 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg: cfg, state: state, consensus: consensus, shards: shards, placer: placer,
		metrics: metrics, log: cfg.Logger, bgCtx: ctx, bgCancel: cancel,
		codecs: make(map[codecKey]*erasure.Codec), deleteSlots: make(chan struct{}, 32),
	}
}

// Close stops background work and waits for it.
func (s *Service) Close() {
	s.bgCancel()
	s.bg.Wait()
}

// AuthorizeUpload is nil when p may upload: any API key's principal, and Anonymous where this
// node allows anonymous uploads; otherwise ErrUnauthenticated. BeginUpload checks it too; a
// front-end asks first only to refuse before it reads a byte of the body.
func (s *Service) AuthorizeUpload(p Principal) error {
	if p.ID == "" || p.Anonymous && !s.cfg.AllowAnonymousUpload || p.unconfirmed() {
		return ErrUnauthenticated
	}
	return nil
}

// MaxFileSize is the largest accepted file, in bytes.
func (s *Service) MaxFileSize() int64 { return s.cfg.MaxFileSize }

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

// codec returns the shared codec for a geometry; codecs are safe for concurrent use.
func (s *Service) codec(g erasure.Geometry, blockSize int) (*erasure.Codec, error) {
	s.codecsMu.Lock()
	defer s.codecsMu.Unlock()
	key := codecKey{g, blockSize}
	if c, ok := s.codecs[key]; ok {
		return c, nil
	}
	c, err := erasure.NewCodec(g, blockSize)
	if err != nil {
		return nil, err
	}
	s.codecs[key] = c
	return c, nil
}

func (s *Service) clusterConfig() (fsm.ClusterConfig, error) {
	cfg, ok := s.state.Config()
	if !ok {
		return fsm.ClusterConfig{}, fmt.Errorf("%w: cluster not initialised yet", ErrUnavailable)
	}
	return cfg, nil
}

// WriteQuorum is how many shards of a segment must be durable before an upload commits.
func (s *Service) WriteQuorum(g erasure.Geometry) int { return s.writeQuorum(g) }

func (s *Service) writeQuorum(g erasure.Geometry) int {
	if s.cfg.WriteQuorum > 0 {
		return min(s.cfg.WriteQuorum, g.Total())
	}
	return g.DefaultWriteQuorum()
}

// readIndex linearizes the next reads of the local state. Within one read scope (one API request)
// the first read index serves every later read: they all observe at least everything committed
// before the request began, which is what linearizability asks of a single operation.
//
// A key the request authenticated without a read index (AuthenticateUnconfirmed) is checked
// again here, after it: a revoked key then fails this read index, and every later one of the
// request, with ErrUnauthenticated.
func (s *Service) readIndex(ctx context.Context) error {
	scope, _ := ctx.Value(readScopeKey{}).(*readScope)
	if scope != nil && scope.done.Load() {
		return scope.err
	}
	if err := s.consensus.ReadIndex(ctx); err != nil {
		if errors.Is(err, clusterapi.ErrLogStoreFull) {
			return fmt.Errorf("%w: this node's raft log: %w", ErrNoSpace, err)
		}
		return unavailable(err)
	}
	if scope == nil {
		return nil
	}
	if pk := scope.pending; pk != nil {
		if key, ok := s.state.APIKeyBySecret(pk.secret); ok && key.ID == pk.id {
			pk.confirmed.Store(true)
		} else {
			scope.err = ErrUnauthenticated
		}
	}
	scope.done.Store(true)
	return scope.err
}

type readScopeKey struct{}

// readScope is one request's read index. pending and err are written only before done is set
// (by the request's own goroutine, which runs its use cases one after another) and read after.
type readScope struct {
	done    atomic.Bool
	pending *pendingKey // a key AuthenticateUnconfirmed resolved from the local state
	err     error       // the pending key no longer holds (ErrUnauthenticated)
}

// pendingKey is an API key resolved without a read index: a Principal that carries one is
// unconfirmed until its request's read index found the key still there (or the FSM checked it at
// apply). The secret stays here, behind a pointer, so that printing a Principal never shows it.
type pendingKey struct {
	id        string
	secret    string
	confirmed atomic.Bool
}

// WithReadScope marks ctx as one request: the use cases called with it share a single read index
// (e.g. authenticating the API key and then looking up the file it asks for).
func WithReadScope(ctx context.Context) context.Context {
	// The same request shares one leader-wait budget across its read index and its proposal, so
	// it answers (or fails with 503) within the documented leader wait.
	return context.WithValue(clusterapi.WithWaitBudget(ctx), readScopeKey{}, &readScope{})
}

// propose encodes and replicates one command, mapping the fsm's outcomes onto core's errors.
func (s *Service) propose(ctx context.Context, typ fsm.CommandType, payload any) error {
	return s.proposeAt(ctx, s.now(), typ, payload)
}

// proposeAt is propose with the command time given: the time Apply judges the command by.
func (s *Service) proposeAt(ctx context.Context, at time.Time, typ fsm.CommandType, payload any) error {
	cmd, err := fsm.EncodeCommand(typ, newRequestID(), at, payload)
	if err != nil {
		return fmt.Errorf("encode %s: %w", typ, err)
	}
	_, err = s.consensus.Propose(ctx, cmd)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fsm.ErrNotFound):
		return ErrNotFound
	case errors.Is(err, fsm.ErrLastFullToken):
		return ErrLastFullToken
	case errors.Is(err, fsm.ErrNoAuthority):
		return errNoAuthority
	case errors.Is(err, fsm.ErrNotInitialized):
		return fmt.Errorf("%w: cluster not initialised yet", ErrUnavailable)
	case errors.Is(err, clusterapi.ErrLogStoreFull):
		return fmt.Errorf("%w: this node's raft log: %w", ErrNoSpace, err)
	case errors.Is(err, fsm.ErrConflict), errors.Is(err, fsm.ErrInvalidCommand),
		errors.Is(err, fsm.ErrAlreadyInitialized):
		return fmt.Errorf("%s: %w", typ, err)
	default:
		return unavailable(err)
	}
}

// unavailable marks err as a failure to reach the cluster, unless it already is a caller-side end.
func unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrShuttingDown) ||
		errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, clusterapi.ErrShutdown) {
		return fmt.Errorf("%w: %w", ErrShuttingDown, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// spawn runs fn in the background until the service closes.
func (s *Service) spawn(fn func(ctx context.Context)) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		fn(s.bgCtx)
	}()
}
