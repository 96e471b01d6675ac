package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"

	"github.com/cairn-dev/cairn/internal/pace"
)

const (
	// scrubMinRate is the slowest a pass reads, so a small store is verified within minutes
	// rather than stretched over the whole cycle.
	scrubMinRate = 1 << 20
	// scrubChunk is the most bytes the pacer lets through at once (the token bucket's burst).
	scrubChunk = 64 << 10
	// scrubSaveEvery bounds how often an unfinished pass records its progress.
	scrubSaveEvery = 10 * time.Second
	// scrubHealTimeout bounds one heal, so an unresponsive peer cannot stall the pass.
	scrubHealTimeout = 5 * time.Minute
	// scrubCheckpointFile holds the scrubber's progress, so restarts neither repeat nor skip work.
	scrubCheckpointFile = "scrub-checkpoint.json"
)

// scrubMetrics are the scrubber's series.
type scrubMetrics struct {
	failures prometheus.Counter
	shards   prometheus.Counter
	bytes    prometheus.Counter
}

func (n *Node) scrubMetrics() scrubMetrics {
	return scrubMetrics{
		failures: registeredCounter(n.reg, prometheus.CounterOpts{
			Name: "cairn_scrub_checksum_failures_total", Help: "Local shards the scrubber found corrupt or unreadable (each is then healed).",
		}),
		shards: registeredCounter(n.reg, prometheus.CounterOpts{
			Name: "cairn_scrub_verified_shards_total", Help: "Local shards the scrubber read and checked.",
		}),
		bytes: registeredCounter(n.reg, prometheus.CounterOpts{
			Name: "cairn_scrub_verified_bytes_total", Help: "Shard bytes the scrubber read and checked.",
		}),
	}
}

// scrubCheckpoint is the scrubber's progress, kept in the data dir.
type scrubCheckpoint struct {
	// Started is when the current (or, when Done, the last) pass began; the next pass begins one
	// ScrubCycle after it.
	Started time.Time `json:"started"`
	// After is the erasure.StoreOrder key of the last shard the current pass handled.
	// ShardStore.List walks in StoreOrder (its directory reads are sorted), so a restarted pass
	// resumes after it; were that order to change, a resumed pass would merely skip some shards
	// until the next one.
	After string `json:"after,omitempty"`
	Done  bool   `json:"done"`
}

// scrubLoop verifies every referenced local shard once per ScrubCycle. Each pass starts one cycle
// after the previous one started, walks the shards in the same order, and is paced to finish
// within half a cycle at most (but never slower than scrubMinRate or faster than ScrubRate), so a
// shard's checks stay about one cycle apart. Progress survives restarts. On a node's first start
// with an empty store the first pass is one cycle away: there is nothing to check yet.
func (n *Node) scrubLoop() {
	n.scrubMetrics() // expose the series from the start, at zero
	cp, err := n.loadScrubCheckpoint()
	if err != nil {
		n.log.Warn("scrub checkpoint unreadable; starting a new pass", "err", err)
	}
	if cp.Started.IsZero() && n.shards.UsedBytes() == 0 {
		cp = scrubCheckpoint{Started: time.Now(), Done: true}
		n.saveScrubCheckpoint(cp)
	}
	if !cp.Started.IsZero() {
		n.scrub.passStarted.Store(cp.Started.UnixNano())
	}
	retry := min(n.cfg.ScrubCycle, 5*time.Second)
	for {
		if cp.Done {
			if !n.pause(time.Until(cp.Started.Add(n.cfg.ScrubCycle))) {
				return
			}
			cp = scrubCheckpoint{Started: time.Now()}
		}
		if cp.Started.IsZero() {
			cp.Started = time.Now()
		}
		if !n.scrub.running.Load() || n.scrub.passStarted.Load() != cp.Started.UnixNano() {
			n.scrub.start(cp.Started)
		}
		limiter := rate.NewLimiter(n.scrubPace(), scrubChunk)
		lastSave := time.Now()
		_, _, err := n.scrubPass(n.ctx, limiter, cp.After, func(info erasure.ShardInfo) {
			n.scrub.passBytes.Add(info.Size)
			cp.After = erasure.StoreOrder(info.ID)
			if time.Since(lastSave) >= scrubSaveEvery {
				n.saveScrubCheckpoint(cp)
				lastSave = time.Now()
			}
		})
		switch {
		case n.ctx.Err() != nil:
			n.saveScrubCheckpoint(cp)
			return
		case err != nil:
			if errors.Is(err, ErrNotReady) {
				n.log.Debug("scrub pass postponed", "err", err)
			} else {
				n.log.Warn("scrub pass failed; resuming shortly", "err", err)
			}
			n.saveScrubCheckpoint(cp)
			if !n.pause(retry) {
				return
			}
			continue
		}
		cp.After, cp.Done = "", true
		n.scrub.done(time.Now())
		n.saveScrubCheckpoint(cp)
	}
}

// scrubPace is the read rate that finishes a pass over the store in half a cycle, within
// [scrubMinRate, ScrubRate].
func (n *Node) scrubPace() rate.Limit {
	want := float64(n.shards.UsedBytes()) / (n.cfg.ScrubCycle / 2).Seconds()
	return rate.Limit(min(max(want, scrubMinRate), float64(n.cfg.ScrubRate)))
}

// ScrubOnce verifies every local shard that a committed file places on this node, reading it at
// most at ScrubRate, and heals each one that is corrupt or unreadable (metric
// cairn_scrub_checksum_failures_total, a warning). Unreferenced shards are left to the garbage
// collector. It reports how many shards it checked and how many failed; it returns ErrNotReady
// (wrapped) when the node cannot trust its view of the replicated state yet.
func (n *Node) ScrubOnce(ctx context.Context) (checked, corrupt int, err error) {
	return n.scrubPass(ctx, rate.NewLimiter(rate.Limit(n.cfg.ScrubRate), scrubChunk), "", nil)
}

