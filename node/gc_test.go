package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"os"
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

// pastGrace is an age beyond the default grace period: tests age shards by their modification
// time instead of waiting an hour.
const pastGrace = 2 * time.Hour

func randomData(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// upload stores data through node i with the root key and returns its full token and committed
// file, as node i knows it. A 503 is retried, as the contract asks of clients: on a loaded machine
// a fresh cluster's gossip may still suspect a node for a moment.
func upload(t *testing.T, c *testcluster.Cluster, i int, data []byte) (string, fsm.File) {
	t.Helper()
	cl := *c.Client(i)
	cl.APIKey = c.RootKey
	var token string
	testutil.WaitForNil(t, 20*time.Second, "an upload through node"+fmt.Sprint(i), func() error {
		meta, resp, err := cl.Upload("f.bin", data)
		switch {
		case err == nil && resp.Status == http.StatusOK && len(meta.Tokens) > 0:
			token = meta.Tokens[0].Token
			return nil
		case err == nil && resp.Status == http.StatusServiceUnavailable:
			return fmt.Errorf("status 503: %s", resp.Body)
		}
		t.Fatalf("upload through node%d: err=%v status=%d body=%s", i, err, resp.Status, resp.Body)
		return nil
	})
	var f fsm.File
	testutil.WaitFor(t, 10*time.Second, "the upload applied on node"+fmt.Sprint(i), func() bool {
		tok, ok := c.Node(i).FSM().TokenBySecret(token)
		if ok {
			f, ok = c.Node(i).FSM().File(tok.FileID)
		}
		return ok
	})
	return token, f
}

// uploadPlaced is upload, then waits until every shard slot of the file has a node, and returns
// the file as node i then knows it. Tests that pick a shard by its slot need this: on a loaded
// machine a shard's put can time out, the segment commits degraded with that slot empty, and
// the leader's repair loop places it a pass later.
func uploadPlaced(t *testing.T, c *testcluster.Cluster, i int, data []byte) (string, fsm.File) {
	t.Helper()
	token, f := upload(t, c, i, data)
	testutil.WaitForState(t, 20*time.Second, "every shard of the upload placed", func() (bool, string) {
		f, _ = c.Node(i).FSM().File(f.ID)
		for si, seg := range f.Layout.Segments {
			if j := slices.Index(seg.Nodes, ""); j >= 0 {
				return false, fmt.Sprintf("segment %d slot %d has no node", si, j)
			}
		}
		return true, ""
	})
	return token, f
}

func mustDownload(t *testing.T, c *testcluster.Cluster, i int, token string, want []byte) {
	t.Helper()
	resp, err := c.Client(i).Download(token)
	if err != nil || resp.Status != http.StatusOK || !bytes.Equal(resp.Body, want) {
		t.Fatalf("download through node%d: err=%v status=%d, %d bytes (want %d, byte-exact)", i, err, resp.Status, len(resp.Body), len(want))
	}
}

// nodeIndex is the cluster index of the node with id.
func nodeIndex(t *testing.T, c *testcluster.Cluster, id string) int {
	t.Helper()
	for i := range c.Size() {
		if c.Config(i).NodeID == id {
			return i
		}
	}
	t.Fatalf("no node %q", id)
	return -1
}

// shardsOf lists the shards on node i's disk, sorted by name.
func shardsOf(t *testing.T, c *testcluster.Cluster, i int) []string {
	t.Helper()
	var out []string
	if err := c.Node(i).Shards().List(func(info erasure.ShardInfo) error {
		out = append(out, info.ID.String())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// ageAll sets the modification time of every shard on every running node d into the past.
func ageAll(t *testing.T, c *testcluster.Cluster, d time.Duration) {
	t.Helper()
	for _, i := range c.Running() {
		store := c.Node(i).Shards()
		for _, name := range shardsOf(t, c, i) {
			id, err := erasure.ParseShardID(name)
			if err != nil {
				t.Fatal(err)
			}
			age(t, store, id, d)
		}
	}
}

// shardFiles keeps every shard in a file of its own, for tests that age or damage shard files
// behind the store's back (volume records: testcluster's TestSmallFilesInVolumes and the
// corruption tests there).
func shardFiles(_ int, cfg *node.Config) { cfg.SmallShardMax = 0 }

func age(t *testing.T, store *erasure.ShardStore, id erasure.ShardID, d time.Duration) {
	t.Helper()
	then := time.Now().Add(-d)
	if err := os.Chtimes(store.Path(id), then, then); err != nil {
		t.Fatal(err)
	}
}

// writeShard commits a shard with arbitrary content, as an upload that never committed would leave.
func writeShard(t *testing.T, store *erasure.ShardStore, id erasure.ShardID, body []byte) {
	t.Helper()
	w, err := store.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func collect(t *testing.T, c *testcluster.Cluster, i int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := c.Node(i).CollectGarbage(ctx)
	if err != nil {
		t.Fatalf("collect garbage on node%d: %v", i, err)
	}
	return n
}

// metricValue reads one series from node i's /metrics.
func metricValue(t *testing.T, c *testcluster.Cluster, i int, series string) float64 {
	t.Helper()
	resp, err := c.Client(i).Do(http.MethodGet, "/metrics", nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("metrics of node%d: %v %d", i, err, resp.Status)
	}
	for line := range strings.SplitSeq(string(resp.Body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("node%d exposes no series %s", i, series)
	return 0
}

// TestGCRemovesShardsDeletedWhileNodeDown: a file is deleted while one of its shard holders is
// down. Back up, that node keeps the orphans within the grace period and drops them after it; no
// other shard goes, and the surviving file still reads byte-exact everywhere.
func TestGCRemovesShardsDeletedWhileNodeDown(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: shardFiles})
	keepData, goneData := randomData(1, 100_000), randomData(2, 100_000)
	keepTok, _ := upload(t, c, 0, keepData)
	goneTok, gone := upload(t, c, 0, goneData)
	const down = 2
	downID := c.Config(down).NodeID
	if !slices.Contains(gone.Layout.Segments[0].Nodes, downID) {
		t.Fatalf("node%d holds no shard of the file: layout %+v", down, gone.Layout)
	}

	orphans := func(i int) int {
		return len(slices.DeleteFunc(shardsOf(t, c, i), func(s string) bool { return !strings.HasPrefix(s, gone.ID+".") }))
	}
	c.Kill(down)
	// Once node0 knows the node is gone, the delete's own clean-up does not even try it.
	testutil.WaitFor(t, 10*time.Second, "node0 to see the killed node fail", func() bool { return c.Node(0).AliveMembers() == 2 })
	if resp, err := c.Client(0).Delete(goneTok); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("delete: %v %d %s", err, resp.Status, resp.Body)
	}
	testutil.WaitFor(t, 10*time.Second, "the delete's clean-up on the nodes that are up", func() bool {
		return orphans(0) == 0 && orphans(1) == 0
	})
	c.Restart(down)
	c.WaitReady(20 * time.Second)
	if orphans(down) == 0 {
		t.Fatal("the restarted node lost its shards of the deleted file before any GC")
	}

	if n := collect(t, c, down); n != 0 || orphans(down) == 0 {
		t.Fatalf("within the grace period GC collected %d shards, %d orphans left", n, orphans(down))
	}
	keepBefore := map[int]int{}
	for _, i := range c.Running() {
		keepBefore[i] = len(shardsOf(t, c, i)) - orphans(i)
	}
	ageAll(t, c, pastGrace)
	for _, i := range c.Running() {
		collect(t, c, i)
		if got := orphans(i); got != 0 {
			t.Errorf("node%d still holds %d shards of the deleted file", i, got)
		}
		if got := len(shardsOf(t, c, i)); got != keepBefore[i] {
			t.Errorf("node%d holds %d shards after GC, want %d", i, got, keepBefore[i])
		}
		mustDownload(t, c, i, keepTok, keepData)
	}
	if got := metricValue(t, c, down, "cairn_gc_shards_collected_total"); got < 1 {
		t.Errorf("cairn_gc_shards_collected_total on node%d = %v, want at least 1", down, got)
	}
}

// TestGCKeepsOnlyReferencedShards runs passes over old shards: every shard a committed file places
// on its node stays (files read byte-exact), stray shards go once past the grace period, and a
// node that cannot reach the leader collects nothing.
func TestGCKeepsOnlyReferencedShards(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: shardFiles})
	var tokens []string
	var datas [][]byte
	var files []fsm.File
	for i, size := range []int{1, 16 << 10, 100_000, 300_000} {
		data := randomData(int64(10+i), size)
		tok, f := upload(t, c, i%3, data)
		tokens, datas, files = append(tokens, tok), append(datas, data), append(files, f)
	}

	t.Run("referenced shards are never collected", func(t *testing.T) {
		before := map[int][]string{}
		for _, i := range c.Running() {
			before[i] = shardsOf(t, c, i)
		}
		ageAll(t, c, pastGrace)
		for range 3 {
			for _, i := range c.Running() {
				if n := collect(t, c, i); n != 0 {
					t.Fatalf("node%d collected %d referenced shards", i, n)
				}
			}
		}
		for _, i := range c.Running() {
			if got := shardsOf(t, c, i); !slices.Equal(got, before[i]) {
				t.Fatalf("node%d shards changed:\n got %v\nwant %v", i, got, before[i])
			}
			for f := range tokens {
				mustDownload(t, c, i, tokens[f], datas[f])
			}
		}
	})

	t.Run("stray shards", func(t *testing.T) {
		big := files[3]
		holder := big.Layout.Segments[0].Nodes[0]
		at := nodeIndex(t, c, holder)
		other := slices.IndexFunc(big.Layout.Segments[0].Nodes, func(id string) bool { return id != holder })
		tests := []struct {
			name string
			id   erasure.ShardID
			age  time.Duration
			kept bool
		}{
			{"failed upload within grace", erasure.ShardID{File: "FILneverCommitted01", Segment: 0, Index: 0}, 0, true},
			{"failed upload past grace", erasure.ShardID{File: "FILneverCommitted02", Segment: 0, Index: 1}, pastGrace, false},
			{"slot of another node past grace", erasure.ShardID{File: big.ID, Segment: 0, Index: other}, pastGrace, false},
			{"segment outside the layout", erasure.ShardID{File: big.ID, Segment: 99, Index: 0}, pastGrace, false},
			{"index outside the geometry", erasure.ShardID{File: big.ID, Segment: 0, Index: 7}, pastGrace, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				store := c.Node(at).Shards()
				writeShard(t, store, tt.id, []byte("stray bytes"))
				t.Cleanup(func() { _ = store.Delete(tt.id) })
				age(t, store, tt.id, tt.age)
				before := metricValue(t, c, at, "cairn_gc_bytes_collected_total")
				n := collect(t, c, at)
				_, err := store.Stat(tt.id)
				if kept := err == nil; kept != tt.kept || (n == 0) != tt.kept {
					t.Fatalf("kept=%v (stat err %v), collected %d; want kept=%v", kept, err, n, tt.kept)
				}
				wantBytes := before
				if !tt.kept {
					wantBytes += float64(len("stray bytes"))
				}
				if got := metricValue(t, c, at, "cairn_gc_bytes_collected_total"); got != wantBytes {
					t.Fatalf("cairn_gc_bytes_collected_total = %v, want %v", got, wantBytes)
				}
			})
		}
		mustDownload(t, c, at, tokens[3], datas[3])
	})

	t.Run("a node cut off from the leader collects nothing", func(t *testing.T) {
		leader := c.WaitLeader(10 * time.Second)
		cut := (leader + 1) % c.Size()
		store := c.Node(cut).Shards()
		id := erasure.ShardID{File: "FILneverCommitted03", Segment: 0, Index: 0}
		writeShard(t, store, id, []byte("stray"))
		age(t, store, id, pastGrace)
		isolateUntilRefused(t, c, cut, "GC", c.Node(cut).CollectGarbage)
		if _, err := store.Stat(id); err != nil {
			t.Fatalf("the isolated node removed a shard: %v", err)
		}
		c.Net.Heal()
		c.WaitReady(20 * time.Second)
		if n := collect(t, c, cut); n != 1 {
			t.Fatalf("after the heal GC collected %d shards, want the 1 stray", n)
		}
	})
}

// isolateUntilRefused cuts node cut off from the others (until Net.Heal or the test's end) and
// waits until pass, a GC or scrub pass that returns how much it did, refuses with ErrNotReady;
// meanwhile it must do nothing.
func isolateUntilRefused(t *testing.T, c *testcluster.Cluster, cut int, what string, pass func(context.Context) (int, error)) {
	t.Helper()
	c.Net.Isolate(c.Config(cut).NodeID)
	t.Cleanup(c.Net.Heal)
	testutil.WaitFor(t, 15*time.Second, what+" refused for want of a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := pass(ctx)
		if err == nil && n != 0 {
			t.Fatalf("the isolated node%d ran a %s pass over %d shards", cut, what, n)
		}
		return errors.Is(err, node.ErrNotReady)
	})
}

