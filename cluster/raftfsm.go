package cluster

import (
	"io"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/fsm"
)

// RaftFSM is the fsm as hashicorp/raft sees it: a raft.BatchingFSM (and a StateMachine). Raft's
// types are meant to stop here, so that fsm's API, and with it core (which reads the fsm), need
// not depend on raft. Until fsm drops its raft-typed methods, StartRaft and --recover still hand
// the fsm to raft directly; the tests of this package go through RaftFSM.
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
//
// TODO(fsm): the fsm still takes raft's entries itself; once it exposes a raft-free
// ApplyEntries([]fsm.Entry{Index, Command bool, Data}) and a Snapshot whose Persist writes to
// an io.Writer, the translation moves here and fsm drops its raft import.
func (a *RaftFSM) ApplyBatch(logs []*raft.Log) []any { return a.fsm.ApplyBatch(logs) }

// Snapshot captures the fsm's state; the I/O happens in the snapshot's Persist.
func (a *RaftFSM) Snapshot() (raft.FSMSnapshot, error) { return a.fsm.Snapshot() }

// AppliedIndex is the last index the fsm applied durably (StateMachine).
func (a *RaftFSM) AppliedIndex() uint64 { return a.fsm.AppliedIndex() }

// Restore replaces the fsm's state with a snapshot's.
func (a *RaftFSM) Restore(rc io.ReadCloser) error { return a.fsm.Restore(rc) }
