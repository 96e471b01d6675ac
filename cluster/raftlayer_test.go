package cluster

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/internal/testutil"
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
		layers[i] = NewRaftLayer(m.Listener(ConnRaft), nil, OSNetwork{}, Security{Secret: muxTestSecret})
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
		conf := testutil.RaftConfig(servers[i].ID)
		conf.Logger = hlog
		fsms[i] = &raftTestFSM{}
		rafts[i] = testutil.StartRaft(t, conf, fsms[i], trans, servers)
	}

	leader := func() *raft.Raft {
		for _, r := range rafts {
			if r.State() == raft.Leader {
				return r
			}
		}
		return nil
	}
	var want []string
	for i := range 20 {
		cmd := "cmd-" + strconv.Itoa(i)
		want = append(want, cmd)
		// Retry through whoever leads: tight timings under -race on one CPU can make leadership
		// flap, and an indeterminate failure may apply a command twice (checked below).
		testutil.WaitFor(t, 20*time.Second, "commit of "+cmd, func() bool {
			l := leader()
			return l != nil && l.Apply([]byte(cmd), time.Second).Error() == nil
		})
	}
	testutil.WaitFor(t, 20*time.Second, "every node to apply the same log", func() bool {
		first := fsms[0].applied()
		for _, f := range fsms[1:] {
			if !slices.Equal(f.applied(), first) {
				return false
			}
		}
		return len(slices.Compact(slices.Clone(first))) == len(want)
	})
	if got := slices.Compact(fsms[0].applied()); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
}
