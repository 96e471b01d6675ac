package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/coretest"
	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestHealShardRewritesInPlace: a corrupt or missing shard is rebuilt from the others on the node
// its layout names, byte for byte what the upload wrote; the heal the scrubber calls.
func TestHealShardRewritesInPlace(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	ctx := context.Background()
	data := randomBytes(11, 6*block) // two segments
	info, secret := mustUpload(t, h, h.Root, "h.bin", data)
	f, _ := h.FSM.File(info.ID)
	for _, tc := range []struct {
		name    string
		segment int
		damage  func(node string, id erasure.ShardID)
	}{
		{"corrupt parity", 0, func(node string, id erasure.ShardID) { h.Shards.Corrupt(node, id, erasure.ShardHeaderLen+5) }},
		{"missing", 1, func(node string, id erasure.ShardID) {
			h.Shards.Remove(func(n string, got erasure.ShardID) bool { return n == node && got == id })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := erasure.ShardID{File: info.ID, Segment: tc.segment, Index: 2}
			node := f.Layout.Segments[tc.segment].Nodes[2]
			want, ok := h.Shards.Shard(node, id)
			if !ok {
				t.Fatalf("no shard %s on %s", id, node)
			}
			tc.damage(node, id)
			if got, _ := h.Shards.Shard(node, id); bytes.Equal(got, want) {
				t.Fatal("the shard was not damaged")
			}
			if err := h.Service.HealShard(ctx, info.ID, tc.segment, 2); err != nil {
				t.Fatalf("HealShard: %v", err)
			}
			if got, ok := h.Shards.Shard(node, id); !ok || !bytes.Equal(got, want) {
				t.Fatalf("after the heal the shard is present=%v and equal=%v", ok, bytes.Equal(got, want))
			}
		})
	}
	if got, err := h.Read(ctx, secret); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after the heals: %v", err)
	}
	for _, bad := range []struct {
		file           string
		segment, index int
	}{{info.ID, 9, 0}, {info.ID, 0, 3}, {"FILnoSuchFile0000000", 0, 0}} {
		if err := h.Service.HealShard(ctx, bad.file, bad.segment, bad.index); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("HealShard(%s, %d, %d) = %v, want ErrNotFound", bad.file, bad.segment, bad.index, err)
		}
	}
}

// TestReadHealsTheCorruptShardItMet: a read served around a corrupt data shard rewrites it in the
// background, so the next read needs no parity.
func TestReadHealsTheCorruptShardItMet(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	data := randomBytes(12, 3*block)
	info, secret := mustUpload(t, h, h.Root, "r.bin", data)
	f, _ := h.FSM.File(info.ID)
	id := erasure.ShardID{File: info.ID, Segment: 0, Index: 0}
	node := f.Layout.Segments[0].Nodes[0]
	want, _ := h.Shards.Shard(node, id)
	h.Shards.Corrupt(node, id, erasure.ShardHeaderLen+5)
	if got, err := h.Read(context.Background(), secret); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read around the corrupt shard: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the corrupt shard rewritten", func() bool {
		got, ok := h.Shards.Shard(node, id)
		return ok && bytes.Equal(got, want)
	})
}

// TestAbortCleansUpUnlessTheOutcomeIsUnknown: an upload that ends without a file removes its
// shards, except when its commit may still apply (the proposal's fate is unknown): those shards
// may become a file's, and only the garbage collector, which checks the committed state, may
// remove them.
func TestAbortCleansUpUnlessTheOutcomeIsUnknown(t *testing.T) {
	for _, tc := range []struct {
		name      string
		commitErr error // nil: abort before commit
		want      error
		leftForGC bool
	}{
		{"aborted before commit", nil, nil, false},
		{"commit refused", fmt.Errorf("append: %w", cluster.ErrLogStoreFull), core.ErrNoSpace, false},
		{"commit outcome unknown", errors.New("leadership lost"), core.ErrUnavailable, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := coretest.New(t, coretest.Options{})
			ctx := context.Background()
			up, err := h.Service.BeginUpload(ctx, h.Root)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := up.ReadFrom(bytes.NewReader(randomBytes(13, 5*block))); err != nil {
				t.Fatal(err)
			}
			if h.Stray() == 0 {
				t.Fatal("the upload wrote no shards")
			}
			if tc.commitErr != nil {
				h.Consensus.SetFault(func(read bool, typ fsm.CommandType) error {
					if typ == fsm.CmdCreateFile {
						return tc.commitErr
					}
					return nil
				})
				if _, _, err := up.Commit(ctx, core.FileAttrs{Name: "x"}); !errors.Is(err, tc.want) {
					t.Fatalf("Commit = %v, want %v", err, tc.want)
				}
			}
			up.Abort()
			if h.Files() != 0 {
				t.Fatal("a file exists")
			}
			if tc.leftForGC {
				if h.Stray() == 0 {
					t.Fatal("the shards of a commit that may still apply were deleted")
				}
				return
			}
			testutil.WaitFor(t, 10*time.Second, "the aborted upload's shards deleted", func() bool { return h.Stray() == 0 })
		})
	}
}

// TestReadScopeSharesOneReadIndex: the use cases one request calls under WithReadScope share a
// single read index, taken before the first read; without a scope each linearizes on its own.
func TestReadScopeSharesOneReadIndex(t *testing.T) {
	h := coretest.New(t, coretest.Options{})
	info, secret := mustUpload(t, h, h.Root, "s.bin", randomBytes(14, 10))
	var reads int
	h.Consensus.SetFault(func(read bool, _ fsm.CommandType) error {
		if read {
			reads++
		}
		return nil
	})
	request := func(ctx context.Context) {
		t.Helper()
		p, err := h.Service.Authenticate(ctx, coretest.RootKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Service.FileByID(ctx, p, info.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := h.Service.Details(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}
	request(core.WithReadScope(context.Background()))
	if reads != 1 {
		t.Fatalf("one scoped request took %d read indexes, want 1", reads)
	}
	reads = 0
	request(context.Background())
	if reads != 3 {
		t.Fatalf("three unscoped calls took %d read indexes, want 3", reads)
	}

	// A scope whose read index failed has not linearized anything: the next call tries again.
	reads = 0
	h.Consensus.SetFault(func(read bool, _ fsm.CommandType) error {
		if !read {
			return nil
		}
		if reads++; reads == 1 {
			return errors.New("no leader")
		}
		return nil
	})
	ctx := core.WithReadScope(context.Background())
	if _, err := h.Service.Authenticate(ctx, coretest.RootKey); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Authenticate = %v, want ErrUnavailable", err)
	}
	if _, _, _, err := h.Service.Details(ctx, secret); err != nil {
		t.Fatalf("the next call in the scope: %v", err)
	}
	if reads != 2 {
		t.Fatalf("%d read indexes, want the failed one and a second", reads)
	}
}
