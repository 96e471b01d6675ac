package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/erasure"
)

// errNodeUnreachable means a shard's node is not an alive member, so it is not even dialled: a read
// falls back to parity at once instead of waiting for a connect timeout.
var errNodeUnreachable = errors.New("node is not an alive member")

// localShards serves this node's shard store, to the internal RPC server and to local callers.
type localShards struct {
	store   *erasure.ShardStore
	free    *freeSpace // the store's free bytes, cached (freespace.go)
	minFree int64
	// onFull is told when a put is refused for space, so the node re-announces at once.
	onFull func()
}

// PutShard writes a whole shard and makes it durable; a broken body leaves nothing behind. Below
// the free-space reserve it refuses with erasure.ErrNoSpace before writing anything.
func (l localShards) PutShard(ctx context.Context, id erasure.ShardID, body io.Reader) error {
	if free, err := l.free.available(l.minFree); err == nil && belowReserve(free, l.minFree) {
		if l.onFull != nil {
			l.onFull()
		}
		return fmt.Errorf("%w: %d bytes free, reserve is %d", erasure.ErrNoSpace, free, l.minFree)
	}
	w, err := l.store.Create(id)
	if err != nil {
		return err
	}
	defer w.Abort()
	n, err := io.Copy(w, contextReader{ctx, body})
	if err != nil {
		l.free.wrote(n) // the bytes may be on disk until the abort
		return fmt.Errorf("write shard %s: %w", id, err)
	}
	err = w.Commit()
	// Only now: a small shard reaches its volume at Commit, and a statfs between the copy and
	// the commit would not have seen it. Counted once at least, twice only to be safe.
	l.free.wrote(n)
	return err
}

func (l localShards) OpenShard(_ context.Context, id erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	return l.store.OpenFrames(id, off, n)
}

func (l localShards) DeleteShard(_ context.Context, id erasure.ShardID) error {
	return l.store.Delete(id)
}

func (l localShards) StatShard(_ context.Context, id erasure.ShardID) (erasure.ShardInfo, error) {
	return l.store.Stat(id)
}

// registerShardStoreMetrics exposes how the shard store writes: whether O_DIRECT is in use (0
// once the filesystem refused it, tmpfs for one) and the bytes written each way.
func (n *Node) registerShardStoreMetrics() {
	n.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_shard_direct_io",
			Help: "1 while shard writes use O_DIRECT, 0 once the filesystem refused it and writes fell back to the page cache."},
			func() float64 {
				if n.shards.DirectIO().Enabled {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cairn_shard_write_direct_bytes_total",
			Help: "Shard bytes written with O_DIRECT."},
			func() float64 { return float64(n.shards.DirectIO().DirectBytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cairn_shard_write_buffered_bytes_total",
			Help: "Shard bytes written to shard files through the page cache (tails under 4 KiB, or all of them without O_DIRECT; small shards go to volumes)."},
			func() float64 { return float64(n.shards.DirectIO().BufferedBytes) }),
		volumeCollector{n.shards},
	)
}

// volumeCollector exposes the volumes that hold small shards (erasure.VolumeStats), read once per scrape.
type volumeCollector struct{ store *erasure.ShardStore }

