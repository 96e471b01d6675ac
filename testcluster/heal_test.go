package testcluster

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/node"

	"github.com/cairn-dev/cairn/internal/testutil"
)

var geometry32 = erasure.Geometry{Data: 3, Parity: 2}

// fileOf returns the committed file behind a token, as node i knows it.
func fileOf(t *testing.T, c *Cluster, i int, token string) fsm.File {
	t.Helper()
	tok, ok := c.Node(i).FSM().TokenBySecret(token)
	if !ok {
		t.Fatalf("token unknown to node%d", i)
	}
	f, ok := c.Node(i).FSM().File(tok.FileID)
	if !ok {
		t.Fatalf("file %s unknown to node%d", tok.FileID, i)
	}
	return f
}

// fullyHealthy reports whether every segment of the files has all k+m shards on distinct running
// nodes, each present on that node's disk.
func fullyHealthy(t *testing.T, c *Cluster, tokens []string) bool {
	running := map[string]*node.Node{}
	for _, i := range c.Running() {
		running[c.Node(i).ID()] = c.Node(i)
	}
	observer := c.Running()[0]
	for _, tok := range tokens {
		f := fileOf(t, c, observer, tok)
		for si, seg := range f.Layout.Segments {
			seen := map[string]bool{}
			for idx, holder := range seg.Nodes {
				n := running[holder]
				if n == nil || seen[holder] {
					return false
				}
				seen[holder] = true
				if _, err := n.Shards().Stat(erasure.ShardID{File: f.ID, Segment: si, Index: idx}); err != nil {
					return false
				}
			}
		}
	}
	return true
}

// TestRepairAfterNodeLoss: on 3+2 over 6 nodes, one node dies for good; after the repair delay every
// segment again has 5 healthy shards on the 5 live nodes; then two more die at once and every file
// still reads byte-exact through any survivor.
func TestRepairAfterNodeLoss(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	c := New(t, Options{Nodes: 6, Erasure: geometry32})
	type stored struct {
		token string
		data  []byte
	}
	var files []stored
	for i := range 8 {
		data := randomData(rng.Int63(), 1000+rng.Intn(200_000))
		tok, _ := mustUpload(t, c, i%6, fmt.Sprintf("r%d", i), data)
		files = append(files, stored{tok, data})
	}
	tokens := func() []string {
		var out []string
		for _, f := range files {
			out = append(out, f.token)
		}
		return out
	}
	victim := rng.Intn(6)
	t.Logf("killing node%d for good", victim)
	c.Kill(victim)
	testutil.WaitFor(t, 30*time.Second, "every segment back to 5 healthy shards on the 5 live nodes", func() bool {
		return fullyHealthy(t, c, tokens())
	})
	dead := c.Config(victim).NodeID
	defer func() {
		if t.Failed() {
			t.Logf("members seen by node%d: %+v", c.Running()[0], c.Node(c.Running()[0]).Status().Members)
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "dead-server cleanup: "+dead+" out of Raft, 5 voters on the live nodes", func() bool {
		st := c.Node(c.Running()[0]).Status()
		voters := 0
		for _, m := range st.Members {
			if m.ID == dead && m.Suffrage != "" {
				return false
			}
			if m.Suffrage == "voter" && m.State == "alive" {
				voters++
			}
		}
		return voters == 5
	})
	survivors := c.Running()
	rng.Shuffle(len(survivors), func(i, j int) { survivors[i], survivors[j] = survivors[j], survivors[i] })
	t.Logf("killing node%d and node%d at once", survivors[0], survivors[1])
	c.Kill(survivors[0])
	c.Kill(survivors[1])
	for _, f := range files {
		for _, i := range c.Running() {
			testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("a byte-exact read through node%d", i), func() bool {
				r, err := c.Client(i).Download(f.token)
				return err == nil && r.Status == http.StatusOK && bytes.Equal(r.Body, f.data)
			})
		}
	}
}

