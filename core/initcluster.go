package core

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
)

// ClusterInit is what a new cluster starts with, as its first node was configured: the erasure
// geometry and block layout every upload will use, and the root API key. Once the cluster is
// initialised these come from the replicated config, never again from a node's flags.
type ClusterInit struct {
	Geometry         erasure.Geometry
	BlockSize        int
	BlocksPerSegment int
	RootKey          string // the secret; only its hash is stored
}

// initRequestID is the same on every node, so that two leaders racing to initialise propose
// commands the fsm de-duplicates; the loser of the race sees fsm.ErrAlreadyInitialized anyway.
const initRequestID = "init-cluster"

// InitCluster gives a new cluster its configuration and root key in one initCluster command. It
// is the first leader task of every term (node wires it into the leadership loop) and returns nil
// at once when the cluster has its config already. The command carries every value Apply needs:
// a random cluster id and ephemeral-token signing key, and the root key's hash with every
// permission. A node without a root key (it joins an existing cluster) proposes nothing.
func (s *Service) InitCluster(ctx context.Context, init ClusterInit) error {
	if _, ok := s.state.Config(); ok || init.RootKey == "" {
		return nil
	}
	signingKey := make([]byte, 32)
	if _, err := rand.Read(signingKey); err != nil {
		return fmt.Errorf("draw a signing key: %w", err)
	}
	now := s.now()
	payload := fsm.InitCluster{
		Config: fsm.ClusterConfig{
			ClusterID: NewFileID()[3:], Geometry: init.Geometry, BlockSize: init.BlockSize,
			BlocksPerSegment: init.BlocksPerSegment, SigningKey: signingKey, CreatedAt: now,
		},
		RootKey: fsm.APIKey{
			ID: "root", Name: "root", Hash: fsm.HashSecret(init.RootKey),
			Permissions: AllPermissions, CreatedAt: now,
		},
	}
	cmd, err := fsm.EncodeCommand(fsm.CmdInitCluster, initRequestID, now, payload)
	if err != nil {
		return fmt.Errorf("encode %s: %w", fsm.CmdInitCluster, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.consensus.Propose(ctx, cmd); err != nil {
		if errors.Is(err, fsm.ErrAlreadyInitialized) {
			return nil
		}
		return fmt.Errorf("initialise cluster: %w", unavailable(err))
	}
	s.log.Info("cluster initialised", "erasure", init.Geometry.String())
	return nil
}
