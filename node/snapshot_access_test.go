package node_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/testcluster"
)

// TestSnapshotCallsNeedManageCluster: saving, inspecting and restoring a snapshot follow core's
// permission rule (core.Service.Authorize): no principal or the anonymous one is unauthenticated,
// one without MANAGE_CLUSTER is denied with the permission named, and a holder gets through.
func TestSnapshotCallsNeedManageCluster(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	n := c.Node(0)
	calls := []struct {
		name string
		call func(ctx context.Context, p core.Principal) error
	}{
		{"save", func(ctx context.Context, p core.Principal) error { return n.SaveSnapshot(ctx, p, io.Discard) }},
		{"inspect", func(ctx context.Context, p core.Principal) error {
			_, err := n.InspectSnapshot(ctx, p, strings.NewReader("not an archive"), false)
			return err
		}},
		{"restore", func(ctx context.Context, p core.Principal) error {
			_, err := n.RestoreSnapshot(ctx, p, strings.NewReader("not an archive"), false)
			return err
		}},
	}
	principals := []struct {
		name string
		p    core.Principal
		want error
	}{
		{"no principal", core.Principal{}, core.ErrUnauthenticated},
		{"anonymous", core.Anonymous, core.ErrUnauthenticated},
		{"without MANAGE_CLUSTER", core.Principal{ID: "ops", Permissions: []string{core.PermManageAPIKeys}}, core.ErrPermissionDenied},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, call := range calls {
		for _, pr := range principals {
			t.Run(call.name+"/"+pr.name, func(t *testing.T) {
				err := call.call(ctx, pr.p)
				if !errors.Is(err, pr.want) {
					t.Fatalf("err = %v, want %v", err, pr.want)
				}
				if mp, ok := errors.AsType[*core.MissingPermissionError](err); pr.want == core.ErrPermissionDenied && (!ok || mp.Permission != core.PermManageCluster) {
					t.Fatalf("err = %v, want a MissingPermissionError naming %s", err, core.PermManageCluster)
				}
			})
		}
	}
	// A holder passes the check: saving works, and a bad archive is refused for what it is.
	admin := core.Principal{ID: "admin", Permissions: []string{core.PermManageCluster}}
	var archive bytes.Buffer
	if err := n.SaveSnapshot(ctx, admin, &archive); err != nil || archive.Len() == 0 {
		t.Fatalf("save as MANAGE_CLUSTER: %d bytes, %v", archive.Len(), err)
	}
	if _, err := n.InspectSnapshot(ctx, admin, strings.NewReader("not an archive"), false); err == nil ||
		errors.Is(err, core.ErrPermissionDenied) || errors.Is(err, core.ErrUnauthenticated) {
		t.Fatalf("inspect of garbage as MANAGE_CLUSTER: %v, want an archive error", err)
	}
}
