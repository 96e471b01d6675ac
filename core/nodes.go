package core

import (
	"context"
	"fmt"
	"regexp"

	"github.com/cairn-dev/cairn/fsm"
)

// nodeIDPattern is what can name a node: node.Config's --node-id, and so every id in gossip,
// Raft and shard layouts.
var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// NodeIDRule says in words what ValidNodeID accepts, for error messages.
const NodeIDRule = "1-63 characters of [A-Za-z0-9._-], starting alphanumeric"

// ValidNodeID reports whether id can name a node.
func ValidNodeID(id string) bool { return nodeIDPattern.MatchString(id) }

// RemoveNode decommissions a node (needs MANAGE_CLUSTER). Once the command commits, the leader
// removes the node from Raft and never adds it back, and repair moves its shards away at once
// instead of after the repair delay. Any well-formed id is accepted, known or not: a node that is
// long gone may already be forgotten by gossip and Raft, and recording an unknown id is harmless.
// Removing a node twice is a no-op. The leader keeps a node that is the last Raft voter.
func (s *Service) RemoveNode(ctx context.Context, p Principal, nodeID string) error {
	if err := s.require(p, PermManageCluster); err != nil {
		return err
	}
	if !ValidNodeID(nodeID) {
		return fmt.Errorf("%w: node id must be %s", ErrInvalidInput, NodeIDRule)
	}
	return s.propose(ctx, fsm.CmdRemoveNode, fsm.RemoveNode{NodeID: nodeID})
}
