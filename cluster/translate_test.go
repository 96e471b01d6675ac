package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

// Consensus's errors reach core as clusterapi sentinels (core cannot match raft's own): a shut-down
// Raft is ErrShutdown and is not retried; leadership churn is retried (and becomes ErrNoLeader
// once the leader wait ends); the caller's own end is neither.
func TestConsensusErrorsAreClusterSentinels(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		want      error // what errors.Is must match after translate; nil: unchanged
		retryable bool
	}{
		{"raft shut down", fmt.Errorf("apply: %w", raft.ErrRaftShutdown), clusterapi.ErrShutdown, false},
		{"consensus closed", clusterapi.ErrShutdown, clusterapi.ErrShutdown, false},
		{"leadership lost", raft.ErrLeadershipLost, nil, true},
		{"not the leader", raft.ErrNotLeader, nil, true},
		{"transfer in progress", raft.ErrLeadershipTransferInProgress, nil, true},
		{"forward refused", fmt.Errorf("forward: %w", ErrNotLeader), nil, true},
		{"caller cancelled", context.Canceled, context.Canceled, false},
		{"caller deadline", context.DeadlineExceeded, context.DeadlineExceeded, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := translate(tc.err)
			if tc.want != nil && !errors.Is(got, tc.want) {
				t.Errorf("translate(%v) = %v, want it to match %v", tc.err, got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("translate(%v) = %v lost the original error", tc.err, got)
			}
			if r := retryable(tc.err); r != tc.retryable {
				t.Errorf("retryable(%v) = %v, want %v", tc.err, r, tc.retryable)
			}
		})
	}
}
