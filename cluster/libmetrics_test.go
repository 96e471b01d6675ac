package cluster

import (
	"strings"
	"testing"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLibraryMetricsTranslate feeds the sink what raft and memberlist emit (through a real
// go-metrics Metrics, as the global one does) and checks the exposition: snake_case names, _total
// counters, peer ids as labels, the legacy per-peer names dropped, seconds instead of
// milliseconds, and no lint finding (the checks `promtool check metrics` runs).
func TestLibraryMetricsTranslate(t *testing.T) {
	sink := NewLibraryMetrics(time.Minute)
	conf := gometrics.DefaultConfig(libraryServiceName)
	conf.EnableHostname, conf.EnableRuntimeMetrics = false, false
	m, err := gometrics.New(conf, sink)
	if err != nil {
		t.Fatal(err)
	}
	peer := []gometrics.Label{{Name: "peer_id", Value: "n2"}}
	m.AddSampleWithLabels([]string{"raft", "replication", "appendEntries", "rpc"}, 3, peer) // 3 ms
	m.AddSample([]string{"raft", "replication", "appendEntries", "rpc", "n2"}, 3)           // legacy: dropped
	m.IncrCounterWithLabels([]string{"raft", "replication", "appendEntries", "logs"}, 5, peer)
	m.IncrCounter([]string{"raft", "replication", "appendEntries", "logs", "n2"}, 5) // legacy: dropped
	m.IncrCounter([]string{"raft", "state", "leader"}, 1)
	m.IncrCounter([]string{"raft", "state", "follower"}, 2)
	m.AddSample([]string{"raft", "commitTime"}, 2000) // 2 s
	m.SetGauge([]string{"raft", "peers"}, 3)
	m.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 100, nil)
	m.SetGaugeWithLabels([]string{"memberlist", "node", "instances"}, 3, []gometrics.Label{{Name: "node_state", Value: "alive"}}) // cairn_members covers it
	m.AddSample([]string{"raft", "somethingNew"}, 1)                                                                              // not in the table

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sink)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP cairn_lib_raft_replication_append_entries_logs_total Leader: log entries sent to one follower (raft.replication.appendEntries.logs).
# TYPE cairn_lib_raft_replication_append_entries_logs_total counter
cairn_lib_raft_replication_append_entries_logs_total{peer_id="n2"} 5
# HELP cairn_lib_raft_state_transitions_total Raft state changes of this node, by the state entered (raft.state.*).
# TYPE cairn_lib_raft_state_transitions_total counter
cairn_lib_raft_state_transitions_total{state="follower"} 2
cairn_lib_raft_state_transitions_total{state="leader"} 1
# HELP cairn_lib_raft_peers Leader: servers in the Raft configuration, itself included (raft.peers).
# TYPE cairn_lib_raft_peers gauge
cairn_lib_raft_peers 3
# HELP cairn_lib_memberlist_sent_bytes_total Gossip bytes sent, by transport (memberlist.tcp.sent, memberlist.udp.sent).
# TYPE cairn_lib_memberlist_sent_bytes_total counter
cairn_lib_memberlist_sent_bytes_total{transport="udp"} 100
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"cairn_lib_raft_replication_append_entries_logs_total", "cairn_lib_raft_state_transitions_total",
		"cairn_lib_raft_peers", "cairn_lib_memberlist_sent_bytes_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		got[f.GetName()] = true
		if !strings.HasPrefix(f.GetName(), "cairn_lib_") {
			t.Errorf("family %s outside cairn_lib_", f.GetName())
		}
		if strings.Contains(f.GetName(), "n2") {
			t.Errorf("family %s carries a peer id in its name", f.GetName())
		}
		if f.GetName() == "cairn_lib_raft_commit_seconds" {
			h := f.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 1 || h.GetSampleSum() != 2 {
				t.Errorf("commit histogram: count %d sum %v, want 1 and 2 s", h.GetSampleCount(), h.GetSampleSum())
			}
		}
		if f.GetName() == "cairn_lib_raft_replication_append_entries_seconds" {
			ms := f.GetMetric()
			if len(ms) != 1 || ms[0].GetLabel()[0].GetValue() != "n2" || ms[0].GetHistogram().GetSampleSum() != float64(float32(3))*1e-3 {
				t.Errorf("append entries histogram: %v", ms)
			}
		}
	}
	for _, name := range []string{"cairn_lib_raft_commit_seconds", "cairn_lib_raft_replication_append_entries_seconds"} {
		if !got[name] {
			t.Errorf("%s missing", name)
		}
	}
	if len(families) != 6 {
		t.Errorf("got %d families, want the 6 fed ones: %v", len(families), got)
	}
}

// TestLibraryMetricsExpire: a series nobody updates (a removed peer's replication) goes away.
func TestLibraryMetricsExpire(t *testing.T) {
	sink := NewLibraryMetrics(time.Minute)
	now := time.Now()
	sink.now = func() time.Time { return now }
	sink.IncrCounterWithLabels([]string{libraryServiceName, "raft", "replication", "appendEntries", "logs"}, 1,
		[]gometrics.Label{{Name: "peer_id", Value: "gone"}})
	if n := testutil.CollectAndCount(sink); n != 1 {
		t.Fatalf("%d series before expiry, want 1", n)
	}
	now = now.Add(2 * time.Minute)
	if n := testutil.CollectAndCount(sink); n != 0 {
		t.Fatalf("%d series after expiry, want 0", n)
	}
}
