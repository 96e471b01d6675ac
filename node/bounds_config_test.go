package node

import (
	"testing"
	"time"
)

// TestDefaultConfigBounds pins the documented defaults of the bounds (docs/operations.md): a zero
// here would silently mean "no bound" or a library's default.
func TestDefaultConfigBounds(t *testing.T) {
	c := DefaultConfig()
	for name, got := range map[string]any{
		"RaftMultiplier":       c.RaftMultiplier,
		"MaxConcurrentUploads": c.MaxConcurrentUploads,
		"UploadIdleTimeout":    c.UploadIdleTimeout,
		"ShardStallTimeout":    c.ShardStallTimeout,
		"LeaderWait":           c.leaderWait(),
	} {
		want := map[string]any{
			"RaftMultiplier": 2, "MaxConcurrentUploads": 64, "UploadIdleTimeout": 30 * time.Second,
			"ShardStallTimeout": 5 * time.Second, "LeaderWait": 7 * time.Second,
		}[name]
		if got != want {
			t.Errorf("DefaultConfig().%s = %v, want %v", name, got, want)
		}
	}
	if got := c.raftTimings().Multiplier; got != 2 {
		t.Errorf("raft timings multiplier = %d, want 2", got)
	}
}

// TestLeaderWaitCoversAFailover: left at 0, the leader wait is derived from the Raft timings so
// that it covers hashicorp/raft's worst-case failover (twice the heartbeat timeout to notice,
// one election timeout for a refused pre-vote, a second of margin), never below the 5 s default;
// a value that is set is kept.
func TestLeaderWaitCoversAFailover(t *testing.T) {
	for _, tc := range []struct {
		multiplier int
		set        time.Duration
		want       time.Duration
	}{
		{multiplier: 1, want: 5 * time.Second},
		{multiplier: DefaultRaftMultiplier, want: 7 * time.Second},
		{multiplier: 5, want: 16 * time.Second},
		{multiplier: 5, set: 3 * time.Second, want: 3 * time.Second},
	} {
		c := DefaultConfig()
		c.RaftMultiplier, c.LeaderWait = tc.multiplier, tc.set
		if got := c.leaderWait(); got != tc.want {
			t.Errorf("multiplier %d, LeaderWait %s: leader wait %s, want %s", tc.multiplier, tc.set, got, tc.want)
		}
	}
}
