package node_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/testcluster"
)

// Ways a stored shard goes bad.
func flipByte(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }
func truncate(b []byte) []byte { return b[:len(b)-7] }
func trailing(b []byte) []byte { return append(b, "junk"...) }

// corrupt rewrites a stored shard file in place, behind the store's back, as bit rot would.
func corrupt(t *testing.T, store *erasure.ShardStore, id erasure.ShardID, mutate func([]byte) []byte) {
	t.Helper()
	path := store.Path(id)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, mutate(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// verify checks a stored shard's frames against its file's layout.
func verify(store *erasure.ShardStore, f fsm.File, id erasure.ShardID) error {
	r, err := store.OpenFrames(id, 0, -1)
	if err != nil {
		return err
	}
	defer r.Close()
	return erasure.VerifyShard(r, id, f.Layout.Segments[id.Segment].Size, f.Layout.BlockSize, f.Layout.Geometry)
}

// TestScrubOnceHealsCorruptShard damages a stored shard that nothing reads; one scrub pass on its
// node finds exactly that shard (not the unreferenced junk beside it), counts it, and heals it.
func TestScrubOnceHealsCorruptShard(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: shardFiles})
	data := randomData(4, 300_000) // 5 segments of 64 KiB
	token, f := upload(t, c, 0, data)
	tests := []struct {
		name    string
		segment int
		mutate  func([]byte) []byte
	}{
		{"flipped byte", 0, flipByte},
		{"truncated", 2, truncate},
		{"trailing bytes", 4, trailing}, // the short last segment
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := erasure.ShardID{File: f.ID, Segment: tt.segment, Index: 2} // a parity shard: reads never touch it
			at := nodeIndex(t, c, f.Layout.Segments[tt.segment].Nodes[2])
			store := c.Node(at).Shards()
			junk := erasure.ShardID{File: "FILneverCommitted05", Segment: 0, Index: 0}
			writeShard(t, store, junk, []byte("not a shard"))
			t.Cleanup(func() { _ = store.Delete(junk) })
			corrupt(t, store, id, tt.mutate)
			if verify(store, f, id) == nil {
				t.Fatal("the damaged shard still verifies")
			}
			before := metricValue(t, c, at, "cairn_scrub_checksum_failures_total")

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			checked, bad, err := c.Node(at).ScrubOnce(ctx)
			if err != nil || bad != 1 || checked != len(f.Layout.Segments) {
				t.Fatalf("ScrubOnce = %d checked, %d corrupt, %v; want %d checked, 1 corrupt", checked, bad, err, len(f.Layout.Segments))
			}
			if got := metricValue(t, c, at, "cairn_scrub_checksum_failures_total"); got != before+1 {
				t.Fatalf("cairn_scrub_checksum_failures_total went from %v to %v, want +1", before, got)
			}
			if err := verify(store, f, id); err != nil {
				t.Fatalf("the shard does not verify after the scrub: %v", err)
			}
			if _, bad, err := c.Node(at).ScrubOnce(ctx); err != nil || bad != 0 {
				t.Fatalf("second pass: %d corrupt, %v", bad, err)
			}
			for _, i := range c.Running() {
				mustDownload(t, c, i, token, data)
			}
		})
	}
}

// TestScrubOnceRebuildsMissingShard: a shard the layout places on a node but that is gone from its
// disk is found by the scrub (no read involved) and rebuilt in place.
func TestScrubOnceRebuildsMissingShard(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	data := randomData(5, 100_000)
	token, f := upload(t, c, 0, data)
	id := erasure.ShardID{File: f.ID, Segment: 1, Index: 2} // parity: no read touches it
	at := nodeIndex(t, c, f.Layout.Segments[1].Nodes[2])
	store := c.Node(at).Shards()
	if err := store.Delete(id); err != nil {
		t.Fatal(err)
	}
	before := metricValue(t, c, at, "cairn_scrub_checksum_failures_total")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, bad, err := c.Node(at).ScrubOnce(ctx); err != nil || bad != 1 {
		t.Fatalf("ScrubOnce: %d corrupt, %v; want 1 (the missing shard)", bad, err)
	}
	if got := metricValue(t, c, at, "cairn_scrub_checksum_failures_total"); got != before+1 {
		t.Fatalf("metric went from %v to %v, want +1", before, got)
	}
	if err := verify(store, f, id); err != nil {
		t.Fatalf("the rebuilt shard does not verify: %v", err)
	}
	for i := range 3 {
		r, err := c.Client(i).Download(token)
		if err != nil || r.Status != 200 || string(r.Body) != string(data) {
			t.Fatalf("download through node%d after the rebuild: %v %d", i, err, r.Status)
		}
	}
}
