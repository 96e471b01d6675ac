package cluster

import (
	"io"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/fsm"
)

// RaftFSM is the fsm as hashicorp/raft sees it: a raft.BatchingFSM (and a StateMachine). Raft's
// types stop here, so that fsm's API, and with it core (which reads the fsm), does not depend on
// raft.
type RaftFSM struct {
	fsm *fsm.FSM
}

var _ StateMachine = (*RaftFSM)(nil)

// NewRaftFSM adapts f for raft.NewRaft.
func NewRaftFSM(f *fsm.FSM) *RaftFSM { return &RaftFSM{fsm: f} }

// Apply applies one log entry; it is ApplyBatch of one.
func (a *RaftFSM) Apply(l *raft.Log) any { return a.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies raft's entries in one fsm transaction. Command entries get a *fsm.Result,
// every other entry nil.
func (a *RaftFSM) ApplyBatch(logs []*raft.Log) []any { return a.fsm.ApplyEntries(Entries(logs)) }

// Entries translates raft's log entries into the fsm's.
func Entries(logs []*raft.Log) []fsm.Entry {
	entries := make([]fsm.Entry, len(logs))
	for i, l := range logs {
		entries[i] = fsm.Entry{Index: l.Index, Command: l.Type == raft.LogCommand, Data: l.Data}
	}
	return entries
}

// Snapshot captures the fsm's state; the I/O happens in the snapshot's Persist.
func (a *RaftFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := a.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return raftSnapshot{s}, nil
}

// AppliedIndex is the last index the fsm applied durably (StateMachine).
func (a *RaftFSM) AppliedIndex() uint64 { return a.fsm.AppliedIndex() }

// Restore replaces the fsm's state with a snapshot's.
func (a *RaftFSM) Restore(rc io.ReadCloser) error { return a.fsm.Restore(rc) }

// raftSnapshot is an fsm snapshot as raft persists it.
type raftSnapshot struct{ *fsm.Snapshot }

// Persist writes the snapshot to sink, cancelling the sink on an error.
func (s raftSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.Write(sink); err != nil {
		_ = sink.Cancel() // the write error is the one worth reporting
		return err
	}
	return sink.Close()
}
