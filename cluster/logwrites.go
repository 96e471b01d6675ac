package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

// trackedStore is the Raft log and stable store with the outcome of its last write remembered.
// hashicorp/raft only logs a failed append (a follower answers the leader "no", a leader steps
// down), so without this a node with a full disk keeps reporting itself healthy.
//
// It also knows how long the write in flight has been running: a disk that hangs instead of
// failing (a dead controller, a frozen filesystem) shows as a write that never returns, which no
// error would ever report.
type trackedStore struct {
	*raftboltdb.BoltStore
	logger *slog.Logger

	mu       sync.Mutex
	lastErr  error
	failedAt time.Time
	// writing counts the writes in flight; writingSince is when the oldest of them started, or
	// when the last one of several that overlapped returned (which can only make a stall look
	// shorter than it is).
	writing      int
	writingSince time.Time
	// fencedSince is when this node began to withhold its Raft RPCs because of the write in flight
	// (fence), zero when it does not. Only a write's return ends it, so the start and the end of
	// one stall are each logged once, whatever role the node has by then and however many
	// heartbeat goroutines ask at once.
	fencedSince time.Time
	// closing is set by Close; drained is closed when the last write in flight returns after that.
	closing bool
	drained chan struct{}
}

// storeCloseWait bounds how long Close waits for the writes in flight to return.
const storeCloseWait = 10 * time.Second

var (
	_ raft.LogStore    = (*trackedStore)(nil)
	_ raft.StableStore = (*trackedStore)(nil)
)

// write runs one write to the log or stable store and remembers its outcome.
//
// A write that arrives once Close has begun never runs and never returns: raft panics on a failed
// write of its term or vote ("failed to save current term"), and acknowledging a write that was
// not made would be worse. Only a heartbeat goroutine of raft's that passed its shutdown check just
// before Raft.Shutdown can arrive so late, in a process that is stopping.
func (s *trackedStore) write(op func() error) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		select {}
	}
	if s.writing == 0 {
		s.writingSince = time.Now()
	}
	s.writing++
	s.mu.Unlock()
	err := op()
	s.mu.Lock()
	s.writing--
	now := time.Now()
	if s.writing > 0 {
		s.writingSince = now
	} else if s.closing {
		close(s.drained)
	}
	resumed, fencedFor := !s.fencedSince.IsZero(), now.Sub(s.fencedSince)
	s.fencedSince = time.Time{}
	err = s.track(err)
	s.mu.Unlock()
	if resumed {
		s.logger.Info("raft log write returned; heartbeats and replication resume", "withheld_for", fencedFor.Round(time.Millisecond))
	}
	return err
}

// fence reports whether this node must withhold its Raft RPCs at now, because a log write has been
// in flight for after or longer, and for how long that write has run. The first verdict to
// withhold in a stall is logged; the write's return ends the stall (write logs that).
func (s *trackedStore) fence(now time.Time, after time.Duration) (time.Duration, bool) {
	s.mu.Lock()
	stall := s.stallAt(now)
	withhold := stall >= after
	began := withhold && s.fencedSince.IsZero()
	if began {
		s.fencedSince = now
	}
	s.mu.Unlock()
	if began {
		s.logger.Error("raft log write has not returned; withholding this node's heartbeats and replication so that another node takes the lead",
			"write_in_flight_for", stall.Round(time.Millisecond), "stall_after", after)
	}
	return stall, withhold
}

// writeStall is how long the write in flight has been running, 0 when none is.
func (s *trackedStore) writeStall(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stallAt(now)
}

// stallAt is writeStall with s.mu held.
func (s *trackedStore) stallAt(now time.Time) time.Duration {
	if s.writing == 0 {
		return 0
	}
	return now.Sub(s.writingSince)
}

// Close closes the store once the writes in flight have returned, waiting at most storeCloseWait.
// A deposed leader whose disk hung still has queued writes of its term when Raft has shut down
// (heartbeat goroutines, which Raft.Shutdown does not wait for); closing bbolt under them would
// fail them, and raft panics on that. Writes that are still in flight after the wait are left
// to the stopping process, and the store is not closed.
func (s *trackedStore) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.drained = make(chan struct{})
	inFlight := s.writing > 0
	s.mu.Unlock()
	if inFlight {
		timer := time.NewTimer(storeCloseWait)
		defer timer.Stop()
		select {
		case <-s.drained:
		case <-timer.C:
			return fmt.Errorf("raft store not closed: writes still in flight after %s", storeCloseWait)
		}
	}
	return s.BoltStore.Close()
}

// track records a write's outcome; s.mu is held.
func (s *trackedStore) track(err error) error {
	if err == nil {
		s.lastErr, s.failedAt = nil, time.Time{}
		return nil
	}
	if s.lastErr == nil {
		s.failedAt = time.Now()
	}
	s.lastErr = err
	return err
}

// writeErr is the error of the last write, nil when it succeeded, and since when writes fail.
func (s *trackedStore) writeErr() (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failedAt, s.lastErr
}

func (s *trackedStore) StoreLog(l *raft.Log) error {
	return s.write(func() error { return s.BoltStore.StoreLog(l) })
}
func (s *trackedStore) StoreLogs(l []*raft.Log) error {
	return s.write(func() error { return s.BoltStore.StoreLogs(l) })
}
func (s *trackedStore) DeleteRange(lo, hi uint64) error {
	return s.write(func() error { return s.BoltStore.DeleteRange(lo, hi) })
}
func (s *trackedStore) Set(k, v []byte) error {
	return s.write(func() error { return s.BoltStore.Set(k, v) })
}
func (s *trackedStore) SetUint64(k []byte, v uint64) error {
	return s.write(func() error { return s.BoltStore.SetUint64(k, v) })
}

// LogWriteStall is how long the Raft log or stable store write in flight has been running, 0 when
// none is. A healthy disk returns within milliseconds; one that hangs never does.
func (n *RaftNode) LogWriteStall() time.Duration { return n.store.writeStall(time.Now()) }

// LogWriteErr is nil when the last write to the Raft log or stable store succeeded; otherwise it
// says what failed and since when. A full disk wraps ErrLogStoreFull.
func (n *RaftNode) LogWriteErr() error {
	since, err := n.store.writeErr()
	if err == nil {
		return nil
	}
	// bbolt formats some I/O errors with %s (a failed file resize, for one), which drops the
	// errno, so the message is checked too.
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error()) {
		return &LogWriteError{Since: since, Err: fmt.Errorf("%w: %w", clusterapi.ErrLogStoreFull, err)}
	}
	return &LogWriteError{Since: since, Err: err}
}

// LogWriteError is a failing Raft log store.
type LogWriteError struct {
	Since time.Time
	Err   error
}

func (e *LogWriteError) Error() string {
	return "raft log writes failing for " + time.Since(e.Since).Round(time.Millisecond).String() + ": " + e.Err.Error()
}

func (e *LogWriteError) Unwrap() error { return e.Err }
