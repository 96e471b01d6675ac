package cluster

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// LibraryMetrics is a go-metrics sink that turns the metrics hashicorp/raft and memberlist emit
// into Prometheus series that follow the naming guide: a curated table (libraryMetricTable) maps
// each kept key onto a snake_case name under cairn_lib_, a unit suffix, `_total` on counters,
// labels in place of peer ids inside names, and histograms in seconds in place of go-metrics'
// millisecond summaries (whose quantiles are NaN whenever nothing was observed in the last 10 s).
// Keys the table does not list are dropped: either cairn's own metrics cover them (Raft state and
// indexes, members by state) or they are noise; a library upgrade that adds keys cannot break the
// exposition.
//
// go-metrics is process-global, so one LibraryMetrics serves a whole process (cairn agent); a
// process that runs several nodes (cairn dev, tests) does not bridge.
type LibraryMetrics struct {
	expiry time.Duration
	now    func() time.Time

	mu       sync.Mutex
	families map[string]*libraryFamily // by Prometheus name
	byKey    map[string]*libraryMetric // by go-metrics key, after the service prefix
}

// libraryKind is what a go-metrics key is on the Prometheus side.
type libraryKind int

const (
	libCounter libraryKind = iota
	libGauge
	libHistogram
)

// libraryMetric is one row of the table: a go-metrics key and what it becomes.
type libraryMetric struct {
	key  string // go-metrics key without the service prefix, parts joined by "."
	name string // Prometheus name
	kind libraryKind
	help string
	// scale multiplies every value (1e-3 turns go-metrics' milliseconds into seconds).
	scale float64
	// labels renames go-metrics label names to Prometheus ones; labels not listed are dropped.
	labels map[string]string
	// constLabels are added to every series (e.g. several keys feeding one family).
	constLabels map[string]string
	buckets     []float64
}

// libraryFamily is one Prometheus metric family fed by one or more table rows.
type libraryFamily struct {
	desc       *prometheus.Desc
	kind       libraryKind
	labelNames []string
	buckets    []float64
	series     map[string]*librarySeries // by joined label values
}

type librarySeries struct {
	labelValues []string
	value       float64 // counter or gauge
	count       uint64  // histogram
	sum         float64
	bucketCount []uint64 // per upper bound, not cumulative
	updated     time.Time
}

// Buckets for the bridged histograms.
var (
	raftLatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	slowOpBuckets      = []float64{.001, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300}
	batchBuckets       = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512}
	ratioBuckets       = []float64{.05, .1, .25, .5, .75, .9, .95, 1}
)

const ms = 1e-3

var peerLabel = map[string]string{"peer_id": "peer_id"}

