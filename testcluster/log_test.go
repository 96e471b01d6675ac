package testcluster

import (
	"strings"
	"sync"
	"testing"
)

// logRecorder is a testing.TB whose Log calls are kept, so that the test can see what a failed
// test would print.
type logRecorder struct {
	testing.TB
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Log(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range args {
		r.lines = append(r.lines, a.(string))
	}
}

// TestNodeLogsGoToTLog: a node's records, with their node id, become t.Log lines (one a record),
// and nothing reaches t.Log once the cluster's cleanup closed the log.
func TestNodeLogsGoToTLog(t *testing.T) {
	t.Setenv("CAIRN_TEST_LOG", "")
	rec := &logRecorder{TB: t}
	logger, closeLog := testLogger(rec)
	logger.With("node", "node1").Info("shard stored", "shard", "FILx.0.1")
	logger.Debug("below the default level")
	closeLog()
	logger.Info("after the test")

	if len(rec.lines) != 1 {
		t.Fatalf("t.Log got %d lines, want 1: %q", len(rec.lines), rec.lines)
	}
	for _, want := range []string{"level=INFO", `msg="shard stored"`, "node=node1", "shard=FILx.0.1"} {
		if !strings.Contains(rec.lines[0], want) {
			t.Errorf("line %q lacks %s", rec.lines[0], want)
		}
	}
	if strings.HasSuffix(rec.lines[0], "\n") {
		t.Error("the line keeps its newline")
	}
}
