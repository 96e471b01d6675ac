package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/fsm"
)

// AppliedWaiter is the part of the FSM consensus needs: how far it has applied.
type AppliedWaiter interface {
	AppliedIndex() uint64
	WaitApplied(ctx context.Context, index uint64) error
}

// ForwardClient reaches the leader over internal RPC. *RPCClient implements it.
type ForwardClient interface {
	ApplyForwarded(ctx context.Context, addr string, cmd []byte) (index uint64, errCode string, err error)
	ReadIndex(ctx context.Context, addr string) (uint64, error)
}

// Consensus is a node's door to Raft: linearizable proposals from any node (forwarded to the leader
// when needed) and linearizable reads through a batched read index.
type Consensus struct {
	raft    *raft.Raft
	applied AppliedWaiter
	forward ForwardClient
	log     *slog.Logger
	nodeID  string

	// LeaderWait is how long Propose and ReadIndex retry while no leader answers, so that a node cut
	// off from the quorum fails fast with "unavailable" instead of holding every request until its
	// deadline. Set it before use.
	LeaderWait time.Duration
	// Gate decides, on the leader, whether a command's type may enter the log yet (ProtocolGate);
	// nil admits every type this build knows. Set it before use.
	Gate CommandGate
	// LocalLogErr, when set, reports a failing local Raft log (RaftNode.LogWriteErr). A proposal or
	// read index made while the local log is out of space fails at once with ErrLogStoreFull: this
	// node could not apply up to the index it waits for, so waiting would only end in a timeout.
	LocalLogErr func() error
	// ClockSkew, when set, is non-nil while this node's wall clock disagrees with its peers'
	// (Membership.ClockSkew): proposals and read indexes then fail at once with it. Commands carry
	// the proposer's time, which moves the state's clock (de-duplication, expiry), and tokens
	// expire by the serving node's clock, so a node whose clock is wrong must do neither.
	ClockSkew func() error
	// MaxClockAhead, when positive, is the allowed clock offset (--max-clock-offset); the leader
	// refuses a command whose time is more than twice that ahead of its own clock
	// (fsm.ErrClockAhead). Twice: two nodes that each pass ClockSkew may be that far apart. It
	// covers a proposer that has not measured its peers yet, such as one that has just started.
	// A leader whose own clock is skewed does not judge by it.
	MaxClockAhead time.Duration
	// Now is the clock MaxClockAhead is judged by; nil is time.Now.
	Now func() time.Time

	// readyTerm is the term in which this node, as leader, has committed a barrier; only then can its
	// commit index be trusted for reads.
	readyTerm atomic.Uint64
	barrierMu sync.Mutex

	leaderRounds   *coalescer
	followerRounds *coalescer

	stop     context.CancelFunc
	stopCtx  context.Context
	closeMu  sync.Mutex
	closed   bool
	inflight sync.WaitGroup // goroutines waiting on apply futures
}

// DefaultProposeTimeout bounds a proposal when the caller's context has no deadline.
const DefaultProposeTimeout = 15 * time.Second

// DefaultLeaderWait is how long a request waits for a usable leader (an election, a leadership
// transfer) before it fails as unavailable.
const DefaultLeaderWait = 5 * time.Second

// DefaultReadIndexTimeout bounds a read index when the caller's context has no deadline.
const DefaultReadIndexTimeout = 10 * time.Second

// CommandGate says whether a command may be proposed now. *ProtocolGate implements it.
type CommandGate interface {
	// Allows returns nil when every Raft server speaks the protocol that introduced typ.
	Allows(typ fsm.CommandType) error
	// Supports reports whether every Raft server speaks protocol version, for a command that sets
	// a field newer than its type.
	Supports(version int) bool
}

// NewConsensus wraps a running Raft.
func NewConsensus(nodeID string, r *raft.Raft, applied AppliedWaiter, forward ForwardClient, logger *slog.Logger) *Consensus {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Consensus{raft: r, applied: applied, forward: forward, log: logger, nodeID: nodeID,
		LeaderWait: DefaultLeaderWait, stop: cancel, stopCtx: ctx}
	c.leaderRounds = newCoalescer(ctx, 5*time.Second, c.leaderReadIndexRound)
	c.followerRounds = newCoalescer(ctx, 5*time.Second, c.followerReadIndexRound)
	return c
}

