package core

import (
	"errors"
	"io"
	"testing"
	"time"
)

// TestStallGuardAbortsABlockedRead: a read that waits on a silent peer is aborted after the
// timeout, through the call's cancel function, and reports errStalled.
func TestStallGuardAbortsABlockedRead(t *testing.T) {
	pr, _ := io.Pipe()
	canceled := make(chan struct{})
	g := newStallGuard(pr, 20*time.Millisecond, func() {
		select {
		case <-canceled:
		default:
			close(canceled)
			pr.CloseWithError(errors.New("call canceled")) // what aborting the RPC does to its body
		}
	})
	defer g.Close()
	_, err := g.Read(make([]byte, 10))
	if !errors.Is(err, errStalled) {
		t.Fatalf("Read = %v, want errStalled", err)
	}
}

// TestStallGuardIgnoresASlowConsumer: time spent between reads (a slow downloading client) does
// not count; only a read blocked on the peer does.
func TestStallGuardIgnoresASlowConsumer(t *testing.T) {
	pr, pw := io.Pipe()
	canceled := make(chan struct{}, 1)
	g := newStallGuard(pr, 20*time.Millisecond, func() { canceled <- struct{}{} })
	go func() {
		pw.Write([]byte("abc"))
		pw.Write([]byte("def"))
		pw.Close()
	}()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(g, buf); err != nil {
		t.Fatal(err)
	}
	// The consumer dawdles for several timeouts without reading: nothing may fire.
	select {
	case <-canceled:
		t.Fatal("the guard fired while nobody was reading")
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := io.ReadFull(g, buf); err != nil || string(buf) != "def" {
		t.Fatalf("second read %q %v", buf, err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteGuardedAbortsABlockedWrite: a write the peer never takes triggers cancel.
func TestWriteGuardedAbortsABlockedWrite(t *testing.T) {
	pr, pw := io.Pipe()
	_, err := writeGuarded(pw, []byte("frame"), 20*time.Millisecond, func() { pr.CloseWithError(errors.New("put canceled")) })
	if err == nil {
		t.Fatal("a write nobody read succeeded")
	}
}
