// Package testutil holds the helpers every package's tests share: waiting on a condition with a
// deadline (never a sleep to synchronise), the tight Raft and memberlist timings of in-process
// clusters, and a buffer that goroutines may share (for child processes' output). It imports
// nothing of cairn, so any package's tests may use it; non-test code must not.
package testutil