// Close stops the read-index batchers and waits for in-flight apply waits to end.
func (c *Consensus) Close() {
	c.closeMu.Lock()
	c.closed = true
	c.closeMu.Unlock()
	c.stop()
	c.leaderRounds.close()
	c.followerRounds.close()
	c.inflight.Wait()
}

// IsLeader reports whether this node is the Raft leader now.
func (c *Consensus) IsLeader() bool { return c.raft.State() == raft.Leader }

// Propose replicates cmd and returns once the local FSM has applied it. The command's own result
// comes back as an fsm sentinel error. Indeterminate failures (leadership lost mid-flight) are
// retried with the same bytes, which the FSM de-duplicates by request id.
func (c *Consensus) Propose(ctx context.Context, cmd []byte) (_ uint64, err error) {
	defer func() { err = translate(err) }()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultProposeTimeout)
		defer cancel()
	}
	if err := c.localLogFull(); err != nil {
		return 0, fmt.Errorf("propose: %w", err)
	}
	if err := c.clockSkew(); err != nil {
		return 0, fmt.Errorf("propose: %w", err)
	}
	caller := ctx
	ctx, done := c.bounded(ctx)
	defer done()
	var lastErr error = clusterapi.ErrNoLeader
	for attempt := 0; ; attempt++ {
		idx, result, err := c.proposeOnce(ctx, cmd)
		if err == nil {
			return idx, result
		}
		if werr := c.waitEnded(caller, ctx); werr != nil {
			return 0, fmt.Errorf("propose: %w (last error: %w)", werr, err)
		}
		if !retryable(err) {
			return 0, err
		}
		lastErr = err
		if werr := backoff(ctx, attempt); werr != nil {
			if werr = c.waitEnded(caller, ctx); werr == nil {
				werr = ctx.Err()
			}
			return 0, fmt.Errorf("propose: %w (last error: %w)", werr, lastErr)
		}
	}
}

// localLogFull is the local log's out-of-space error, or nil.
func (c *Consensus) localLogFull() error {
	if c.LocalLogErr == nil {
		return nil
	}
	if err := c.LocalLogErr(); errors.Is(err, clusterapi.ErrLogStoreFull) {
		return err
	}
	return nil
}

// clockSkew is this node's clock-skew refusal, or nil.
func (c *Consensus) clockSkew() error {
	if c.ClockSkew == nil {
		return nil
	}
	return c.ClockSkew()
}

// clockAhead is fsm.ErrClockAhead for a command stamped more than MaxClockAhead ahead of this
// node's clock.
func (c *Consensus) clockAhead(cmd []byte) error {
	if c.MaxClockAhead <= 0 {
		return nil
	}
	at, err := fsm.PeekCommandTime(cmd)
	if err != nil {
		return nil // the FSM refuses it as ErrInvalidCommand, as it always has
	}
	if ahead, limit := at.Sub(c.now()), 2*c.MaxClockAhead; ahead > limit && c.clockSkew() == nil {
		return fmt.Errorf("%w: by %s, more than the allowed %s: the proposing node's clock is wrong", fsm.ErrClockAhead, ahead.Round(time.Millisecond), limit)
	}
	return nil
}

// now is the clock commands are stamped and judged by.
func (c *Consensus) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// errLeaderWait marks a wait cut off by the leader-wait bound rather than by the caller.
var errLeaderWait = errors.New("no usable leader within the leader wait")

// bounded limits ctx to what is left of the request's leader-wait budget. done records the time
// spent; call it when the wait is over.
func (c *Consensus) bounded(ctx context.Context) (context.Context, func()) {
	b := clusterapi.WaitBudgetOf(ctx)
	left := c.LeaderWait
	if b != nil {
		left = b.Left(c.LeaderWait)
	}
	begin := time.Now()
	bctx, cancel := context.WithTimeoutCause(ctx, max(left, 0), fmt.Errorf("%w (%s)", errLeaderWait, c.LeaderWait))
	return bctx, func() {
		cancel()
		if b != nil {
			b.Spend(time.Since(begin))
		}
	}
}

