package cluster

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingHandler counts the records logged at warn or above.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h countingHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countingHandler) WithGroup(string) slog.Handler                { return h }

// TestGarbageGossipIsCountedNotLogged sends 5,000 garbage datagrams to the gossip port of an
// encrypted memberlist, as a scanner or a node with the wrong key would. Every one is counted;
// the log gets at most one line a second, not one per datagram.
func TestGarbageGossipIsCountedNotLogged(t *testing.T) {
	var logged atomic.Int64
	m, err := NewMembership(MembershipConfig{
		NodeID: "victim", BindAddr: "127.0.0.1:0", Network: OSNetwork{}, SecretKey: make([]byte, 32),
		Meta: func() NodeMeta { return NodeMeta{ID: "victim"} }, Logger: slog.New(countingHandler{&logged}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	conn, err := net.Dial("udp", m.LocalGossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const datagrams = 5000
	start := time.Now()
	for sent := 0; sent < datagrams; {
		// Paced in batches that the socket buffer holds, so that loopback drops nothing.
		for range 50 {
			buf := make([]byte, 1+sent%300)
			_, _ = rand.Read(buf)
			if sent%3 == 0 {
				buf[0] = 244 // memberlist's label header type, with a truncated label
			}
			if _, err := conn.Write(buf); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		want := uint64(sent)
		transportWaitFor(t, 10*time.Second, "the garbage counted", func() bool { return m.BadPackets() >= want })
	}
	elapsed := time.Since(start)
	if got := m.BadPackets(); got != datagrams {
		t.Fatalf("counted %d bad packets, sent %d", got, datagrams)
	}
	// One line in the first instant, then at most one per second.
	if max := int64(elapsed/badPacketLogEvery) + 1; logged.Load() > max {
		t.Fatalf("%d lines logged for %d garbage datagrams in %s, want at most %d", logged.Load(), datagrams, elapsed, max)
	}
	if logged.Load() == 0 {
		t.Fatal("garbage was never logged at all")
	}
}
