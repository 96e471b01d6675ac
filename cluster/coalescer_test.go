package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestCoalescerBatchesCalls: calls that arrive while a round runs are all served by one next
// round, never by the round already running (it may have read the commit index before they
// arrived), and each round's result reaches every call it serves.
func TestCoalescerBatchesCalls(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rounds atomic.Uint64
	release := make(chan struct{})
	entered := make(chan uint64, 16)
	c := newCoalescer(ctx, 5*time.Second, func(context.Context) (uint64, error) {
		n := rounds.Add(1)
		entered <- n
		<-release
		return n * 100, nil
	})
	defer c.close()

	first := make(chan uint64, 1)
	go func() {
		idx, _ := c.do(context.Background())
		first <- idx
	}()
	if n := <-entered; n != 1 {
		t.Fatalf("first round %d", n)
	}
	// Round 1 is running; these ten calls must wait for round 2, together.
	const waiters = 10
	var wg sync.WaitGroup
	got := make([]uint64, waiters)
	var queued atomic.Int32
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			queued.Add(1)
			got[i], _ = c.do(context.Background())
		}()
	}
	testutil.WaitFor(t, 5*time.Second, "ten calls queued behind round 1", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return queued.Load() == waiters && c.next != nil
	})
	release <- struct{}{}
	if idx := <-first; idx != 100 {
		t.Fatalf("first call got %d, want round 1's 100", idx)
	}
	if n := <-entered; n != 2 {
		t.Fatalf("second round %d", n)
	}
	close(release)
	wg.Wait()
	rounds2 := 0
	for _, idx := range got {
		if idx == 100 {
			t.Fatal("a call that arrived during round 1 was answered by round 1")
		}
		if idx == 200 {
			rounds2++
		}
	}
	// Calls that had not yet entered do when round 2 started may be served by round 3; the point
	// is that ten calls cost at most two rounds after the first.
	if total := rounds.Load(); total > 3 {
		t.Fatalf("%d rounds for 11 calls, want at most 3", total)
	}
	if rounds2 == 0 {
		t.Fatal("no call was served by round 2")
	}
}

// TestCoalescerErrorsAndClose: a round's error reaches its callers, a caller's own context ends
// its wait, and a closed coalescer refuses new calls.
func TestCoalescerErrorsAndClose(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	boom := errors.New("boom")
	block := make(chan struct{})
	var calls atomic.Int32
	c := newCoalescer(ctx, time.Second, func(rctx context.Context) (uint64, error) {
		if calls.Add(1) == 1 {
			return 0, boom
		}
		select {
		case <-block:
		case <-rctx.Done():
			return 0, rctx.Err()
		}
		return 1, nil
	})
	if _, err := c.do(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("do = %v, want the round's error", err)
	}
	short, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stop()
	if _, err := c.do(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("do with an expiring context = %v", err)
	}
	cancel() // the owner cancels the base first, which ends the running round
	c.close()
	if _, err := c.do(context.Background()); !errors.Is(err, clusterapi.ErrShutdown) {
		t.Fatalf("do after close = %v, want clusterapi.ErrShutdown", err)
	}
	close(block)
}