// waitEnded reports why a bounded wait must stop: the caller's own end as is, the leader-wait
// bound as an ErrNoLeader (the node found no usable leader in time: 503), nil to go on.
func (c *Consensus) waitEnded(caller, bounded context.Context) error {
	if err := caller.Err(); err != nil {
		return err
	}
	if bounded.Err() != nil {
		return fmt.Errorf("%w: %w", clusterapi.ErrNoLeader, context.Cause(bounded))
	}
	return nil
}

// proposeOnce returns (index, command result, transport error).
func (c *Consensus) proposeOnce(ctx context.Context, cmd []byte) (uint64, error, error) {
	if c.raft.State() == raft.Leader {
		res, err := c.applyLocal(ctx, cmd)
		if err != nil {
			return 0, nil, err
		}
		return res.Index, res.Err, nil
	}
	addr, _ := c.raft.LeaderWithID()
	if addr == "" {
		return 0, nil, clusterapi.ErrNoLeader
	}
	idx, code, err := c.forward.ApplyForwarded(ctx, string(addr), cmd)
	if err != nil {
		return 0, nil, fmt.Errorf("forward to leader %s: %w", addr, err)
	}
	// Read-your-writes: the caller's next local read must see its own command.
	if err := c.applied.WaitApplied(ctx, idx); err != nil {
		return 0, nil, err
	}
	return idx, fsm.ErrorFromCode(code), nil
}

// CanPropose returns nil when a command of type typ may be proposed now, and an error wrapping
// fsm.ErrNotEnabled while some Raft server does not speak the protocol that introduced it. A
// proposer with an older alternative (a new command that replaces an old one, a new field) checks
// it first and falls back; the leader checks it again on every command it appends, so a command
// the cluster cannot apply never reaches the log whatever the proposer believed.
func (c *Consensus) CanPropose(typ fsm.CommandType) error {
	if c.Gate == nil {
		if _, ok := fsm.CommandProtocol(typ); !ok {
			return fmt.Errorf("%w: unknown command type %q", fsm.ErrInvalidCommand, typ)
		}
		return nil
	}
	return c.Gate.Allows(typ)
}

// admit is the leader's gate on every entry it appends; a refusal is the command's result. It
// checks:
//   - the command's type;
//   - the proposal rules (fsm.CheckProposal): rules found after the type was first written, which
//     apply cannot take on without changing the result of entries some log already holds;
//   - for a type with fields newer than itself (fsm.CommandFieldsProtocol) while some server does
//     not speak them, the fields the command sets: an older replica refuses an unknown field as
//     ErrInvalidCommand where the others apply it, and the replicas would diverge.
//
// A full decode is paid only when a cheap scan finds what a proposal rule looks for, or in that
// mixed-version window.
func (c *Consensus) admit(cmd []byte) error {
	typ, err := fsm.PeekCommandType(cmd)
	if err != nil {
		return nil // the FSM refuses it as ErrInvalidCommand, as it always has
	}
	if err := c.CanPropose(typ); err != nil {
		return err
	}
	if err := fsm.CheckProposal(cmd); err != nil {
		return err
	}
	if err := c.clockAhead(cmd); err != nil {
		return err
	}
	if c.Gate == nil {
		return nil
	}
	since, _ := fsm.CommandProtocol(typ)
	newest, _ := fsm.CommandFieldsProtocol(typ)
	if newest <= since || c.Gate.Supports(newest) {
		return nil
	}
	need, err := fsm.CommandNeeds(cmd)
	if err != nil {
		return nil // every replica refuses it alike
	}
	if !c.Gate.Supports(need) {
		return fmt.Errorf("%w: this %s sets a field of protocol %d, which some raft server does not speak", fsm.ErrNotEnabled, typ, need)
	}
	return nil
}

