package cluster

import (
	"errors"
	"fmt"
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

	mu       sync.Mutex
	lastErr  error
	failedAt time.Time
	// writing counts the writes in flight; writingSince is when the oldest of them started, or
	// when the last one of several that overlapped returned (which can only make a stall look
	// shorter than it is).
	writing      int
	writingSince time.Time
}

var (
	_ raft.LogStore    = (*trackedStore)(nil)
	_ raft.StableStore = (*trackedStore)(nil)
)

// write runs one write to the log or stable store and remembers its outcome.
func (s *trackedStore) write(op func() error) error {
	s.mu.Lock()
	if s.writing == 0 {
		s.writingSince = time.Now()
	}
	s.writing++
	s.mu.Unlock()
	err := op()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writing--
	if s.writing > 0 {
		s.writingSince = time.Now()
	}
	return s.track(err)
}

// writeStall is how long the write in flight has been running, 0 when none is.
func (s *trackedStore) writeStall(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writing == 0 {
		return 0
	}
	return now.Sub(s.writingSince)
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