// TestCorruptShardHealedOnRead: bytes flipped in a stored shard; the next read is byte-exact, the
// checksum-failure metric rises, and the shard is rewritten correctly.
func TestCorruptShardHealedOnRead(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) { cfg.SmallShardMax = 0 }}) // damages the shard's file
	data := randomData(61, 100_000)
	token, _ := mustUpload(t, c, 0, "c.bin", data)
	f := fileOf(t, c, 0, token)
	// Corrupt data shard 0 of segment 0 where it lives.
	holder := f.Layout.Segments[0].Nodes[0]
	var store *erasure.ShardStore
	for _, i := range c.Running() {
		if c.Node(i).ID() == holder {
			store = c.Node(i).Shards()
		}
	}
	id := erasure.ShardID{File: f.ID, Segment: 0, Index: 0}
	path := store.Path(id)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := slices.Clone(orig)
	for i := 100; i < 120; i++ {
		bad[i] ^= 0xff
	}
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	reader := (slices.Index(nodeIDs(c), holder) + 1) % 3
	before := metricValue(t, c, reader, `cairn_read_shard_faults_total{kind="corrupt"}`)
	mustDownload(t, c, reader, token, data)
	if after := metricValue(t, c, reader, `cairn_read_shard_faults_total{kind="corrupt"}`); after != before+1 {
		t.Fatalf("corrupt-fault metric went from %v to %v", before, after)
	}
	testutil.WaitFor(t, 10*time.Second, "the corrupt shard rewritten", func() bool {
		got, err := os.ReadFile(path)
		return err == nil && bytes.Equal(got, orig)
	})
	mustDownload(t, c, holder2index(c, holder), token, data)
}

func nodeIDs(c *Cluster) []string {
	var out []string
	for i := range c.Size() {
		out = append(out, c.Config(i).NodeID)
	}
	return out
}

func holder2index(c *Cluster, id string) int { return slices.Index(nodeIDs(c), id) }

// metricValue reads one series from node i's /metrics (0 when absent).
func metricValue(t *testing.T, c *Cluster, i int, series string) float64 {
	t.Helper()
	resp, err := c.Client(i).Do(http.MethodGet, "/metrics", nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(string(resp.Body), "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, series+" "), &v)
			return v
		}
	}
	return 0
}

// TestPartitionDuringUploads: two nodes are cut off from three while uploads run on both sides. The
// minority refuses writes with 503, the majority keeps working, no acknowledged upload is lost,
// and after the heal the layouts converge to full redundancy.
func TestPartitionDuringUploads(t *testing.T) {
	c := New(t, Options{Nodes: 5, Erasure: geometry32})
	// Uploads before the partition must succeed, so every node must first see all five shard
	// nodes: ready alone does not say that the gossip view is complete.
	c.WaitAlive(5, 20*time.Second)
	leader := c.WaitLeader(10 * time.Second)
	var minority, majority []string
	var minorityIdx, majorityIdx []int
	for i := range 5 {
		id := c.Config(i).NodeID
		if len(minority) < 2 && i != leader {
			minority, minorityIdx = append(minority, id), append(minorityIdx, i)
		} else {
			majority, majorityIdx = append(majority, id), append(majorityIdx, i)
		}
	}
	type acked struct {
		token string
		data  []byte
	}
	var mu sync.Mutex
	var acks []acked
	// upload returns the answer's status (0 on a transport error) and a description for failures.
	upload := func(i, seq int) (int, string) {
		data := randomData(int64(i*1000+seq), 30_000+seq*101)
		cl := *c.Client(i)
		cl.APIKey = c.RootKey
		meta, resp, err := cl.Upload(fmt.Sprintf("p%d-%d", i, seq), data)
		if err != nil {
			return 0, err.Error()
		}
		if resp.Status == http.StatusOK {
			mu.Lock()
			acks = append(acks, acked{meta.Tokens[0].Token, data})
			mu.Unlock()
		}
		return resp.Status, fmt.Sprintf("status %d body %.300s", resp.Status, resp.Body)
	}
	for seq := range 3 {
		for i := range 5 {
			if status, why := upload(i, seq); status != http.StatusOK {
				t.Fatalf("upload through node%d before the partition failed: %s", i, why)
			}
		}
	}
	c.Net.Partition(minority, majority)
	t.Logf("partitioned %v | %v", minority, majority)
	testutil.WaitForState(t, 15*time.Second, "the minority to refuse writes with 503", func() (bool, string) {
		status, why := upload(minorityIdx[0], 100)
		return status == http.StatusServiceUnavailable, why
	})
	for seq := 200; seq < 205; seq++ {
		for _, i := range majorityIdx {
			testutil.WaitForState(t, 15*time.Second, "an upload on the majority side", func() (bool, string) {
				status, why := upload(i, seq)
				return status == http.StatusOK, why
			})
		}
		if status, why := upload(minorityIdx[1], seq); status != http.StatusServiceUnavailable {
			t.Fatalf("minority accepted or failed oddly: %s", why)
		}
	}
	c.Net.Heal()
	c.WaitAlive(5, 20*time.Second)
	c.WaitReady(20 * time.Second)
	var tokens []string
	for _, a := range acks {
		tokens = append(tokens, a.token)
	}
	testutil.WaitFor(t, 30*time.Second, "layouts converged to 5 healthy shards per segment", func() bool {
		return fullyHealthy(t, c, tokens)
	})
	for _, a := range acks {
		for i := range 5 {
			mustDownload(t, c, i, a.token, a.data)
		}
	}
}