// applyLocal applies on this node, which must be the leader, and waits under ctx.
func (c *Consensus) applyLocal(ctx context.Context, cmd []byte) (*fsm.Result, error) {
	if err := c.admit(cmd); err != nil {
		return &fsm.Result{Err: err}, nil
	}
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return nil, clusterapi.ErrShutdown
	}
	c.inflight.Add(1)
	c.closeMu.Unlock()
	f := c.raft.Apply(cmd, 5*time.Second)
	done := make(chan error, 1)
	go func() {
		defer c.inflight.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("unexpected apply response %T", f.Response())
	}
	return res, nil
}

// ApplyForwarded is the leader side of forwarding: apply a command a follower sent.
func (c *Consensus) ApplyForwarded(ctx context.Context, cmd []byte) (uint64, string, error) {
	if c.raft.State() != raft.Leader {
		return 0, "", ErrNotLeader
	}
	res, err := c.applyLocal(ctx, cmd)
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return 0, "", fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return 0, "", err
	}
	return res.Index, fsm.ErrorCode(res.Err), nil
}

// ReadIndex returns once the local FSM has applied every entry committed before the call: the
// read-index recipe (leader commit index, leadership confirmed, wait for apply), batched so that
// one leadership round trip serves every request that arrived meanwhile.
func (c *Consensus) ReadIndex(ctx context.Context) (err error) {
	defer func() { err = translate(err) }()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultReadIndexTimeout)
		defer cancel()
	}
	if err := c.localLogFull(); err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	if err := c.clockSkew(); err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	caller := ctx
	ctx, done := c.bounded(ctx)
	defer done()
	for attempt := 0; ; attempt++ {
		var idx uint64
		var err error
		if c.raft.State() == raft.Leader {
			idx, err = c.leaderRounds.do(ctx)
		} else {
			idx, err = c.followerRounds.do(ctx)
		}
		if err == nil {
			// An isolated node may learn an index it cannot reach: the wait for it is bounded too.
			if err = c.applied.WaitApplied(ctx, idx); err != nil {
				if werr := c.waitEnded(caller, ctx); werr != nil {
					return fmt.Errorf("read index: apply up to %d: %w", idx, werr)
				}
			}
			return err
		}
		if werr := c.waitEnded(caller, ctx); werr != nil {
			return fmt.Errorf("read index: %w (last error: %w)", werr, err)
		}
		if !retryable(err) {
			return err
		}
		if werr := backoff(ctx, attempt); werr != nil {
			if werr = c.waitEnded(caller, ctx); werr == nil {
				werr = ctx.Err()
			}
			return fmt.Errorf("read index: %w (last error: %w)", werr, err)
		}
	}
}

// LeaderCommitIndex returns the leader's commit index, confirmed by a leadership check, without
// waiting for the local state machine: readiness compares it with the local applied index. It
// shares the read index's batched rounds.
func (c *Consensus) LeaderCommitIndex(ctx context.Context) (uint64, error) {
	if c.raft.State() == raft.Leader {
		return c.leaderRounds.do(ctx)
	}
	return c.followerRounds.do(ctx)
}

// LeaderReadIndex is the leader side of a follower's read index: this node's commit index, once it
// has confirmed it is still the leader of a term in which it committed an entry.
func (c *Consensus) LeaderReadIndex(ctx context.Context) (uint64, error) {
	if c.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	return c.leaderRounds.do(ctx)
}

func (c *Consensus) leaderReadIndexRound(ctx context.Context) (uint64, error) {
	if err := c.ensureTermBarrier(ctx); err != nil {
		return 0, err
	}
	term := c.readyTerm.Load()
	idx := c.raft.CommitIndex()
	if err := c.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	if c.raft.CurrentTerm() != term {
		return 0, fmt.Errorf("%w: term changed during read index", ErrNotLeader)
	}
	return idx, nil
}

// ensureTermBarrier commits a barrier command once per leadership term: a new leader's commit index
// is not trustworthy until an entry of its own term has committed, and the barrier is an entry the
// FSM applies, so the commit index always names an index followers' FSMs will reach.
func (c *Consensus) ensureTermBarrier(ctx context.Context) error {
	term := c.raft.CurrentTerm()
	if c.readyTerm.Load() == term {
		return nil
	}
	c.barrierMu.Lock()
	defer c.barrierMu.Unlock()
	if c.readyTerm.Load() == term {
		return nil
	}
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	if c.raft.CurrentTerm() != term || c.raft.State() != raft.Leader {
		return fmt.Errorf("%w: leadership changed during barrier", ErrNotLeader)
	}
	c.readyTerm.Store(term)
	return nil
}