// libraryMetricTable lists every library metric cairn exports, and so every cairn_lib_ series (see
// docs/operations.md, "Metrics reference").
var libraryMetricTable = []libraryMetric{
	// Raft, leader side.
	{key: "raft.commitTime", name: "cairn_lib_raft_commit_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Leader: time from appending a log entry to committing it (raft.commitTime)."},
	{key: "raft.leader.dispatchLog", name: "cairn_lib_raft_leader_dispatch_log_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Leader: time to write a batch of new entries to its own log (raft.leader.dispatchLog)."},
	{key: "raft.leader.lastContact", name: "cairn_lib_raft_leader_last_contact_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Leader: time since it last heard from a quorum of followers, sampled on each lease check (raft.leader.lastContact)."},
	{key: "raft.leader.oldestLogAge", name: "cairn_lib_raft_oldest_log_age_seconds", kind: libGauge, scale: ms,
		help: "Age of the oldest entry still in the Raft log; a log shorter in time than a follower's restart needs a snapshot to catch up (raft.leader.oldestLogAge)."},
	{key: "raft.replication.appendEntries.rpc", name: "cairn_lib_raft_replication_append_entries_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets, labels: peerLabel,
		help: "Leader: round trip of an AppendEntries RPC to one follower (raft.replication.appendEntries.rpc)."},
	{key: "raft.replication.appendEntries.logs", name: "cairn_lib_raft_replication_append_entries_logs_total", kind: libCounter, scale: 1, labels: peerLabel,
		help: "Leader: log entries sent to one follower (raft.replication.appendEntries.logs)."},
	{key: "raft.replication.heartbeat", name: "cairn_lib_raft_replication_heartbeat_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets, labels: peerLabel,
		help: "Leader: round trip of a heartbeat to one follower (raft.replication.heartbeat)."},
	{key: "raft.replication.installSnapshot", name: "cairn_lib_raft_replication_install_snapshot_seconds", kind: libHistogram, scale: ms, buckets: slowOpBuckets, labels: peerLabel,
		help: "Leader: time to send a snapshot to a follower that fell behind the log (raft.replication.installSnapshot)."},
	{key: "raft.apply", name: "cairn_lib_raft_apply_total", kind: libCounter, scale: 1,
		help: "Leader: commands accepted through Apply (raft.apply)."},
	{key: "raft.barrier", name: "cairn_lib_raft_barrier_total", kind: libCounter, scale: 1,
		help: "Leader: barriers issued (raft.barrier)."},
	{key: "raft.verify_leader", name: "cairn_lib_raft_verify_leader_total", kind: libCounter, scale: 1,
		help: "Leadership verifications, one per read-index round (raft.verify_leader)."},
	{key: "raft.transition.leader_lease_timeout", name: "cairn_lib_raft_leader_lease_timeouts_total", kind: libCounter, scale: 1,
		help: "Times the leader stepped down because it lost contact with a quorum (raft.transition.leader_lease_timeout)."},
	{key: "raft.peers", name: "cairn_lib_raft_peers", kind: libGauge, scale: 1,
		help: "Leader: servers in the Raft configuration, itself included (raft.peers)."},

	// Raft, every node.
	{key: "raft.state.candidate", name: "cairn_lib_raft_state_transitions_total", kind: libCounter, scale: 1, constLabels: map[string]string{"state": "candidate"},
		help: "Raft state changes of this node, by the state entered (raft.state.*)."},
	{key: "raft.state.follower", name: "cairn_lib_raft_state_transitions_total", kind: libCounter, scale: 1, constLabels: map[string]string{"state": "follower"}},
	{key: "raft.state.leader", name: "cairn_lib_raft_state_transitions_total", kind: libCounter, scale: 1, constLabels: map[string]string{"state": "leader"}},
	{key: "raft.transition.heartbeat_timeout", name: "cairn_lib_raft_heartbeat_timeouts_total", kind: libCounter, scale: 1,
		help: "Times this follower heard no leader within the heartbeat timeout and started an election (raft.transition.heartbeat_timeout)."},
	{key: "raft.candidate.electSelf", name: "cairn_lib_raft_candidate_elect_self_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Time to request votes as a candidate (raft.candidate.electSelf)."},
	{key: "raft.rpc.appendEntries", name: "cairn_lib_raft_rpc_append_entries_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Follower: time to process an AppendEntries RPC (raft.rpc.appendEntries)."},
	{key: "raft.rpc.appendEntries.storeLogs", name: "cairn_lib_raft_rpc_append_entries_store_logs_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Follower: time to write received entries to its log, fsync included (raft.rpc.appendEntries.storeLogs)."},
	{key: "raft.rpc.processHeartbeat", name: "cairn_lib_raft_rpc_process_heartbeat_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Follower: time to process a heartbeat (raft.rpc.processHeartbeat)."},
	{key: "raft.rpc.installSnapshot", name: "cairn_lib_raft_rpc_install_snapshot_seconds", kind: libHistogram, scale: ms, buckets: slowOpBuckets,
		help: "Follower: time to receive and install a snapshot from the leader (raft.rpc.installSnapshot)."},
	{key: "raft.fsm.applyBatch", name: "cairn_lib_raft_fsm_apply_batch_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Time the state machine took to apply one batch of committed entries (raft.fsm.applyBatch)."},
	{key: "raft.fsm.applyBatchNum", name: "cairn_lib_raft_fsm_apply_batch_entries", kind: libHistogram, scale: 1, buckets: batchBuckets,
		help: "Committed entries per state-machine batch (raft.fsm.applyBatchNum)."},
	{key: "raft.fsm.enqueue", name: "cairn_lib_raft_fsm_enqueue_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Time committed entries waited to be handed to the state machine (raft.fsm.enqueue)."},
	{key: "raft.fsm.snapshot", name: "cairn_lib_raft_fsm_snapshot_seconds", kind: libHistogram, scale: ms, buckets: slowOpBuckets,
		help: "Time FSM.Snapshot took to hand over a view (raft.fsm.snapshot)."},
	{key: "raft.fsm.restore", name: "cairn_lib_raft_fsm_restore_seconds", kind: libHistogram, scale: ms, buckets: slowOpBuckets,
		help: "Time to restore the state machine from a snapshot (raft.fsm.restore)."},
	{key: "raft.snapshot.create", name: "cairn_lib_raft_snapshot_create_seconds", kind: libHistogram, scale: ms, buckets: slowOpBuckets,
		help: "Time to open a snapshot in the snapshot store (raft.snapshot.create)."},
	{key: "raft.snapshot.persist", name: "cairn_lib_raft_snapshot_persist_seconds", kind: libHistogram, scale: ms, buckets: slowOpBuckets,
		help: "Time to write a snapshot to disk (raft.snapshot.persist)."},
	{key: "raft.compactLogs", name: "cairn_lib_raft_compact_logs_seconds", kind: libHistogram, scale: ms, buckets: slowOpBuckets,
		help: "Time to truncate the log after a snapshot (raft.compactLogs)."},
	{key: "raft.thread.main.saturation", name: "cairn_lib_raft_thread_saturation_ratio", kind: libHistogram, scale: 1, buckets: ratioBuckets, constLabels: map[string]string{"thread": "main"},
		help: "Share of time Raft's goroutines were busy, sampled each second, by thread (raft.thread.*.saturation)."},
	{key: "raft.thread.fsm.saturation", name: "cairn_lib_raft_thread_saturation_ratio", kind: libHistogram, scale: 1, buckets: ratioBuckets, constLabels: map[string]string{"thread": "fsm"}},

	// memberlist.
	{key: "memberlist.gossip", name: "cairn_lib_memberlist_gossip_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Time of one gossip round (memberlist.gossip)."},
	{key: "memberlist.probeNode", name: "cairn_lib_memberlist_probe_node_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Time to probe one member, indirect probes included (memberlist.probeNode)."},
	{key: "memberlist.pushPullNode", name: "cairn_lib_memberlist_push_pull_seconds", kind: libHistogram, scale: ms, buckets: raftLatencyBuckets,
		help: "Time of a full state exchange with one member (memberlist.pushPullNode)."},
	{key: "memberlist.health.score", name: "cairn_lib_memberlist_health_score", kind: libGauge, scale: 1,
		help: "Lifeguard awareness of this node: 0 is healthy; higher means its own probes are failing and it slows down (memberlist.health.score)."},
	{key: "memberlist.msg.alive", name: "cairn_lib_memberlist_messages_total", kind: libCounter, scale: 1, constLabels: map[string]string{"type": "alive"},
		help: "Membership messages received, by type (memberlist.msg.*)."},
	{key: "memberlist.msg.suspect", name: "cairn_lib_memberlist_messages_total", kind: libCounter, scale: 1, constLabels: map[string]string{"type": "suspect"}},
	{key: "memberlist.msg.dead", name: "cairn_lib_memberlist_messages_total", kind: libCounter, scale: 1, constLabels: map[string]string{"type": "dead"}},
	{key: "memberlist.degraded.probe", name: "cairn_lib_memberlist_degraded_probes_total", kind: libCounter, scale: 1,
		help: "Probes that succeeded only after missing acks (memberlist.degraded.probe)."},
	{key: "memberlist.degraded.timeout", name: "cairn_lib_memberlist_degraded_timeouts_total", kind: libCounter, scale: 1,
		help: "Suspicions that timed out with fewer confirmations than expected (memberlist.degraded.timeout)."},
	{key: "memberlist.tcp.accept", name: "cairn_lib_memberlist_tcp_accepts_total", kind: libCounter, scale: 1,
		help: "Gossip TCP connections accepted (memberlist.tcp.accept)."},
	{key: "memberlist.tcp.connect", name: "cairn_lib_memberlist_tcp_connects_total", kind: libCounter, scale: 1,
		help: "Gossip TCP connections opened (memberlist.tcp.connect)."},
	{key: "memberlist.tcp.sent", name: "cairn_lib_memberlist_sent_bytes_total", kind: libCounter, scale: 1, constLabels: map[string]string{"transport": "tcp"},
		help: "Gossip bytes sent, by transport (memberlist.tcp.sent, memberlist.udp.sent)."},
	{key: "memberlist.udp.sent", name: "cairn_lib_memberlist_sent_bytes_total", kind: libCounter, scale: 1, constLabels: map[string]string{"transport": "udp"}},
	{key: "memberlist.udp.received", name: "cairn_lib_memberlist_received_udp_bytes_total", kind: libCounter, scale: 1,
		help: "Gossip UDP bytes received (memberlist.udp.received)."},
}

