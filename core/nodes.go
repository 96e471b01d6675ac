package core

import (
	"context"
	"fmt"
	"regexp"

	"github.com/cairn-dev/cairn/fsm"
)

// nodeIDPattern is the --node-id rule of node.Config; an id outside it cannot name a node.
var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// RemoveNode decommissions a node (needs MANAGE_CLUSTER). Once the command commits, the leader
// removes the node from Raft and never adds it back, and repair moves its shards away at once
// instead of after the repair delay. Any well-formed id is accepted, known or not: a node that is
// long gone may already be forgotten by gossip and Raft, and recording an unknown id is harmless.
// Removing a node twice is a no-op. The leader keeps a node that is the last Raft voter.
func (s *Service) RemoveNode(ctx context.Context, p Principal, nodeID string) error {
	if err := s.require(p, PermManageCluster); err != nil {
		return err
	}
	if !nodeIDPattern.MatchString(nodeID) {
		return fmt.Errorf("%w: node id must be 1-63 characters of [A-Za-z0-9._-], starting alphanumeric", ErrInvalidInput)
	}
	return s.propose(ctx, fsm.CmdRemoveNode, fsm.RemoveNode{NodeID: nodeID})
}
