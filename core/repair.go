package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"

	"github.com/cairn-dev/cairn/internal/pace"
)

// NodeHealth tells repair which nodes can hold shards and how long the others have been gone.
type NodeHealth interface {
	// ShardCandidates are the alive nodes that accept new shards (as for uploads).
	ShardCandidates() []erasure.Candidate
	// DownSince reports whether nodeID is unreachable (failed, departed or unknown) and since when
	// this node has known it; alive nodes report false.
	DownSince(nodeID string) (time.Time, bool)
}

// RepairConfig shapes the leader's repair loop.
type RepairConfig struct {
	// Delay is how long a node must be unreachable before its shards are rebuilt elsewhere.
	Delay time.Duration
	// BytesPerSecond limits the shard bytes repair writes, so it does not starve client traffic.
	BytesPerSecond int64
	// Interval is the pause between two passes over the metadata.
	Interval time.Duration
}

// shardRef names one shard slot of a file's layout.
type shardRef struct {
	file    string
	segment int
	index   int
}

func (r shardRef) id() erasure.ShardID {
	return erasure.ShardID{File: r.file, Segment: r.segment, Index: r.index}
}

// SegmentHealth counts segments by how many of their shards sit on reachable nodes.
type SegmentHealth struct {
	Healthy, Degraded, Unrecoverable int
	// PendingShards is the repair queue: shard slots that need a new home or a rewrite.
	PendingShards int
}

// rebuildTo reconstructs a shard from the segment's other shards and writes it, durably, to
// target. limiter (may be nil) paces the bytes written.
func (s *Service) rebuildTo(ctx context.Context, file fsm.File, ref shardRef, target string, limiter *rate.Limiter) (int64, error) {
	if ref.segment >= len(file.Layout.Segments) || ref.index >= file.Layout.Geometry.Total() {
		return 0, fmt.Errorf("shard %s is outside file %s's layout", ref.id(), file.ID)
	}
	codec, err := s.codec(file.Layout.Geometry, file.Layout.BlockSize)
	if err != nil {
		return 0, err
	}
	seg := file.Layout.Segments[ref.segment]
	src := &segmentSource{s: s, fileID: file.ID, segment: ref.segment, nodes: seg.Nodes}
	pr, pw := io.Pipe()
	var faults []erasure.ShardFault
	done := make(chan struct{})
	go func() {
		defer close(done)
		var w io.Writer = pw
		if limiter != nil {
			w = pace.NewWriter(ctx, pw, limiter)
		}
		var rerr error
		faults, rerr = codec.RebuildShard(ctx, w, erasure.SegmentID{File: file.ID, Segment: ref.segment}, seg.Size, ref.index, src)
		pw.CloseWithError(rerr)
	}()
	counted := &countingReader{r: pr}
	perr := s.shards.PutShard(ctx, target, ref.id(), counted)
	pr.CloseWithError(errPutEnded)
	<-done
	for _, f := range faults {
		if f.Index != ref.index {
			s.metrics.shardFault(f.Corrupt)
		}
	}
	if perr != nil {
		return 0, fmt.Errorf("rebuild %s onto %s: %w", ref.id(), target, perr)
	}
	s.metrics.repaired(counted.n)
	return counted.n, nil
}

// HealShard rewrites a missing or corrupt shard in place, on the node the layout names for it
// (inline heal after a read fault, and the scrubber). A slot that was never written has no node to
// heal on: that is an error here, and the leader's repair loop places it.
func (s *Service) HealShard(ctx context.Context, fileID string, segment, index int) error {
	file, ok := s.state.File(fileID)
	if !ok {
		return ErrNotFound
	}
	if segment >= len(file.Layout.Segments) || index >= file.Layout.Geometry.Total() {
		return ErrNotFound
	}
	ref := shardRef{fileID, segment, index}
	node := file.Layout.Segments[segment].Nodes[index]
	if node == "" {
		return fmt.Errorf("shard %s has no node: the repair loop places it", ref.id())
	}
	_, err := s.rebuildTo(ctx, file, ref, node, nil)
	if err == nil {
		s.log.Info("shard healed in place", "shard", ref.id().String(), "node", node)
	}
	return err
}

// healInBackground schedules HealShard for shards a read found missing or corrupt on nodes that are
// up, at most once at a time per shard.
func (s *Service) healInBackground(fileID string, segment int, faults []erasure.ShardFault) {
	for _, f := range faults {
		if !f.Corrupt && !errors.Is(f.Err, erasure.ErrShardNotFound) {
			continue // an unreachable or stalled node: repair moves the shard if it stays away
		}
		ref := shardRef{fileID, segment, f.Index}
		s.healOnce(ref, func(ctx context.Context) {
			if err := s.HealShard(ctx, ref.file, ref.segment, ref.index); err != nil {
				s.log.Debug("inline heal not done; repair or scrub will retry", "shard", ref.id().String(), "err", err)
			}
		})
	}
}