// LibraryMetricNames lists every Prometheus family the bridge can export.
func LibraryMetricNames() []string {
	var names []string
	for _, m := range libraryMetricTable {
		if !slices.Contains(names, m.name) {
			names = append(names, m.name)
		}
	}
	return names
}

// NewLibraryMetrics builds the sink. A series nobody updated for expiry (e.g. the replication of a
// removed peer, or a leader metric on a node that no longer leads) disappears from the output.
func NewLibraryMetrics(expiry time.Duration) *LibraryMetrics {
	lm := &LibraryMetrics{expiry: expiry, now: time.Now,
		families: map[string]*libraryFamily{}, byKey: map[string]*libraryMetric{}}
	for i := range libraryMetricTable {
		m := &libraryMetricTable[i]
		lm.byKey[m.key] = m
		f := lm.families[m.name]
		if f == nil {
			var names []string
			for _, l := range m.labels {
				names = append(names, l)
			}
			for l := range m.constLabels {
				names = append(names, l)
			}
			slices.Sort(names)
			f = &libraryFamily{kind: m.kind, labelNames: names, buckets: m.buckets, series: map[string]*librarySeries{},
				desc: prometheus.NewDesc(m.name, m.help, names, nil)}
			lm.families[m.name] = f
		}
	}
	return lm
}

