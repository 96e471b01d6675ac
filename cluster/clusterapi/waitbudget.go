package clusterapi

import (
	"context"
	"sync"
	"time"
)

// WaitBudget is how long one request may wait for a usable leader, across every proposal and read
// index it makes: the documented bound (Consensus.LeaderWait) is per request, not per wait, so a
// token create (a read index, then a proposal) cannot take twice as long. Waits that succeed at
// once spend next to nothing of it.
type WaitBudget struct {
	mu    sync.Mutex
	spent time.Duration
}

type waitBudgetKey struct{}

// WithWaitBudget gives every Propose and ReadIndex under ctx one shared leader-wait budget.
// Without one (background work), each call gets the whole leader wait of its own.
func WithWaitBudget(ctx context.Context) context.Context {
	return context.WithValue(ctx, waitBudgetKey{}, &WaitBudget{})
}

// WaitBudgetOf returns ctx's budget, or nil when it has none.
func WaitBudgetOf(ctx context.Context) *WaitBudget {
	b, _ := ctx.Value(waitBudgetKey{}).(*WaitBudget)
	return b
}

// Left is what remains of limit; it may be negative once the budget is spent.
func (b *WaitBudget) Left(limit time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return limit - b.spent
}

// Spend records d of waiting.
func (b *WaitBudget) Spend(d time.Duration) {
	b.mu.Lock()
	b.spent += d
	b.mu.Unlock()
}