// healOnce runs heal in the background with a 5-minute bound, unless a heal of ref is already
// running: reads that keep meeting the same bad shard must not pile up rebuilds of it.
func (s *Service) healOnce(ref shardRef, heal func(ctx context.Context)) {
	s.healingMu.Lock()
	if s.healing == nil {
		s.healing = make(map[shardRef]bool)
	}
	busy := s.healing[ref]
	s.healing[ref] = true
	s.healingMu.Unlock()
	if busy {
		return
	}
	s.spawn(func(ctx context.Context) {
		defer func() {
			s.healingMu.Lock()
			delete(s.healing, ref)
			s.healingMu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		heal(ctx)
	})
}

// checkFileInBackground verifies every shard of a file whose full read failed its SHA-256 and
// heals those found corrupt, at most once at a time per file. When every shard passes (possible
// only for shards of the v1 format, whose checksums do not bind a frame to its place), the bad
// shard cannot be told apart, and it says so at error level for an operator.
func (s *Service) checkFileInBackground(file fsm.File) {
	s.healOnce(shardRef{file: file.ID, segment: -1, index: -1}, func(ctx context.Context) {
		codec, err := s.codec(file.Layout.Geometry, file.Layout.BlockSize)
		if err != nil {
			return
		}
		found := 0
		for si, seg := range file.Layout.Segments {
			src := &segmentSource{s: s, fileID: file.ID, segment: si, nodes: seg.Nodes}
			for index, node := range seg.Nodes {
				if node == "" {
					continue
				}
				err := codec.CheckShard(ctx, erasure.SegmentID{File: file.ID, Segment: si}, seg.Size, index, src)
				if !errors.Is(err, erasure.ErrCorrupt) && !errors.Is(err, erasure.ErrShardNotFound) {
					continue
				}
				found++
				s.metrics.shardFault(true)
				if err := s.HealShard(ctx, file.ID, si, index); err != nil {
					s.log.Warn("healing a shard of a file that failed its digest failed", "file", file.ID,
						"segment", si, "shard", index, "err", err)
				}
			}
		}
		if found == 0 && ctx.Err() == nil {
			s.log.Error("file fails its SHA-256 but every shard passes its checksums (v1 shards?); the bad shard cannot be located",
				"file", file.ID)
		}
	})
}

// relocate rebuilds a shard onto a new node and commits the move. If the layout changed meanwhile
// (another repair, a delete), the new copy is removed again and nothing changes.
func (s *Service) relocate(ctx context.Context, file fsm.File, ref shardRef, to string, limiter *rate.Limiter) error {
	from := file.Layout.Segments[ref.segment].Nodes[ref.index]
	if _, err := s.rebuildTo(ctx, file, ref, to, limiter); err != nil {
		return err
	}
	err := s.propose(ctx, fsm.CmdMoveShard, fsm.MoveShard{
		FileID: file.ID, Segment: ref.segment, Index: ref.index, From: from, To: to,
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, fsm.ErrConflict) {
			// The layout moved on: remove our copy unless the slot names this very node now.
			if cur, ok := s.state.File(file.ID); !ok || cur.Layout.Segments[ref.segment].Nodes[ref.index] != to {
				_ = s.shards.DeleteShard(ctx, to, ref.id())
			}
		}
		return err
	}
	s.log.Info("shard relocated", "shard", ref.id().String(), "from", from, "to", to)
	if from != "" {
		// The old holder may be down; then the garbage collector removes it when it returns.
		_ = s.shards.DeleteShard(ctx, from, ref.id())
	}
	return nil
}

// healthRefreshInterval is how often the segment-health gauges are recomputed while a repair pass
// runs.
const healthRefreshInterval = 10 * time.Second

// RunRepair is the leader's repair loop, a leader task: every Interval until ctx ends (the end of
// the leadership term) it walks the committed layouts (so the queue is rebuilt from Raft state
// after every leader change) and moves shards away from nodes that are removed, or down for longer
// than Delay, and places shards that were never written (degraded uploads) as soon as a suitable
// node is up. When the term ends it zeroes the segment-health gauges: only the leader reports them.
func (s *Service) RunRepair(ctx context.Context, cfg RepairConfig, health NodeHealth) {
	var limiter *rate.Limiter
	if cfg.BytesPerSecond > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.BytesPerSecond), int(min(cfg.BytesPerSecond, pace.MaxChunk)))
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	defer s.metrics.segmentHealth(SegmentHealth{})
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.repairPass(ctx, cfg, health, limiter)
	}
}

