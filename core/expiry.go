package core

import (
	"context"
	"time"

	"github.com/cairn-dev/cairn/fsm"
)

// expireBatch bounds the ids in one expire command, so one Raft entry stays small.
const expireBatch = 500

// ReapExpired removes expired files (with their tokens and shards) and expired tokens through Raft
// commands. The leader calls it periodically; readers never rely on it, because every lookup checks
// expiry itself, so an expired token or file is refused at once and only its removal waits.
func (s *Service) ReapExpired(ctx context.Context) (files, tokens int, err error) {
	now := s.now()
	// Each round reads the next rows from the state's expiry indexes; the expire command removes
	// them before the next read (propose returns once it is applied here). A round that finds only
	// ids it already proposed (the command skipped them: not expired at its time) ends the pass.
	seen := make(map[string]bool)
	for {
		batch := s.state.ExpiredFiles(now, expireBatch)
		ids := make([]string, 0, len(batch))
		for _, f := range batch {
			if !seen[f.ID] {
				seen[f.ID] = true
				ids = append(ids, f.ID)
			}
		}
		if len(ids) == 0 {
			break
		}
		if err := s.proposeAt(ctx, now, fsm.CmdExpire, fsm.Expire{FileIDs: ids}); err != nil {
			return files, tokens, err
		}
		files += len(ids)
		s.spawn(func(ctx context.Context) {
			for _, f := range batch {
				s.deleteShards(ctx, f.ID, f.Layout.Segments)
			}
		})
	}
	for {
		var ids []string
		for _, t := range s.state.ExpiredTokens(now, expireBatch) {
			if !seen[t.ID] {
				seen[t.ID] = true
				ids = append(ids, t.ID)
			}
		}
		if len(ids) == 0 {
			break
		}
		if err := s.proposeAt(ctx, now, fsm.CmdExpire, fsm.Expire{TokenIDs: ids}); err != nil {
			return files, tokens, err
		}
		tokens += len(ids)
	}
	if files+tokens > 0 {
		s.log.Info("expired files and tokens removed", "files", files, "tokens", tokens)
	}
	return files, tokens, nil
}

// RunExpiry calls ReapExpired every interval until ctx ends. It is a leader task: node runs it
// under the leadership term's context, so it stops the moment this node stops leading.
func (s *Service) RunExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, _, err := s.ReapExpired(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("expiry pass failed; retrying next interval", "err", err)
		}
	}
}
