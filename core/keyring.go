package core

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

// MemberKeys is one member's gossip keyring, by key fingerprint.
type MemberKeys = clusterapi.MemberKeys

// GossipKeyring is the gossip keyring of every member; *cluster.KeyringAdmin implements it.
type GossipKeyring interface {
	List(ctx context.Context) []clusterapi.MemberKeys
	Apply(ctx context.Context, op, ref string) ([]clusterapi.MemberKeys, error)
}

// Keyring operations, for GossipKeys.
const (
	KeyringList    = "list"
	KeyringInstall = clusterapi.KeyringInstall
	KeyringUse     = clusterapi.KeyringUse
	KeyringRemove  = clusterapi.KeyringRemove
)

// GossipKeys lists (op "list") or changes (install, use, remove) the gossip keyring of every
// member. It needs MANAGE_CLUSTER. ref is a base64 key (install) or a key or its fingerprint (use,
// remove). A change that could cut a member off is refused with ErrConflict, naming the members.
func (s *Service) GossipKeys(ctx context.Context, p Principal, op, ref string) ([]MemberKeys, error) {
	if err := s.require(p, PermManageCluster); err != nil {
		return nil, err
	}
	if s.cfg.Keyring == nil {
		return nil, fmt.Errorf("%w: gossip keyring management is not available on this node", ErrUnavailable)
	}
	if op == KeyringList {
		return s.cfg.Keyring.List(ctx), nil
	}
	keys, err := s.cfg.Keyring.Apply(ctx, op, ref)
	switch {
	case errors.Is(err, clusterapi.ErrInvalidGossipKey):
		return keys, fmt.Errorf("%w: %s", ErrInvalidInput, strings.TrimPrefix(err.Error(), "cluster: "))
	case errors.Is(err, clusterapi.ErrKeyringRefused):
		return keys, fmt.Errorf("%w: %s", ErrConflict, strings.TrimPrefix(err.Error(), "cluster: "))
	}
	return keys, err
}
