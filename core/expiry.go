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
	var expiredFiles []fsm.File
	s.state.Files(func(f fsm.File) bool {
		if f.Expired(now) {
			expiredFiles = append(expiredFiles, f)
		}
		return true
	})
	var tokenIDs []string
	s.state.Tokens(func(t fsm.Token) bool {
		if t.Expired(now) {
			tokenIDs = append(tokenIDs, t.ID)
		}
		return true
	})
	for len(expiredFiles) > 0 {
		batch := expiredFiles[:min(expireBatch, len(expiredFiles))]
		expiredFiles = expiredFiles[len(batch):]
		ids := make([]string, len(batch))
		for i, f := range batch {
			ids[i] = f.ID
		}
		if err := s.proposeAt(ctx, now, fsm.CmdExpire, fsm.Expire{FileIDs: ids}); err != nil {
			return files, tokens, err
		}
		files += len(batch)
		s.spawn(func(ctx context.Context) {
			for _, f := range batch {
				s.deleteShards(ctx, f.ID, f.Layout.Segments)
			}
		})
	}
	for len(tokenIDs) > 0 {
		batch := tokenIDs[:min(expireBatch, len(tokenIDs))]
		tokenIDs = tokenIDs[len(batch):]
		if err := s.proposeAt(ctx, now, fsm.CmdExpire, fsm.Expire{TokenIDs: batch}); err != nil {
			return files, tokens, err
		}
		tokens += len(batch)
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