// TestGCAndScrubLoopsRun: with short intervals, the background loops remove a stray shard once it
// is past the grace period and heal a corrupted shard without any read, while the committed file
// stays intact.
func TestGCAndScrubLoopsRun(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *node.Config) {
		shardFiles(i, cfg)
		cfg.GCInterval = 50 * time.Millisecond
		cfg.GCGracePeriod = 300 * time.Millisecond
		cfg.ScrubCycle = 300 * time.Millisecond
	}})
	data := randomData(3, 100_000)
	token, f := uploadPlaced(t, c, 0, data)
	at := nodeIndex(t, c, f.Layout.Segments[0].Nodes[1])
	store := c.Node(at).Shards()
	stray := erasure.ShardID{File: "FILneverCommitted04", Segment: 0, Index: 0}
	writeShard(t, store, stray, []byte("stray"))
	id := erasure.ShardID{File: f.ID, Segment: 0, Index: 1}
	corrupt(t, store, id, flipByte)

	testutil.WaitFor(t, 10*time.Second, "the stray shard collected", func() bool {
		_, err := store.Stat(stray)
		return errors.Is(err, erasure.ErrShardNotFound)
	})
	testutil.WaitFor(t, 10*time.Second, "the corrupt shard healed by the scrub loop", func() bool {
		return verify(store, f, id) == nil
	})
	if got := metricValue(t, c, at, "cairn_scrub_checksum_failures_total"); got < 1 {
		t.Fatalf("cairn_scrub_checksum_failures_total = %v, want at least 1", got)
	}
	for _, i := range c.Running() {
		mustDownload(t, c, i, token, data)
	}
}

