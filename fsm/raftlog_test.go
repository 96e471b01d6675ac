package fsm

import "github.com/hashicorp/raft"

// The tests drive the FSM with raft's own types, and through a real raft where it matters
// (raft_test.go, fixture_test.go). They cannot use cluster.RaftFSM, the adapter production runs
// (cluster imports fsm), so these test-only methods and testRaftFSM do what it does.

func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]Entry, len(logs))
	for i, l := range logs {
		entries[i] = Entry{Index: l.Index, Command: l.Type == raft.LogCommand, Data: l.Data}
	}
	return f.ApplyEntries(entries)
}

// Persist makes *Snapshot a raft.FSMSnapshot in the tests.
func (s *Snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.Write(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// testRaftFSM is the FSM as raft.NewRaft takes it.
type testRaftFSM struct{ *FSM }

var _ raft.BatchingFSM = testRaftFSM{}

func (a testRaftFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := a.FSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return s, nil
}
