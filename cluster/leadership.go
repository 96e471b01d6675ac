package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// LeaderTask is work that runs only while this node leads Raft. Run gets a context that ends when
// the leadership term ends (or the node stops); it must return promptly once that context is done.
// A task may also return early (cluster initialisation does, once it is done).
type LeaderTask struct {
	Name string
	Run  func(ctx context.Context)
}

// Leadership is the one loop that turns Raft leadership into running leader tasks, as Consul's
// monitorLeadership does. When this node becomes leader it commits a barrier (so the FSM holds
// every entry of earlier terms and the leader acts on the current state), then starts every task
// under a context scoped to the term. When leadership is lost, or the term changes under it, it
// cancels that context and waits for every task to return before anything else happens; a new
// term starts from scratch.
//
// Transfer hands leadership to another server the graceful way: it stops the tasks first and only
// then asks Raft to transfer, so the old leader's tasks have all returned before the new leader
// can start its own. When leadership is lost without notice (a partition, a crash), the old
// leader's tasks stop as soon as its Raft steps down; anything they propose in the meantime is
// refused by Raft, because the old leader can no longer commit.
type Leadership struct {
	Raft *raft.Raft
	// Barrier commits an entry of the current term and waits until the local FSM applied it
	// (Consensus.Barrier).
	Barrier func(ctx context.Context) error
	Tasks   []LeaderTask
	// Poll is a backstop in case a leadership observation is dropped; 0 means 1 s.
	Poll   time.Duration
	Logger *slog.Logger

	// stepMu serialises starting and stopping terms: the loop's step and Transfer.
	stepMu       sync.Mutex
	transferring bool // guarded by stepMu

	mu      sync.Mutex
	current *leaderTerm
	wake    chan struct{}
}

// leaderTerm is one leadership term's running tasks.
type leaderTerm struct {
	term   uint64
	cancel context.CancelFunc
	done   chan struct{} // closed when the barrier gave up or every task returned
}

// Run watches leadership until ctx ends, then stops the tasks of the current term and waits for
// them. wg tracks the loop.
func (l *Leadership) Run(ctx context.Context, wg *sync.WaitGroup) {
	if l.Poll <= 0 {
		l.Poll = time.Second
	}
	l.mu.Lock()
	l.wake = make(chan struct{}, 1)
	l.mu.Unlock()
	obsCh := make(chan raft.Observation, 16)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	l.Raft.RegisterObserver(obs)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer l.Raft.DeregisterObserver(obs)
		defer l.stopTerm("node stopping")
		tick := time.NewTicker(l.Poll)
		defer tick.Stop()
		for {
			l.step(ctx)
			select {
			case <-ctx.Done():
				return
			case <-obsCh:
			case <-l.wake:
			case <-tick.C:
			}
		}
	}()
}

// step starts or stops the term's tasks to match Raft's state now.
func (l *Leadership) step(ctx context.Context) {
	l.stepMu.Lock()
	defer l.stepMu.Unlock()
	leading := l.Raft.State() == raft.Leader
	term := l.Raft.CurrentTerm()
	l.mu.Lock()
	cur := l.current
	l.mu.Unlock()
	transferring := l.transferring
	switch {
	case cur != nil && (!leading || cur.term != term):
		l.stopTerm("leadership lost")
		if leading && !transferring {
			l.startTerm(ctx, term)
		}
	case cur == nil && leading && !transferring:
		l.startTerm(ctx, term)
	}
}

func (l *Leadership) startTerm(parent context.Context, term uint64) {
	ctx, cancel := context.WithCancel(parent)
	t := &leaderTerm{term: term, cancel: cancel, done: make(chan struct{})}
	l.mu.Lock()
	l.current = t
	l.mu.Unlock()
	go func() {
		defer close(t.done)
		if err := l.barrier(ctx); err != nil {
			l.Logger.Info("leadership ended before its barrier committed", "term", term, "err", err)
			return
		}
		l.Logger.Info("leadership established; starting leader tasks", "term", term, "tasks", len(l.Tasks))
		var tasks sync.WaitGroup
		for _, task := range l.Tasks {
			tasks.Add(1)
			go func() {
				defer tasks.Done()
				task.Run(ctx)
			}()
		}
		tasks.Wait()
	}()
}

// barrier retries the term's barrier until it commits, leadership ends, or ctx does.
func (l *Leadership) barrier(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := l.Barrier(bctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || l.Raft.State() != raft.Leader {
			return errors.Join(err, ctx.Err())
		}
		l.Logger.Warn("leader barrier failed; retrying", "err", err)
		if werr := backoff(ctx, attempt); werr != nil {
			return werr
		}
	}
}

// stopTerm cancels the current term's tasks and waits until every one has returned.
func (l *Leadership) stopTerm(why string) {
	l.mu.Lock()
	t := l.current
	l.current = nil
	l.mu.Unlock()
	if t == nil {
		return
	}
	t.cancel()
	<-t.done
	l.Logger.Info("leader tasks stopped", "term", t.term, "why", why)
}

// Transfer stops every leader task, waits for them, and then transfers Raft leadership to another
// server. If the transfer fails, the tasks start again while this node still leads.
func (l *Leadership) Transfer() error {
	l.stepMu.Lock()
	l.transferring = true
	l.stopTerm("leadership transfer")
	l.stepMu.Unlock()
	err := l.Raft.LeadershipTransfer().Error()
	l.stepMu.Lock()
	l.transferring = false
	l.stepMu.Unlock()
	l.mu.Lock()
	wake := l.wake
	l.mu.Unlock()
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("leadership transfer: %w", err)
	}
	return nil
}
