package node

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Series computed at scrape time from the node's state (see docs/operations.md, "Metrics
// reference"). The static ones (build info, the free-space reserve) are registered in
// registerStateMetrics too, so that every node's series live in one place.
var (
	readyDesc = prometheus.NewDesc("cairn_ready",
		"1 when this node can serve requests (GET /readyz answers 200), else 0; reason says why not (\"ready\" when it can).",
		[]string{"reason"}, nil)
	failureToleranceDesc = prometheus.NewDesc("cairn_autopilot_failure_tolerance",
		"Leader only: voters that may still fail without losing quorum, as autopilot last computed it.", nil, nil)
	autopilotHealthyDesc = prometheus.NewDesc("cairn_autopilot_healthy",
		"Leader only: 1 when every Raft server is alive, in contact and caught up, else 0.", nil, nil)
	followerTrailingDesc = prometheus.NewDesc("cairn_raft_follower_trailing_logs",
		"Leader only: log entries each other server trails the leader by, as autopilot last fetched them.",
		[]string{"peer_id"}, nil)
	followerContactDesc = prometheus.NewDesc("cairn_raft_follower_last_contact_seconds",
		"Leader only: seconds since each other server last heard from the leader, as it reported to autopilot (-1: unknown).",
		[]string{"peer_id"}, nil)
	followerHealthyDesc = prometheus.NewDesc("cairn_raft_follower_healthy",
		"Leader only: 1 when autopilot judges the server healthy (alive, in contact, caught up), else 0.",
		[]string{"peer_id"}, nil)
)

// scrapeFamily is a metric family with one label whose series are computed at scrape time: one
// series per key of what values returns.
type scrapeFamily struct {
	desc   *prometheus.Desc
	kind   prometheus.ValueType
	values func() map[string]float64
}

func newScrapeFamily(name, help, label string, kind prometheus.ValueType, values func() map[string]float64) scrapeFamily {
	return scrapeFamily{desc: prometheus.NewDesc(name, help, []string{label}, nil), kind: kind, values: values}
}

func (f scrapeFamily) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

func (f scrapeFamily) Collect(ch chan<- prometheus.Metric) {
	for label, v := range f.values() {
		ch <- prometheus.MustNewConstMetric(f.desc, f.kind, v, label)
	}
}

// readyScrapeTimeout bounds the readiness check of one scrape.
const readyScrapeTimeout = 500 * time.Millisecond

// stateCollector reports readiness and, on the leader, autopilot's view of the other servers.
type stateCollector struct{ n *Node }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{readyDesc, failureToleranceDesc, autopilotHealthyDesc,
		followerTrailingDesc, followerContactDesc, followerHealthyDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	ready, reason := 1.0, "ready"
	// Readiness asks the leader for its commit index; a scrape waits for it only briefly (an
	// unreachable leader then shows as leader_unreachable) so that /metrics stays fast.
	ctx, cancel := context.WithTimeout(c.n.ctx, readyScrapeTimeout)
	defer cancel()
	if err := c.n.ReadyContext(ctx); err != nil {
		ready, reason = 0, readyReason(err)
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready, reason)
	if !c.n.IsLeader() || c.n.autopilot == nil {
		return
	}
	h, ok := c.n.autopilot.Health()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(failureToleranceDesc, prometheus.GaugeValue, float64(h.FailureTolerance))
	ch <- prometheus.MustNewConstMetric(autopilotHealthyDesc, prometheus.GaugeValue, boolGauge(h.Healthy))
	for _, f := range h.Followers {
		contact := -1.0
		if f.LastContact >= 0 {
			contact = f.LastContact.Seconds()
		}
		ch <- prometheus.MustNewConstMetric(followerTrailingDesc, prometheus.GaugeValue, float64(f.TrailingLogs), f.ID)
		ch <- prometheus.MustNewConstMetric(followerContactDesc, prometheus.GaugeValue, contact, f.ID)
		ch <- prometheus.MustNewConstMetric(followerHealthyDesc, prometheus.GaugeValue, boolGauge(f.Healthy), f.ID)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// readyReason is the reason label of cairn_ready: the NotReadyError's stable reason (ReadyReasons),
// or "unknown" for any other error, so that the label set stays small.
func readyReason(err error) string {
	var nr *NotReadyError
	if errors.As(err, &nr) {
		return nr.Reason
	}
	return "unknown"
}

// scrubProgress is the scrubber's position, for the cairn_scrub_pass_* series.
type scrubProgress struct {
	passStarted   atomic.Int64 // unix nanoseconds; 0 before the first pass
	lastCompleted atomic.Int64 // unix nanoseconds; 0 until a pass completes in this process
	passBytes     atomic.Int64 // bytes verified by the current pass since this process took it up
	running       atomic.Bool
}

func (p *scrubProgress) start(at time.Time) {
	p.passStarted.Store(at.UnixNano())
	p.passBytes.Store(0)
	p.running.Store(true)
}

func (p *scrubProgress) done(at time.Time) {
	p.lastCompleted.Store(at.UnixNano())
	p.running.Store(false)
}

func unixSeconds(nanos int64) float64 { return float64(nanos) / 1e9 }

// registerStateMetrics registers the series above and the static ones: build info and the
// free-space reserve.
func (n *Node) registerStateMetrics() {
	revision := n.cfg.Revision
	if revision == "" {
		revision = "unknown"
	}
	version := n.cfg.Version
	if version == "" {
		version = "dev"
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_build_info",
		Help:        "Always 1; the labels say which cairn build this node runs.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()}})
	buildInfo.Set(1)
	p := &n.scrub
	n.reg.MustRegister(stateCollector{n}, buildInfo,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_disk_min_free_bytes",
			Help: "The free-space reserve (--min-free): below it this node takes no new shards. Compare with cairn_disk_free_bytes."},
			func() float64 { return float64(n.cfg.MinFree) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_scrub_pass_running",
			Help: "1 while a scrub pass is under way on this node, 0 between passes."},
			func() float64 { return boolGauge(p.running.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_scrub_pass_started_timestamp_seconds",
			Help: "Unix time the current (or last) scrub pass began; 0 before the first one."},
			func() float64 { return unixSeconds(p.passStarted.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_scrub_last_completed_timestamp_seconds",
			Help: "Unix time the last scrub pass finished in this process; 0 until one does."},
			func() float64 { return unixSeconds(p.lastCompleted.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_scrub_pass_progress_ratio",
			Help: "Share of this node's shard bytes the current scrub pass has verified (1 between passes); a pass resumed after a restart counts from where this process took it up."},
			func() float64 {
				if !p.running.Load() {
					return 1
				}
				used := n.shards.UsedBytes()
				if used <= 0 {
					return 1
				}
				return min(float64(p.passBytes.Load())/float64(used), 1)
			}),
	)
}