var volumeDescs = struct {
	files, fileBytes, liveBytes, shards, indexBytes  *prometheus.Desc
	batches, records, fsyncs, torn, damaged, corrupt *prometheus.Desc
	compactions, reclaimed, compactionBytes          *prometheus.Desc
	waits, waitSeconds                               *prometheus.Desc
	openRecords                                      *prometheus.Desc
}{
	files:           prometheus.NewDesc("cairn_volume_files", "Volume files holding small shards.", nil, nil),
	fileBytes:       prometheus.NewDesc("cairn_volume_bytes", "Bytes of all volume files.", nil, nil),
	liveBytes:       prometheus.NewDesc("cairn_volume_live_bytes", "Bytes of volume records that hold a current shard; the rest is reclaimed by compaction.", nil, nil),
	shards:          prometheus.NewDesc("cairn_volume_shards", "Small shards held in volumes (entries of the in-memory index).", nil, nil),
	indexBytes:      prometheus.NewDesc("cairn_volume_index_bytes", "Estimated RAM of the small-shard index.", nil, nil),
	batches:         prometheus.NewDesc("cairn_volume_group_commits_total", "Group commits: batches of small-shard records written with one write and one fdatasync.", nil, nil),
	records:         prometheus.NewDesc("cairn_volume_records_written_total", "Records (small shards and tombstones) written by group commits.", nil, nil),
	fsyncs:          prometheus.NewDesc("cairn_volume_fsyncs_total", "fdatasyncs of volume files by group commits.", nil, nil),
	waits:           prometheus.NewDesc("cairn_volume_group_commit_waits_total", "Group commits that waited for more records (--group-commit-wait) because writes arrived close together.", nil, nil),
	waitSeconds:     prometheus.NewDesc("cairn_volume_group_commit_wait_seconds_total", "Time group commits spent waiting for more records.", nil, nil),
	openRecords:     prometheus.NewDesc("cairn_volume_open_records", "Records the store found when it opened, by where it read them: from index files (index) or from the volumes (scan).", []string{"source"}, nil),
	torn:            prometheus.NewDesc("cairn_volume_torn_bytes_total", "Bytes cut from volume tails at open: batches a crash tore, never acknowledged.", nil, nil),
	damaged:         prometheus.NewDesc("cairn_volume_damaged_bytes_total", "Bytes inside volumes skipped at open because they are not valid records.", nil, nil),
	corrupt:         prometheus.NewDesc("cairn_volume_corrupt_reads_total", "Reads of small-shard records that failed verification (counted corrupt and healed).", nil, nil),
	compactions:     prometheus.NewDesc("cairn_volume_compactions_total", "Volumes rewritten (or removed) by compaction.", nil, nil),
	reclaimed:       prometheus.NewDesc("cairn_volume_reclaimed_bytes_total", "Bytes freed by volume compaction.", nil, nil),
	compactionBytes: prometheus.NewDesc("cairn_volume_compaction_written_bytes_total", "Bytes of live records compaction copied into new volumes.", nil, nil),
}

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.VolumeStats()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	d := volumeDescs
	gauge(d.files, float64(st.Volumes))
	gauge(d.fileBytes, float64(st.FileBytes))
	gauge(d.liveBytes, float64(st.LiveBytes))
	gauge(d.shards, float64(st.Shards))
	gauge(d.indexBytes, float64(st.IndexBytes))
	counter(d.batches, st.Batches)
	counter(d.records, st.Records)
	counter(d.fsyncs, st.Fsyncs)
	counter(d.waits, st.Waits)
	ch <- prometheus.MustNewConstMetric(d.openRecords, prometheus.GaugeValue, float64(st.OpenListed), "index")
	ch <- prometheus.MustNewConstMetric(d.openRecords, prometheus.GaugeValue, float64(st.OpenScanned), "scan")
	ch <- prometheus.MustNewConstMetric(d.waitSeconds, prometheus.CounterValue, st.WaitTime.Seconds())
	counter(d.torn, st.TornBytes)
	counter(d.damaged, st.DamagedBytes)
	counter(d.corrupt, st.CorruptReads)
	counter(d.compactions, st.Compactions)
	counter(d.reclaimed, st.ReclaimedBytes)
	counter(d.compactionBytes, st.CompactionBytes)
}

// contextReader stops a copy when its context ends.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// shardRouter sends shard operations to the local store or over internal RPC, by node id.
type shardRouter struct{ node *Node }

func (r *shardRouter) addr(nodeID string) (string, error) {
	m, ok := r.node.members.Member(nodeID)
	if !ok || m.State != cluster.StateAlive || !m.Verified {
		return "", fmt.Errorf("%s: %w", nodeID, errNodeUnreachable)
	}
	return m.Meta.ClusterAddr, nil
}

func (r *shardRouter) PutShard(ctx context.Context, nodeID string, id erasure.ShardID, body io.Reader) error {
	if nodeID == r.node.cfg.NodeID {
		return r.node.local().PutShard(ctx, id, body)
	}
	addr, err := r.addr(nodeID)
	if err != nil {
		return err
	}
	return r.node.rpcClient.PutShard(ctx, addr, id, body)
}

func (r *shardRouter) OpenShard(ctx context.Context, nodeID string, id erasure.ShardID, off, n int64) (io.ReadCloser, error) {
	if nodeID == r.node.cfg.NodeID {
		return r.node.shards.OpenFrames(id, off, n)
	}
	addr, err := r.addr(nodeID)
	if err != nil {
		return nil, err
	}
	return r.node.rpcClient.OpenShard(ctx, addr, id, off, n)
}

func (r *shardRouter) DeleteShard(ctx context.Context, nodeID string, id erasure.ShardID) error {
	if nodeID == r.node.cfg.NodeID {
		return r.node.shards.Delete(id)
	}
	addr, err := r.addr(nodeID)
	if err != nil {
		return err
	}
	return r.node.rpcClient.DeleteShard(ctx, addr, id)
}

// placer offers the alive members that accept shards as placement candidates.
type placer struct{ node *Node }

func (p placer) ShardCandidates() []erasure.Candidate {
	cfg, _ := p.node.fsm.Config()
	var out []erasure.Candidate
	for _, m := range p.node.members.Members() {
		if m.State == cluster.StateAlive && m.Verified && m.Meta.AcceptsShards && !m.Meta.Full &&
			!slices.Contains(cfg.RemovedNodes, m.Meta.ID) { // decommissioned nodes take nothing new
			out = append(out, erasure.Candidate{NodeID: m.Meta.ID, Zone: m.Meta.Zone})
		}
	}
	return out
}

// FullNodes counts the alive members that refuse shards for lack of space.
func (p placer) FullNodes() int {
	full := 0
	for _, m := range p.node.members.Members() {
		if m.State == cluster.StateAlive && m.Meta.Full {
			full++
		}
	}
	return full
}

// DownSince reports whether nodeID is unreachable and since when this node knows it. A node that
// gossip has never seen counts as down since this node started.
func (p placer) DownSince(nodeID string) (time.Time, bool) {
	m, ok := p.node.members.Member(nodeID)
	if !ok {
		return p.node.started, true
	}
	if m.State == cluster.StateAlive {
		return time.Time{}, false
	}
	return m.Since, true
}