func TestConfigValidatesGCAndScrub(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*node.Config)
		want   string // substring of the error; "" for valid
	}{
		{"defaults", func(*node.Config) {}, ""},
		{"tiny test values", func(c *node.Config) {
			c.GCInterval, c.GCGracePeriod, c.ScrubCycle, c.ScrubRate = time.Millisecond, time.Millisecond, time.Millisecond, 1
		}, ""},
		{"zero gc interval", func(c *node.Config) { c.GCInterval = 0 }, "--gc-interval"},
		{"negative grace", func(c *node.Config) { c.GCGracePeriod = -time.Second }, "--gc-grace-period"},
		{"zero scrub cycle", func(c *node.Config) { c.ScrubCycle = 0 }, "--scrub-cycle"},
		{"zero scrub rate", func(c *node.Config) { c.ScrubRate = 0 }, "--scrub-rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.NodeID, cfg.DataDir, cfg.RootKey = "n1", t.TempDir(), "a-root-key-of-some-length"
			tt.modify(&cfg)
			err := cfg.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
	if d := node.DefaultConfig(); d.GCInterval != 10*time.Minute || d.GCGracePeriod != time.Hour ||
		d.ScrubCycle != 7*24*time.Hour || d.ScrubRate != 32<<20 {
		t.Fatalf("defaults: gc %s grace %s scrub %s at %d B/s", d.GCInterval, d.GCGracePeriod, d.ScrubCycle, d.ScrubRate)
	}
}
