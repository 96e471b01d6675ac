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
		"LeaderWait":           c.LeaderWait,
	} {
		want := map[string]any{
			"RaftMultiplier": 2, "MaxConcurrentUploads": 64, "UploadIdleTimeout": 30 * time.Second,
			"ShardStallTimeout": 5 * time.Second, "LeaderWait": 5 * time.Second,
		}[name]
		if got != want {
			t.Errorf("DefaultConfig().%s = %v, want %v", name, got, want)
		}
	}
	if got := c.raftTimings().Multiplier; got != 2 {
		t.Errorf("raft timings multiplier = %d, want 2", got)
	}
}