// BridgeLibraryMetrics installs a LibraryMetrics as the process's global go-metrics sink, serving
// its series on reg.
func BridgeLibraryMetrics(reg prometheus.Registerer) error {
	sink := NewLibraryMetrics(5 * time.Minute)
	if err := reg.Register(sink); err != nil {
		return fmt.Errorf("metrics bridge: %w", err)
	}
	conf := gometrics.DefaultConfig(libraryServiceName)
	conf.EnableHostname = false
	conf.EnableHostnameLabel = false
	conf.EnableServiceLabel = false
	conf.EnableRuntimeMetrics = false // the Go collector already reports these
	if _, err := gometrics.NewGlobal(conf, sink); err != nil {
		return fmt.Errorf("metrics bridge: %w", err)
	}
	return nil
}

// libraryServiceName is the key prefix go-metrics puts before every key; the sink strips it.
const libraryServiceName = "cairn"

// Describe sends every family the table defines.
func (lm *LibraryMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range lm.families {
		ch <- f.desc
	}
}

// Collect sends every live series, dropping those that expired.
func (lm *LibraryMetrics) Collect(ch chan<- prometheus.Metric) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	now := lm.now()
	for _, f := range lm.families {
		for k, s := range f.series {
			if lm.expiry > 0 && now.Sub(s.updated) > lm.expiry {
				delete(f.series, k)
				continue
			}
			switch f.kind {
			case libCounter:
				ch <- prometheus.MustNewConstMetric(f.desc, prometheus.CounterValue, s.value, s.labelValues...)
			case libGauge:
				ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, s.value, s.labelValues...)
			case libHistogram:
				buckets := make(map[float64]uint64, len(f.buckets))
				var cum uint64
				for i, b := range f.buckets {
					cum += s.bucketCount[i]
					buckets[b] = cum
				}
				ch <- prometheus.MustNewConstHistogram(f.desc, s.count, s.sum, buckets, s.labelValues...)
			}
		}
	}
}

