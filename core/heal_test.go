package core_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
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