// scrubPass verifies the referenced local shards named after `after`, in name order, calling
// handled (may be nil) after each one.
func (n *Node) scrubPass(ctx context.Context, limiter *rate.Limiter, after string, handled func(erasure.ShardInfo)) (checked, corrupt int, err error) {
	if err := n.Ready(); err != nil {
		return 0, 0, fmt.Errorf("scrub: %w: %w", ErrNotReady, err)
	}
	// Catch up first, so shards of files committed just before the pass are not skipped.
	if err := n.consensus.ReadIndex(ctx); err != nil {
		return 0, 0, fmt.Errorf("scrub: %w: read index: %w", ErrNotReady, err)
	}
	m := n.scrubMetrics()
	err = n.shards.List(func(info erasure.ShardInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if erasure.StoreOrder(info.ID) <= after {
			return nil
		}
		verified, bad, err := n.verifyShard(ctx, info, limiter)
		if err != nil {
			return err
		}
		if verified {
			checked++
			m.shards.Inc()
			m.bytes.Add(float64(info.Size))
		}
		if bad != nil {
			corrupt++
			m.failures.Inc()
			n.log.Warn("scrub found a corrupt shard; healing it", "shard", info.ID.String(), "err", bad)
			hctx, cancel := context.WithTimeout(ctx, scrubHealTimeout)
			err := n.service.HealShard(hctx, info.ID.File, info.ID.Segment, info.ID.Index)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				n.log.Warn("scrub could not heal a corrupt shard; the next read or pass retries", "shard", info.ID.String(), "err", err)
			}
		}
		if handled != nil {
			handled(info)
		}
		return nil
	})
	if err == nil {
		// A walk over the disk cannot see a shard that is gone; the layouts can.
		var missing int
		missing, err = n.healMissing(ctx)
		corrupt += missing
	}
	return checked, corrupt, err
}

// healMissing finds the shards committed layouts place on this node that are not on its disk (a
// lost file, a wiped directory) and rebuilds them in place. It counts them with the scrub's
// checksum failures: for a reader, a missing shard is as bad as a corrupt one.
func (n *Node) healMissing(ctx context.Context) (int, error) {
	self := n.cfg.NodeID
	var missing []erasure.ShardID
	n.fsm.Files(func(f fsm.File) bool {
		for si, seg := range f.Layout.Segments {
			for idx, holder := range seg.Nodes {
				if holder != self {
					continue
				}
				id := erasure.ShardID{File: f.ID, Segment: si, Index: idx}
				if _, err := n.shards.Stat(id); errors.Is(err, erasure.ErrShardNotFound) {
					missing = append(missing, id)
				}
			}
		}
		return ctx.Err() == nil
	})
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m := n.scrubMetrics()
	for _, id := range missing {
		m.failures.Inc()
		n.log.Warn("scrub found a missing shard; rebuilding it", "shard", id.String())
		hctx, cancel := context.WithTimeout(ctx, scrubHealTimeout)
		err := n.service.HealShard(hctx, id.File, id.Segment, id.Index)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return len(missing), ctx.Err()
			}
			n.log.Warn("rebuilding a missing shard failed; the next pass retries", "shard", id.String(), "err", err)
		}
	}
	return len(missing), nil
}

// verifyShard reads one shard through erasure.VerifyShard with its segment's geometry. verified
// is false for a shard no committed file places here (garbage collection's business) and for one
// deleted meanwhile. bad is why the shard failed: a checksum mismatch, a short shard, a read
// error. err is only the context ending.
func (n *Node) verifyShard(ctx context.Context, info erasure.ShardInfo, limiter *rate.Limiter) (verified bool, bad, err error) {
	f, ok := n.placedHere(info.ID)
	if !ok {
		return false, nil, nil
	}
	r, err := n.shards.OpenFrames(info.ID, 0, -1)
	if errors.Is(err, erasure.ErrShardNotFound) {
		return false, nil, nil
	}
	if errors.Is(err, erasure.ErrInvalidRange) { // shorter than a header, say: truncated
		err = fmt.Errorf("%w: %w", erasure.ErrCorrupt, err)
	}
	if err == nil {
		err = erasure.VerifyShard(pace.NewReader(ctx, r, limiter), info.ID,
			f.Layout.Segments[info.ID.Segment].Size, f.Layout.BlockSize, f.Layout.Geometry)
		r.Close()
	}
	if ctx.Err() != nil {
		return false, nil, ctx.Err()
	}
	return true, err, nil
}

// pause waits for d, or returns false when the node stops first.
func (n *Node) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-n.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// loadScrubCheckpoint reads the scrubber's progress; a missing file is a zero checkpoint.
func (n *Node) loadScrubCheckpoint() (scrubCheckpoint, error) {
	var cp scrubCheckpoint
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, scrubCheckpointFile))
	if errors.Is(err, os.ErrNotExist) {
		return cp, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &cp)
	}
	if err != nil {
		return scrubCheckpoint{}, fmt.Errorf("load scrub checkpoint: %w", err)
	}
	return cp, nil
}

// saveScrubCheckpoint records the scrubber's progress atomically (temp file and rename). A lost
// save only repeats or delays some checks, so it is logged, not fatal, and not fsynced.
func (n *Node) saveScrubCheckpoint(cp scrubCheckpoint) {
	path := filepath.Join(n.cfg.DataDir, scrubCheckpointFile)
	b, err := json.Marshal(cp)
	if err == nil {
		err = os.WriteFile(path+".tmp", b, 0o600)
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		n.log.Warn("cannot save scrub progress", "err", err)
	}
}
