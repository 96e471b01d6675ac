package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// ErrNotReady means a background pass (GC, scrub) did not run because this node cannot trust its
// view of the replicated state yet: no leader, not in the Raft configuration, or shutting down.
var ErrNotReady = errors.New("node not ready")

// gcMetrics are the garbage collector's series.
type gcMetrics struct {
	shards prometheus.Counter
	bytes  prometheus.Counter
}

func (n *Node) gcMetrics() gcMetrics {
	return gcMetrics{
		shards: registeredCounter(n.reg, prometheus.CounterOpts{
			Name: "cairn_gc_shards_collected_total", Help: "Unreferenced shards removed from this node's disk by garbage collection.",
		}),
		bytes: registeredCounter(n.reg, prometheus.CounterOpts{
			Name: "cairn_gc_bytes_collected_total", Help: "Bytes of unreferenced shards removed from this node's disk by garbage collection.",
		}),
	}
}

// registeredCounter registers a counter on reg, or returns the one registered earlier under the same name.
// The loops and the exported one-shot passes share their series this way without a field on Node.
func registeredCounter(reg prometheus.Registerer, opts prometheus.CounterOpts) prometheus.Counter {
	c := prometheus.NewCounter(opts)
	if err := reg.Register(c); err != nil {
		var dup prometheus.AlreadyRegisteredError
		if !errors.As(err, &dup) {
			panic(fmt.Sprintf("register %s: %v", opts.Name, err)) // conflicting descriptors: a programming error
		}
		return dup.ExistingCollector.(prometheus.Counter)
	}
	return c
}

// gcLoop runs CollectGarbage every GCInterval until the node stops.
func (n *Node) gcLoop() {
	n.gcMetrics() // expose the series from the start, at zero
	t := time.NewTicker(n.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		switch _, err := n.CollectGarbage(n.ctx); {
		case err == nil, n.ctx.Err() != nil:
		case errors.Is(err, ErrNotReady):
			n.log.Debug("garbage collection skipped", "err", err)
		default:
			n.log.Warn("garbage collection failed; retrying next interval", "err", err)
		}
		// Reclaim what GC (and heals, which rewrite) left dead in the volumes of small shards.
		// It needs no replicated state, so it runs even when GC could not.
		if _, err := n.shards.Compact(n.ctx, n.cfg.CompactionRate); err != nil && n.ctx.Err() == nil {
			n.log.Warn("volume compaction failed; retrying next interval", "err", err)
		}
	}
}

// CollectGarbage does one garbage-collection pass over the local shard store: it removes every
// shard that no committed file places on this node and that was written more than GCGracePeriod
// ago. That covers failed or abandoned uploads, deleted files, shards moved away by repair and
// deletes that happened while this node was down.
//
// An upload writes its shards before its Raft commit, so a shard of an upload in flight is
// unreferenced but young; it is safe as long as no upload outlasts the grace period. The pass
// trusts the local replicated state only when the node is ready and after a linearizable read
// taken at its start, so a node that restarts behind never deletes shards of files it has not
// learned about yet. It returns ErrNotReady (wrapped) without touching anything otherwise.
func (n *Node) CollectGarbage(ctx context.Context) (collected int, err error) {
	if err := n.Ready(); err != nil {
		return 0, fmt.Errorf("garbage collection: %w: %w", ErrNotReady, err)
	}
	if err := n.consensus.ReadIndex(ctx); err != nil {
		return 0, fmt.Errorf("garbage collection: %w: read index: %w", ErrNotReady, err)
	}
	m := n.gcMetrics()
	cutoff := time.Now().Add(-n.cfg.GCGracePeriod)
	var bytes int64
	err = n.shards.List(func(info erasure.ShardInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if info.ModTime.After(cutoff) {
			return nil
		}
		if _, ok := n.placedHere(info.ID); ok {
			return nil
		}
		// Look again right before removing: repair or heal may have rewritten the shard since the
		// listing, and a fresh write is never garbage yet.
		cur, err := n.shards.Stat(info.ID)
		if errors.Is(err, erasure.ErrShardNotFound) || (err == nil && cur.ModTime.After(cutoff)) {
			return nil
		}
		if err == nil {
			err = n.shards.Delete(info.ID)
		}
		if err != nil {
			return err // a failing disk: stop here, the next pass retries
		}
		collected++
		bytes += cur.Size
		m.shards.Inc()
		m.bytes.Add(float64(cur.Size))
		return nil
	})
	if collected > 0 {
		n.log.Info("garbage collected unreferenced shards", "shards", collected, "bytes", bytes)
	}
	return collected, err
}

// placedHere returns the committed file whose layout puts shard id on this node, if there is one.
func (n *Node) placedHere(id erasure.ShardID) (fsm.File, bool) {
	f, ok := n.fsm.File(id.File)
	if !ok || id.Segment >= len(f.Layout.Segments) {
		return fsm.File{}, false
	}
	nodes := f.Layout.Segments[id.Segment].Nodes
	return f, id.Index < len(nodes) && nodes[id.Index] == n.cfg.NodeID
}