// record finds the table row of key and updates its series; kinds that do not match the row's
// (a library that changed a counter into a gauge) are dropped rather than misreported.
func (lm *LibraryMetrics) record(key []string, val float32, labels []gometrics.Label, kind libraryKind) {
	if len(key) > 0 && key[0] == libraryServiceName {
		key = key[1:]
	}
	m := lm.byKey[strings.Join(key, ".")]
	if m == nil || m.kind != kind {
		return
	}
	lm.mu.Lock()
	defer lm.mu.Unlock()
	f := lm.families[m.name]
	values := make([]string, len(f.labelNames))
	for i, name := range f.labelNames {
		if v, ok := m.constLabels[name]; ok {
			values[i] = v
			continue
		}
		for _, l := range labels {
			if m.labels[l.Name] == name {
				values[i] = l.Value
			}
		}
	}
	id := strings.Join(values, "\xff")
	s := f.series[id]
	if s == nil {
		s = &librarySeries{labelValues: values}
		if f.kind == libHistogram {
			s.bucketCount = make([]uint64, len(f.buckets))
		}
		f.series[id] = s
	}
	v := float64(val) * m.scale
	s.updated = lm.now()
	switch f.kind {
	case libCounter:
		s.value += v
	case libGauge:
		s.value = v
	case libHistogram:
		s.count++
		s.sum += v
		for i, b := range f.buckets {
			if v <= b {
				s.bucketCount[i]++
				break
			}
		}
	}
}

// SetGauge implements gometrics.MetricSink.
func (lm *LibraryMetrics) SetGauge(key []string, val float32) { lm.record(key, val, nil, libGauge) }

// SetGaugeWithLabels implements gometrics.MetricSink.
func (lm *LibraryMetrics) SetGaugeWithLabels(key []string, val float32, labels []gometrics.Label) {
	lm.record(key, val, labels, libGauge)
}

// EmitKey implements gometrics.MetricSink; neither library emits keys.
func (lm *LibraryMetrics) EmitKey([]string, float32) {}

// IncrCounter implements gometrics.MetricSink.
func (lm *LibraryMetrics) IncrCounter(key []string, val float32) {
	lm.record(key, val, nil, libCounter)
}

// IncrCounterWithLabels implements gometrics.MetricSink.
func (lm *LibraryMetrics) IncrCounterWithLabels(key []string, val float32, labels []gometrics.Label) {
	lm.record(key, val, labels, libCounter)
}

// AddSample implements gometrics.MetricSink.
func (lm *LibraryMetrics) AddSample(key []string, val float32) {
	lm.record(key, val, nil, libHistogram)
}

// AddSampleWithLabels implements gometrics.MetricSink.
func (lm *LibraryMetrics) AddSampleWithLabels(key []string, val float32, labels []gometrics.Label) {
	lm.record(key, val, labels, libHistogram)
}
