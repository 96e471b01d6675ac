package node_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/testcluster"

	"github.com/cairn-dev/cairn/internal/testutil"
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
	token, f := uploadPlaced(t, c, 0, data)
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
	token, f := uploadPlaced(t, c, 0, data)
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

// TestScrubLoopResumesFromItsCheckpoint: a node restarts in the middle of a scrub pass, its
// checkpoint naming the last shard it handled. The resumed pass checks exactly the shards after
// it: damage after the checkpoint is found and healed, damage before it waits for the next pass
// (which a full ScrubOnce stands in for here).
func TestScrubLoopResumesFromItsCheckpoint(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *node.Config) {
		shardFiles(i, cfg)
		cfg.ScrubCycle = time.Hour // no pass but the resumed one during the test
	}})
	data := randomData(6, 300_000) // 5 segments: a shard of each on every node
	token, f := uploadPlaced(t, c, 0, data)
	const at = 1
	var mine []erasure.ShardID // f's shards on node at, in the order the store lists them
	for _, name := range shardsOf(t, c, at) {
		id, err := erasure.ParseShardID(name)
		if err != nil {
			t.Fatal(err)
		}
		if id.File == f.ID {
			mine = append(mine, id)
		}
	}
	slices.SortFunc(mine, func(a, b erasure.ShardID) int { return strings.Compare(erasure.StoreOrder(a), erasure.StoreOrder(b)) })
	if len(mine) != len(f.Layout.Segments) {
		t.Fatalf("node%d holds %d shards of the file, want one per segment (%d)", at, len(mine), len(f.Layout.Segments))
	}
	skipped, checked := mine[0], mine[len(mine)-1]
	after := erasure.StoreOrder(mine[1]) // the pass had handled the first two shards

	store := c.Node(at).Shards() // its files stay where they are while the node is down
	c.Kill(at)
	corrupt(t, store, skipped, flipByte)
	corrupt(t, store, checked, flipByte)
	cpPath := filepath.Join(c.Config(at).DataDir, "scrub-checkpoint.json")
	cp, err := json.Marshal(map[string]any{"started": time.Now().Add(-time.Minute), "after": after, "done": false})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cpPath, cp, 0o600); err != nil {
		t.Fatal(err)
	}
	c.Restart(at)
	c.WaitReady(20 * time.Second)

	testutil.WaitFor(t, 30*time.Second, "the resumed pass to finish", func() bool {
		var saved struct {
			Done bool `json:"done"`
		}
		b, err := os.ReadFile(cpPath)
		return err == nil && json.Unmarshal(b, &saved) == nil && saved.Done
	})
	if got, want := metricValue(t, c, at, "cairn_scrub_verified_shards_total"), float64(len(mine)-2); got != want {
		t.Fatalf("the resumed pass verified %v shards, want the %v after its checkpoint", got, want)
	}
	if got := metricValue(t, c, at, "cairn_scrub_checksum_failures_total"); got != 1 {
		t.Fatalf("cairn_scrub_checksum_failures_total = %v, want 1 (the damage after the checkpoint)", got)
	}
	store = c.Node(at).Shards()
	if err := verify(store, f, checked); err != nil {
		t.Fatalf("the damaged shard after the checkpoint was not healed: %v", err)
	}
	if verify(store, f, skipped) == nil {
		t.Fatal("the shard before the checkpoint was checked again: the pass did not resume")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if n, bad, err := c.Node(at).ScrubOnce(ctx); err != nil || bad != 1 || n != len(mine) {
		t.Fatalf("full pass: %d checked, %d corrupt, %v; want %d checked, 1 corrupt", n, bad, err, len(mine))
	}
	if err := verify(store, f, skipped); err != nil {
		t.Fatalf("the full pass did not heal the skipped shard: %v", err)
	}
	for _, i := range c.Running() {
		mustDownload(t, c, i, token, data)
	}
}

// TestScrubOnceRefusesWhenNotReady: a node cut off from the leader cannot trust its view of the
// layouts, so the scrub neither checks nor heals anything until it can.
func TestScrubOnceRefusesWhenNotReady(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: shardFiles})
	data := randomData(7, 100_000)
	_, f := uploadPlaced(t, c, 0, data)
	leader := c.WaitLeader(10 * time.Second)
	cut := (leader + 1) % c.Size()
	id := erasure.ShardID{File: f.ID, Segment: 0, Index: slices.Index(f.Layout.Segments[0].Nodes, c.Config(cut).NodeID)}
	store := c.Node(cut).Shards()
	corrupt(t, store, id, flipByte)
	isolateUntilRefused(t, c, cut, "scrub", func(ctx context.Context) (int, error) {
		checked, corrupt, err := c.Node(cut).ScrubOnce(ctx)
		return checked + corrupt, err
	})
	if verify(store, f, id) == nil {
		t.Fatal("the isolated node touched the damaged shard")
	}
	c.Net.Heal()
	// Ready needs only k alive members in a node's own gossip view (ready.go), and the shard
	// router never dials a member that view shows dead. Raft and RPC reconnect at the heal, gossip
	// a moment later (the re-join, then memberlist's refutation of the dead verdict), so the cut
	// node can be ready while one peer is still dead to it, and a rebuild then loses that peer's
	// shard ("1 of 3 shards failed", cluster/DESIGN.md "After a partition heals"). Rebuilding a
	// shard of a 2+1 file needs both other holders: wait until the cut node sees them alive.
	c.WaitAlive(c.Size(), 20*time.Second)
	c.WaitReady(20 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, bad, err := c.Node(cut).ScrubOnce(ctx); err != nil || bad != 1 {
		t.Fatalf("after the heal: %d corrupt, %v; want the damaged shard found", bad, err)
	}
	if err := verify(store, f, id); err != nil {
		t.Fatalf("not healed by the pass that found it: %v", err)
	}
}