// TestKillDuringLargeUpload: a shard node dies in the middle of a large upload through another
// node. The upload either succeeds and reads byte-exact, or fails cleanly leaving no file.
func TestKillDuringLargeUpload(t *testing.T) {
	c := New(t, Options{Nodes: 6, Erasure: geometry32, MaxFileSize: 64 << 20})
	data := randomData(71, 6<<20)
	files, _ := c.Node(0).FSM().Counts()
	pr, pw := io.Pipe()
	type result struct {
		meta FileMetadata
		resp Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		cl := *c.Client(0)
		cl.APIKey = c.RootKey
		meta, resp, err := cl.UploadStream("big.bin", pr)
		done <- result{meta, resp, err}
	}()
	// Send the first half, kill a node, send the rest.
	if _, err := pw.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	c.Kill(3)
	go func() {
		pw.Write(data[len(data)/2:])
		pw.Close()
	}()
	res := <-done
	if res.err != nil {
		t.Fatalf("upload transport error: %v", res.err)
	}
	switch res.resp.Status {
	case http.StatusOK:
		for _, i := range c.Running() {
			mustDownload(t, c, i, res.meta.Tokens[0].Token, data)
		}
		t.Log("upload succeeded degraded and reads byte-exact")
	default:
		if got, _ := c.Node(0).FSM().Counts(); got != files {
			t.Fatalf("a failed upload created a file (status %d)", res.resp.Status)
		}
		t.Logf("upload failed cleanly with %d", res.resp.Status)
	}
}

// TestGossipRejoinsWhenRaftReachesAPeer: after a partition long enough that memberlist gave up
// on the cut node (here at once: GossipToTheDeadTime 1 ms) and with the periodic re-join out of
// reach (10 min), the first Raft contact after the heal re-joins gossip: every node sees every
// other alive again, long before the timer would have fired.
func TestGossipRejoinsWhenRaftReachesAPeer(t *testing.T) {
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) {
		cfg.RejoinInterval = 10 * time.Minute
		cfg.GossipTimings.GossipToTheDeadTime = time.Millisecond
	}})
	const series = "cairn_gossip_rejoins_on_raft_contact_total"
	before := 0.0
	for i := range 3 {
		before += metricValue(t, c, i, series)
	}
	c.Net.Isolate("node2")
	testutil.WaitForState(t, 30*time.Second, "node2 dead to the others, and they to it", func() (bool, string) {
		got := []int{c.Node(0).AliveMembers(), c.Node(1).AliveMembers(), c.Node(2).AliveMembers()}
		return slices.Equal(got, []int{2, 2, 1}), fmt.Sprintf("alive members seen: %v", got)
	})
	c.Net.Heal()
	c.WaitAlive(3, 20*time.Second)
	after := 0.0
	for i := range 3 {
		after += metricValue(t, c, i, series)
	}
	if after <= before {
		t.Fatalf("%s went from %v to %v: the views healed some other way", series, before, after)
	}
	c.WaitReady(20 * time.Second)
}
