package core

import (
	"io"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the use cases' Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	uploadsTotal      prometheus.Counter
	uploadedBytes     prometheus.Counter
	downloadedBytes   prometheus.Counter
	deletesTotal      prometheus.Counter
	degradedSegments  prometheus.Counter
	shardFaults       *prometheus.CounterVec
	tokensCreated     *prometheus.CounterVec
	repairedBytes     prometheus.Counter
	repairedShards    prometheus.Counter
	segments          *prometheus.GaugeVec
	repairQueue       prometheus.Gauge
	contentMismatches prometheus.Counter

	// Totals also kept as plain numbers for the status page.
	repairedBytesTotal atomic.Int64
	corruptReadsTotal  atomic.Int64
}

// NewMetrics registers the use-case metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		uploadsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_uploads_total", Help: "Files committed by uploads through this node.",
		}),
		uploadedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_uploaded_bytes_total", Help: "Content bytes of files committed through this node.",
		}),
		downloadedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_downloaded_bytes_total", Help: "File content bytes this node read out to clients (downloads, ranges included).",
		}),
		deletesTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_file_deletes_total", Help: "Files deleted through this node.",
		}),
		degradedSegments: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_degraded_segment_writes_total", Help: "Segments written with fewer than k+m shards.",
		}),
		shardFaults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_read_shard_faults_total",
			Help: "Shards a read had to give up on and reconstruct around, by kind (corrupt or unavailable).",
		}, []string{"kind"}),
	}
	m.tokensCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cairn_file_tokens_created_total", Help: "File tokens issued through this node, by kind (persisted or ephemeral).",
	}, []string{"kind"})
	m.repairedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cairn_repaired_bytes_total", Help: "Shard bytes rebuilt and written by repair, inline heal and scrub on this node.",
	})
	m.repairedShards = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cairn_repaired_shards_total", Help: "Shards rebuilt by repair, inline heal and scrub on this node.",
	})
	m.segments = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cairn_segments",
		Help: "Segments by health at the leader's last repair pass: healthy (all shards reachable), degraded, unrecoverable (fewer than k reachable). Only the leader reports.",
	}, []string{"health"})
	m.repairQueue = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cairn_repair_queue_shards", Help: "Shard slots waiting for repair at the leader's last pass.",
	})
	m.contentMismatches = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cairn_read_content_mismatches_total",
		Help: "Full-file reads whose bytes did not match the file's SHA-256 although every shard checksum passed; each response was aborted and the file's shards checked.",
	})
	// Every label value exists from the start, at zero, so that rate() and alerts see the first
	// increment rather than a new series.
	for _, kind := range []string{"corrupt", "unavailable"} {
		m.shardFaults.WithLabelValues(kind)
	}
	for _, kind := range []string{"persisted", "ephemeral"} {
		m.tokensCreated.WithLabelValues(kind)
	}
	m.segmentHealth(SegmentHealth{}) // what a follower reports, until the first repair pass
	reg.MustRegister(m.contentMismatches, m.repairedBytes, m.repairedShards, m.segments, m.repairQueue, m.tokensCreated, m.uploadsTotal, m.uploadedBytes, m.downloadedBytes, m.deletesTotal, m.degradedSegments, m.shardFaults)
	return m
}

func (m *Metrics) uploaded(size int64) {
	if m != nil {
		m.uploadsTotal.Inc()
		m.uploadedBytes.Add(float64(size))
	}
}

// countDownload wraps the writer a download's content goes to, so that every byte handed to it
// counts in cairn_downloaded_bytes_total.
func (m *Metrics) countDownload(w io.Writer) io.Writer {
	if m == nil {
		return w
	}
	return downloadCounter{w: w, c: m.downloadedBytes}
}

type downloadCounter struct {
	w io.Writer
	c prometheus.Counter
}

func (d downloadCounter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	d.c.Add(float64(n))
	return n, err
}

func (m *Metrics) deleted() {
	if m != nil {
		m.deletesTotal.Inc()
	}
}

func (m *Metrics) degradedSegment() {
	if m != nil {
		m.degradedSegments.Inc()
	}
}

func (m *Metrics) shardFault(corrupt bool) {
	if m == nil {
		return
	}
	kind := "unavailable"
	if corrupt {
		kind = "corrupt"
		m.corruptReadsTotal.Add(1)
	}
	m.shardFaults.WithLabelValues(kind).Inc()
}

func (m *Metrics) contentMismatch() {
	if m != nil {
		m.contentMismatches.Inc()
		m.corruptReadsTotal.Add(1)
	}
}

func (m *Metrics) tokenCreated(kind TokenKind) {
	if m != nil {
		m.tokensCreated.WithLabelValues(kind.String()).Inc()
	}
}

func (m *Metrics) repaired(bytes int64) {
	if m != nil {
		m.repairedShards.Inc()
		m.repairedBytes.Add(float64(bytes))
		m.repairedBytesTotal.Add(bytes)
	}
}

func (m *Metrics) segmentHealth(h SegmentHealth) {
	if m == nil {
		return
	}
	m.segments.WithLabelValues("healthy").Set(float64(h.Healthy))
	m.segments.WithLabelValues("degraded").Set(float64(h.Degraded))
	m.segments.WithLabelValues("unrecoverable").Set(float64(h.Unrecoverable))
	m.repairQueue.Set(float64(h.PendingShards))
}

// StorageCounters returns the bytes this node rebuilt by repair and heal, and the corrupt chunks its
// reads found, since it started.
func (s *Service) StorageCounters() (repairedBytes, checksumFailures int64) {
	if s.metrics == nil {
		return 0, 0
	}
	return s.metrics.repairedBytesTotal.Load(), s.metrics.corruptReadsTotal.Load()
}