// Barrier commits a no-op command on the leader and waits until it is applied locally.
func (c *Consensus) Barrier(ctx context.Context) error {
	// A barrier is stamped with this node's clock like any command, so a leader whose clock is
	// wrong must not write one (it would move the state's clock): it hands the lead over instead.
	if err := c.clockSkew(); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	cmd, err := fsm.EncodeCommand(fsm.CmdBarrier, barrierRequestID(), c.now().UTC(), fsm.Barrier{Node: c.nodeID})
	if err != nil {
		return err
	}
	res, err := c.applyLocal(ctx, cmd)
	if err != nil {
		return fmt.Errorf("%w: barrier: %w", ErrNotLeader, err)
	}
	return res.Err
}

func barrierRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "barrier-" + hex.EncodeToString(b[:])
}

func (c *Consensus) followerReadIndexRound(ctx context.Context) (uint64, error) {
	addr, _ := c.raft.LeaderWithID()
	if addr == "" {
		return 0, clusterapi.ErrNoLeader
	}
	return c.forward.ReadIndex(ctx, string(addr))
}

// translate gives raft's errors that leave Consensus cairn's own sentinels, so that callers (core)
// need not know raft: a shut-down Raft is ErrShutdown. The raft error stays in the chain.
func translate(err error) error {
	if errors.Is(err, raft.ErrRaftShutdown) && !errors.Is(err, clusterapi.ErrShutdown) {
		return fmt.Errorf("%w: %w", clusterapi.ErrShutdown, err)
	}
	return err
}

// retryable reports whether an error is about who leads, not about the command.
func retryable(err error) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, clusterapi.ErrShutdown):
		return false
	}
	// Everything else is leadership churn or a peer we could not reach: try again until the
	// caller's deadline. Forwarded commands are safe to resend thanks to request-id de-duplication.
	return true
}

// backoff waits a little before the next attempt, growing from 10 ms to 200 ms.
func backoff(ctx context.Context, attempt int) error {
	d := min(10*time.Millisecond<<min(attempt, 5), 200*time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// coalescer batches concurrent calls: a call is served by the first round that starts after it
// arrived, and one round serves every call that arrived while the previous round ran.
type coalescer struct {
	base    context.Context
	timeout time.Duration
	fn      func(ctx context.Context) (uint64, error)

	mu      sync.Mutex
	next    *round
	running bool
	closed  bool
	wg      sync.WaitGroup
}

type round struct {
	done chan struct{}
	idx  uint64
	err  error
}

func newCoalescer(base context.Context, timeout time.Duration, fn func(context.Context) (uint64, error)) *coalescer {
	return &coalescer{base: base, timeout: timeout, fn: fn}
}

func (c *coalescer) do(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, clusterapi.ErrShutdown
	}
	if c.next == nil {
		c.next = &round{done: make(chan struct{})}
	}
	r := c.next
	if !c.running {
		c.running = true
		c.wg.Add(1)
		go c.loop()
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.idx, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// close refuses new calls and waits for the running round (its context is the base, which the
// owner cancels first).
func (c *coalescer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *coalescer) loop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		r := c.next
		c.next = nil
		if r == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.base, c.timeout)
		r.idx, r.err = c.fn(ctx)
		cancel()
		close(r.done)
	}
}

// LeaderEndpoint adapts Consensus to the internal RPC server's LeaderService: the leader side of
// forwarding and of followers' read index.
func (c *Consensus) LeaderEndpoint() LeaderService { return leaderEndpoint{c} }

type leaderEndpoint struct{ c *Consensus }

func (l leaderEndpoint) ApplyForwarded(ctx context.Context, cmd []byte) (uint64, string, error) {
	return l.c.ApplyForwarded(ctx, cmd)
}

func (l leaderEndpoint) ReadIndex(ctx context.Context) (uint64, error) {
	return l.c.LeaderReadIndex(ctx)
}
