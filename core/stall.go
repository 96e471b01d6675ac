package core

import (
	"errors"
	"io"
	"sync/atomic"
	"time"
)

// errStalled is what a guarded shard stream returns once one read waited too long.
var errStalled = errors.New("shard stream stalled")

// stallGuard aborts a shard read that waits longer than timeout for the peer. The timer runs only
// while a Read is blocked on the peer, so a slow consumer (a slow downloading client) never trips
// it; a dead or black-holed peer would otherwise hold the stream until TCP gives up, minutes later.
type stallGuard struct {
	rc      io.ReadCloser
	timeout time.Duration
	cancel  func()
	timer   *time.Timer
	stalled atomic.Bool
}

func newStallGuard(rc io.ReadCloser, timeout time.Duration, cancel func()) *stallGuard {
	g := &stallGuard{rc: rc, timeout: timeout, cancel: cancel}
	g.timer = time.AfterFunc(time.Hour, func() {
		g.stalled.Store(true)
		cancel()
	})
	g.timer.Stop()
	return g
}

func (g *stallGuard) Read(p []byte) (int, error) {
	g.timer.Reset(g.timeout)
	n, err := g.rc.Read(p)
	g.timer.Stop()
	if err != nil && err != io.EOF && g.stalled.Load() {
		return n, errStalled
	}
	return n, err
}

// Close stops the timer, releases the call's context and closes the stream.
func (g *stallGuard) Close() error {
	g.timer.Stop()
	g.cancel()
	return g.rc.Close()
}

// writeGuarded aborts a shard put whose peer stops taking bytes: it is armed only while a write
// into the put's stream is blocked (the peer is not reading), never while the uploading client is
// slow to send.
func writeGuarded(w io.Writer, p []byte, timeout time.Duration, cancel func()) (int, error) {
	t := time.AfterFunc(timeout, cancel)
	n, err := w.Write(p)
	t.Stop()
	return n, err
}
