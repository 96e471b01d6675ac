package testutil

import (
	"errors"
	"io"
	"log"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// WaitFor polls cond until it holds, failing the test with what once timeout has passed. The poll
// starts at 2 ms and backs off to 100 ms, so a quick condition costs little and a slow one little
// CPU.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitForNil(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("condition not met")

// WaitForNil polls cond until it returns nil, failing the test with what and cond's last error
// once timeout has passed.
func WaitForNil(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 2 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, err)
		}
		time.Sleep(wait) // the poll interval of a condition wait, not a synchronisation
		wait = min(wait*2, 100*time.Millisecond)
	}
}

// WaitForState is WaitFor for a condition that can say where it stands: on timeout the failure
// shows the last state cond reported (an HTTP status and body, each node's view), so that a flaky
// failure can be diagnosed from its message alone.
func WaitForState(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	WaitForNil(t, timeout, what, func() error {
		if ok, state := cond(); !ok {
			return errors.New(state)
		}
		return nil
	})
}

// RaftConfig is a raft.Config with the tight timings of in-process tests (Nomad's TestServer uses
// 50 ms; these are wider so that a loaded 2-core machine under -race does not flap leadership)
// and raft's own logs discarded.
func RaftConfig(id raft.ServerID) *raft.Config {
	cfg := raft.DefaultConfig()
	cfg.LocalID = id
	cfg.HeartbeatTimeout = 200 * time.Millisecond
	cfg.ElectionTimeout = 200 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.Logger = hclog.NewNullLogger()
	return cfg
}

// GossipConfig is a memberlist LAN config on transport tr with the tight timings of in-process
// tests (as Nomad's: probe every 100 ms, gossip every 20 ms) and memberlist's own logs discarded.
func GossipConfig(name string, tr memberlist.Transport) *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.Name = name
	c.Transport = tr
	c.Logger = log.New(io.Discard, "", 0)
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = 200 * time.Millisecond
	c.TCPTimeout = time.Second
	c.SuspicionMult = 2
	return c
}

// StartRaft starts a Raft with in-memory log, stable and snapshot stores on trans, bootstrapped
// with servers unless that is empty, and shuts it down (then closes trans when it can be closed)
// when the test ends.
func StartRaft(t testing.TB, cfg *raft.Config, fsm raft.FSM, trans raft.Transport, servers []raft.Server) *raft.Raft {
	t.Helper()
	logs := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	if len(servers) > 0 {
		if err := raft.BootstrapCluster(cfg, logs, logs, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := raft.NewRaft(cfg, fsm, logs, logs, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Errorf("raft shutdown: %v", err)
		}
		if c, ok := trans.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	})
	return r
}

// InmemRafts connects n in-memory Raft transports to each other and returns them with the
// configuration that makes them one cluster (ids and addresses "<prefix>0", "<prefix>1", …).
func InmemRafts(prefix string, n int) ([]*raft.InmemTransport, raft.Configuration) {
	var trans []*raft.InmemTransport
	var conf raft.Configuration
	for i := range n {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(prefix + string(rune('0'+i))))
		trans = append(trans, tr)
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(addr), Address: addr})
	}
	for i := range n {
		for j := range n {
			if i != j {
				trans[i].Connect(conf.Servers[j].Address, trans[j])
			}
		}
	}
	return trans, conf
}
