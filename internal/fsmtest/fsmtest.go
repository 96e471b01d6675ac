package fsmtest

import (
	"testing"

	"github.com/cairn-dev/cairn/fsm"
)

// New opens an FSM on a fresh store in a temporary directory of tb, closed when the test ends
// (after the cleanups registered later, such as a raft shutdown, have run).
func New(tb testing.TB) *fsm.FSM {
	tb.Helper()
	f, err := fsm.New(tb.TempDir(), fsm.Options{})
	if err != nil {
		tb.Fatalf("open fsm: %v", err)
	}
	tb.Cleanup(func() {
		if err := f.Close(); err != nil {
			tb.Errorf("close fsm: %v", err)
		}
	})
	return f
}
