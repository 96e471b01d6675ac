package testcluster

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// testLogger sends every node's logs to t.Log, so that a failed test shows what its nodes did
// (go test prints t.Log output only for failed tests, or with -v). CAIRN_TEST_LOG=debug adds
// debug records; CAIRN_TEST_LOG=off discards everything. Records that arrive after the test's
// cleanup stopped the nodes are dropped: t.Log must not be called once a test has finished.
func testLogger(t testing.TB) (*slog.Logger, func()) {
	level := slog.LevelInfo
	switch os.Getenv("CAIRN_TEST_LOG") {
	case "off":
		return slog.New(slog.DiscardHandler), func() {}
	case "debug":
		level = slog.LevelDebug
	}
	w := &testLogWriter{t: t}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), w.close
}

// testLogWriter turns the handler's lines into t.Log calls.
type testLogWriter struct {
	t      testing.TB
	mu     sync.Mutex
	closed bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testLogWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}
