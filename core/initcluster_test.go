package core_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/internal/coretest"
)

func TestInitCluster(t *testing.T) {
	ctx := context.Background()
	h := coretest.New(t, coretest.Options{Uninitialized: true})
	if _, ok := h.FSM.Config(); ok {
		t.Fatal("an uninitialised harness has a cluster config")
	}

	// A node without a root key joins an existing cluster: it proposes nothing.
	noKey := h.ClusterInit()
	noKey.RootKey = ""
	if err := h.Service.InitCluster(ctx, noKey); err != nil || h.Consensus.Proposals() != 0 {
		t.Fatalf("init without a root key: err %v, %d proposals, want none", err, h.Consensus.Proposals())
	}

	init := h.ClusterInit()
	if err := h.Service.InitCluster(ctx, init); err != nil {
		t.Fatal(err)
	}
	cfg, ok := h.FSM.Config()
	if !ok || cfg.Geometry != init.Geometry || cfg.BlockSize != init.BlockSize ||
		cfg.BlocksPerSegment != init.BlocksPerSegment || len(cfg.SigningKey) != 32 || cfg.ClusterID == "" {
		t.Fatalf("config after init: %+v (ok %v), want the layout of %+v with a cluster id and a 32-byte signing key", cfg, ok, init)
	}
	root, err := h.Service.Authenticate(ctx, coretest.RootKey)
	if err != nil {
		t.Fatalf("root key after init: %v", err)
	}
	for _, perm := range core.AllPermissions {
		if err := h.Service.Authorize(root, perm); err != nil {
			t.Errorf("root lacks %s: %v", perm, err)
		}
	}

	// Every later leader term calls it again: nothing changes, nothing is proposed.
	proposals := h.Consensus.Proposals()
	again := init
	again.RootKey = "another-root-key"
	if err := h.Service.InitCluster(ctx, again); err != nil || h.Consensus.Proposals() != proposals {
		t.Fatalf("second init: err %v, %d proposals, want none after %d", err, h.Consensus.Proposals(), proposals)
	}
	if after, _ := h.FSM.Config(); after.ClusterID != cfg.ClusterID {
		t.Fatalf("cluster id changed from %s to %s", cfg.ClusterID, after.ClusterID)
	}
	if _, err := h.Service.Authenticate(ctx, "another-root-key"); !errors.Is(err, core.ErrUnauthenticated) {
		t.Fatalf("second root key: %v, want ErrUnauthenticated", err)
	}
}
