package cluster

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// raftTestFSM records applied commands.
type raftTestFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *raftTestFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return len(f.cmds)
}

func (f *raftTestFSM) applied() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func (f *raftTestFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("not supported") }
func (f *raftTestFSM) Restore(io.ReadCloser) error         { return fmt.Errorf("not supported") }

func TestRaftLayerElectsAndReplicates(t *testing.T) {
	const n = 3
	hlog := hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Off})
	layers := make([]*RaftLayer, n)
	var servers []raft.Server
	for i := range layers {
		m := muxTestServe(t, muxTestSecret, 0)
		layers[i] = NewRaftLayer(m.Listener(ConnRaft), nil, OSNetwork{}, muxTestSecret)
		servers = append(servers, raft.Server{
			ID:      raft.ServerID("n" + strconv.Itoa(i)),
			Address: raft.ServerAddress(layers[i].Addr().String()),
		})
	}
	rafts := make([]*raft.Raft, n)
	fsms := make([]*raftTestFSM, n)
	for i, layer := range layers {
		trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: layer, MaxPool: 2, Timeout: 2 * time.Second, Logger: hlog,
		})
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.Logger = hlog
		conf.HeartbeatTimeout = 100 * time.Millisecond
		conf.ElectionTimeout = 100 * time.Millisecond
		conf.LeaderLeaseTimeout = 100 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		logs := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, logs, logs, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatal(err)
		}
		fsms[i] = &raftTestFSM{}
		r, err := raft.NewRaft(conf, fsms[i], logs, logs, snaps, trans)
		if err != nil {
			t.Fatal(err)
		}
		rafts[i] = r
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Errorf("raft shutdown: %v", err)
			}
			trans.Close()
		})
	}

	var leader *raft.Raft
	transportWaitFor(t, 20*time.Second, "a leader", func() bool {
		for _, r := range rafts {
			if r.State() == raft.Leader {
				leader = r
				return true
			}
		}
		return false
	})
	var want []string
	for i := range 20 {
		cmd := "cmd-" + strconv.Itoa(i)
		want = append(want, cmd)
		if err := leader.Apply([]byte(cmd), 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %s: %v", cmd, err)
		}
	}
	for i, f := range fsms {
		transportWaitFor(t, 20*time.Second, fmt.Sprintf("node %d to apply all", i), func() bool {
			return len(f.applied()) == len(want)
		})
		if got := f.applied(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("node %d applied %v, want %v", i, got, want)
		}
	}
}