// repairPass does one walk over every layout and repairs what it can.
func (s *Service) repairPass(ctx context.Context, cfg RepairConfig, health NodeHealth, limiter *rate.Limiter) SegmentHealth {
	// A pass over many files at a limited rate can take hours; the health gauges must not show
	// the previous pass's numbers meanwhile, so a classification-only walk refreshes them.
	passDone := make(chan struct{})
	var refresher sync.WaitGroup
	refresher.Go(func() {
		t := time.NewTicker(healthRefreshInterval)
		defer t.Stop()
		for {
			select {
			case <-passDone:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				s.metrics.segmentHealth(s.StorageHealth(cfg.Delay, health))
			}
		}
	})
	defer func() {
		close(passDone)
		refresher.Wait()
	}()
	candidates := health.ShardCandidates()
	report := s.walkSegments(cfg.Delay, health, func(f fsm.File, si int, seg fsm.Segment, todo []int, available int, removed []string) int {
		repaired := 0
		for _, i := range todo {
			if ctx.Err() != nil || available < f.Layout.Geometry.Data {
				break // a node that lost leadership (its term's context ended) stops at once
			}
			target := pickTarget(f.ID, si, i, seg.Nodes, candidates, removed)
			if target == "" {
				continue // no node can take it now; the next pass retries
			}
			ref := shardRef{f.ID, si, i}
			if err := s.relocate(ctx, f, ref, target, limiter); err != nil {
				s.log.Warn("shard repair failed; retrying next pass", "shard", ref.id().String(), "err", err)
				continue
			}
			repaired++
			// Later slots of this segment must see the new holder.
			seg.Nodes = slices.Clone(seg.Nodes)
			seg.Nodes[i] = target
		}
		return repaired
	})
	s.metrics.segmentHealth(report)
	return report
}

// StorageHealth classifies every committed segment by the reachability of its shards, as repair
// sees it, without repairing anything (for status pages).
func (s *Service) StorageHealth(delay time.Duration, health NodeHealth) SegmentHealth {
	return s.walkSegments(delay, health, nil)
}

// walkSegments visits every segment of every file, works out which shard slots need repair (never
// written, on a removed node, or on a node down for at least delay), and classifies the segment.
// fix, when given, repairs a segment's slots and returns how many it repaired.
func (s *Service) walkSegments(delay time.Duration, health NodeHealth,
	fix func(f fsm.File, si int, seg fsm.Segment, todo []int, available int, removed []string) int) SegmentHealth {
	now := time.Now()
	clusterCfg, _ := s.state.Config()
	removed := clusterCfg.RemovedNodes
	var files []fsm.File
	s.state.Files(func(f fsm.File) bool {
		files = append(files, f)
		return true
	})
	var report SegmentHealth
	for _, f := range files {
		for si, seg := range f.Layout.Segments {
			available := 0
			var todo []int
			for i, node := range seg.Nodes {
				since, down := health.DownSince(node)
				switch {
				case node == "" || slices.Contains(removed, node):
					todo = append(todo, i)
				case down:
					if now.Sub(since) >= delay {
						todo = append(todo, i)
					}
				default:
					available++
				}
			}
			switch {
			case available < f.Layout.Geometry.Data:
				report.Unrecoverable++
			case available < len(seg.Nodes):
				report.Degraded++
			default:
				report.Healthy++
			}
			report.PendingShards += len(todo)
			if fix != nil && len(todo) > 0 {
				report.PendingShards -= fix(f, si, seg, todo, available, removed)
			}
		}
	}
	return report
}

// pickTarget chooses a new node for one shard slot: an alive candidate that holds no other shard
// of the segment, preferring zones the segment does not use yet, by rendezvous order.
func pickTarget(fileID string, segment, index int, holders []string, candidates []erasure.Candidate, removed []string) string {
	used := map[string]bool{}
	for _, h := range holders {
		used[h] = true
	}
	zoneUse := map[string]int{}
	var free []erasure.Candidate
	for _, c := range candidates {
		if used[c.NodeID] {
			zoneUse[c.Zone]++
			continue
		}
		if !slices.Contains(removed, c.NodeID) {
			free = append(free, c)
		}
	}
	if len(free) == 0 {
		return ""
	}
	order := erasure.Place(fileID+"/"+strconv.Itoa(segment)+"/"+strconv.Itoa(index), free, len(free))
	best, bestUse := "", -1
	for _, id := range order {
		zone := ""
		for _, c := range free {
			if c.NodeID == id {
				zone = c.Zone
			}
		}
		if u := zoneUse[zone]; bestUse < 0 || u < bestUse {
			best, bestUse = id, u
		}
	}
	return best
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// healingSet is embedded state of the Service for inline heals in flight.
type healingSet struct {
	healingMu sync.Mutex
	healing   map[shardRef]bool
}
