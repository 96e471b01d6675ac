package testcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/testutil"
	"github.com/cairn-dev/cairn/node"
)

// Options shape an in-process cluster. Zero values take test-friendly defaults.
type Options struct {
	Nodes            int              // default 3
	Erasure          erasure.Geometry // default 2+1
	BlockSize        int              // default 16 KiB: small, so tests cross blocks and segments
	BlocksPerSegment int              // default 4
	MaxFileSize      int64            // default 8 MiB
	// Configure adjusts node i's configuration before it starts (first start and restarts).
	Configure func(i int, cfg *node.Config)
	// ClientTLS makes the test clients speak HTTPS with this configuration (for nodes configured
	// with TLS); nil: plain HTTP.
	ClientTLS *tls.Config
}

// Cluster is an N-node cairn cluster in this process, on loopback, with temp data dirs and tight
// timings. Every inter-node socket goes through Net, so tests can partition nodes.
type Cluster struct {
	t       testing.TB
	Net     *FaultNet
	RootKey string
	opts    Options
	base    string
	logger  *slog.Logger

	mu      sync.Mutex
	configs []node.Config
	nodes   []*node.Node // nil while killed
	clients []*Client
}

// FastRaft are Raft timings for tests (Nomad's TestServer style), scaled by TestRaftMultiplier.
var FastRaft = cluster.RaftTimings{
	HeartbeatTimeout:   150 * time.Millisecond,
	ElectionTimeout:    150 * time.Millisecond,
	LeaderLeaseTimeout: 100 * time.Millisecond,
	CommitTimeout:      5 * time.Millisecond,
}

// TestRaftMultiplier scales FastRaft's failure detection (--raft-multiplier): 5 gives 750 ms
// heartbeat and election timeouts and a 500 ms lease, failover in one to two seconds. Unscaled,
// 150 ms was shorter than a vote round trip on a 2-core machine loaded by parallel -race test runs
// (load 15-20): a 5-node cluster then went through 18 terms before one candidate collected its
// votes in time, and leaders stepped down mid-test, so tests such as TestPartitionDuringUploads
// and TestDiskFull failed on the 503s in between. At 3 (a 300 ms lease) leaders still stepped down
// at load 9. CAIRN_TEST_RAFT_MULTIPLIER overrides it.
var TestRaftMultiplier = envInt("CAIRN_TEST_RAFT_MULTIPLIER", 5)

// FastGossip are memberlist timings for tests. The probe timeout leaves room for a loaded machine:
// at 50 ms, members were suspected and refuted all the time under load, and a node that saw fewer
// shard nodes alive than the write quorum answered 503.
var FastGossip = cluster.GossipTimings{
	ProbeInterval:       200 * time.Millisecond,
	ProbeTimeout:        100 * time.Millisecond,
	GossipInterval:      20 * time.Millisecond,
	SuspicionMult:       3,
	PushPullInterval:    time.Second,
	GossipToTheDeadTime: 2 * time.Second,
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// New starts the cluster and waits until every node is ready. Cleanup shuts it down.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Erasure.Data == 0 {
		opts.Erasure = erasure.Geometry{Data: 2, Parity: 1}
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = 16 << 10
	}
	if opts.BlocksPerSegment == 0 {
		opts.BlocksPerSegment = 4
	}
	if opts.MaxFileSize == 0 {
		opts.MaxFileSize = node.DefaultMaxFileSize
	}
	c := &Cluster{t: t, Net: NewFaultNet(), RootKey: "test-root-key-" + t.Name(), opts: opts,
		base: t.TempDir()}
	var closeLog func()
	c.logger, closeLog = testLogger(t)
	t.Cleanup(closeLog) // runs after shutdownAll, registered below
	for i := range opts.Nodes {
		if _, err := c.startNew(i, c.seeds()); err != nil {
			c.shutdownAll()
			t.Fatalf("start node%d: %v", i, err)
		}
	}
	// Every node re-joins the full seed list, so any of them can restart alone later.
	seeds := c.seeds()
	for i := range c.configs {
		c.configs[i].Join = seeds
		if _, err := c.nodes[i].JoinGossip(seeds); err != nil {
			t.Logf("join %v: %v", seeds, err)
		}
	}
	t.Cleanup(c.shutdownAll)
	c.WaitReady(30 * time.Second)
	// Every node runs this build, so once each has seen the others' gossip metadata the cluster
	// speaks the newest protocol, and uploads write the current shard format (erasure/DESIGN.md).
	// A test that uploads before that would write v1 shards, whose checksums are not bound to
	// their place.
	testutil.WaitForState(t, 30*time.Second, "every node speaks the newest protocol", func() (bool, string) {
		for _, i := range c.Running() {
			if p := c.Node(i).ClusterProtocol(); p != fsm.ProtocolVersion {
				return false, fmt.Sprintf("node%d sees cluster protocol %d", i, p)
			}
		}
		return true, ""
	})
	return c
}

func (c *Cluster) shutdownAll() {
	c.mu.Lock()
	nodes := append([]*node.Node(nil), c.nodes...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Kill()
		}()
	}
	wg.Wait()
}

// Size is the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.configs) }

// Node returns node i, or nil while it is killed.
func (c *Cluster) Node(i int) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Client returns an HTTP client bound to node i's public API.
func (c *Cluster) Client(i int) *Client { return c.clients[i] }

// Config returns node i's configuration (with the ports it runs on).
func (c *Cluster) Config(i int) node.Config { return c.configs[i] }

// Running lists the indexes of nodes that are up.
func (c *Cluster) Running() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i, n := range c.nodes {
		if n != nil {
			out = append(out, i)
		}
	}
	return out
}

// Kill stops node i abruptly: no leave, no leadership transfer, nothing flushed beyond what a crash
// keeps (Raft and shards fsync before they acknowledge).
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n != nil {
		n.Kill()
	}
}

// Stop shuts node i down gracefully.
func (c *Cluster) Stop(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.Shutdown(ctx)
}

// Restart starts node i again on the same data dir and addresses.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	running := c.nodes[i] != nil
	cfg := c.configs[i]
	c.mu.Unlock()
	if running {
		c.t.Fatalf("restart node%d: it is running", i)
	}
	n, err := node.New(cfg)
	if err != nil {
		c.t.Fatalf("restart node%d: %v", i, err)
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
}

// WaitLeader waits until all running nodes agree on one leader, and returns its index.
func (c *Cluster) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	testutil.WaitForState(c.t, timeout, "an agreed leader", func() (bool, string) {
		leader = -1
		var id string
		agreed := true
		views := ""
		for _, i := range c.Running() {
			n := c.Node(i)
			if n == nil {
				return false, fmt.Sprintf("node%d is starting", i)
			}
			l := n.LeaderID()
			views += fmt.Sprintf("node%d sees %q; ", i, l)
			if l == "" || (id != "" && l != id) {
				agreed = false
			}
			id = l
			if n.IsLeader() {
				leader = i
			}
		}
		return agreed && leader >= 0, views
	})
	return leader
}

// WaitReady waits until every running node reports ready.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	testutil.WaitForState(c.t, timeout, "all running nodes ready", func() (bool, string) {
		for _, i := range c.Running() {
			n := c.Node(i)
			if n == nil {
				return false, fmt.Sprintf("node%d is starting", i)
			}
			if err := n.Ready(); err != nil {
				return false, fmt.Sprintf("node%d not ready: %v", i, err)
			}
		}
		return true, ""
	})
}

// WaitAlive waits until every running node sees want alive gossip members.
func (c *Cluster) WaitAlive(want int, timeout time.Duration) {
	c.t.Helper()
	testutil.WaitForState(c.t, timeout, fmt.Sprintf("%d alive members on every running node", want), func() (bool, string) {
		for _, i := range c.Running() {
			n := c.Node(i)
			if n == nil {
				return false, fmt.Sprintf("node%d is starting", i)
			}
			if got := n.AliveMembers(); got != want {
				return false, fmt.Sprintf("node%d sees %d alive", i, got)
			}
		}
		return true, ""
	})
}

// CloseClients drops the test clients' idle keep-alive connections.
func (c *Cluster) CloseClients() {
	for _, cl := range c.clients {
		cl.HTTP.CloseIdleConnections()
	}
}

// nodeConfig is node i's configuration for its first start.
func (c *Cluster) nodeConfig(i int, seeds []string) node.Config {
	id := fmt.Sprintf("node%d", i)
	cfg := node.DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = filepath.Join(c.base, id)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ClusterAddr = "127.0.0.1:0"
	cfg.GossipAddr = "127.0.0.1:0"
	cfg.BootstrapExpect = c.opts.Nodes
	cfg.Erasure = c.opts.Erasure
	cfg.BlockSize = c.opts.BlockSize
	cfg.BlocksPerSegment = c.opts.BlocksPerSegment
	cfg.MaxFileSize = c.opts.MaxFileSize
	cfg.RootKey = c.RootKey
	cfg.RaftTimings = FastRaft
	cfg.RaftMultiplier = TestRaftMultiplier
	cfg.GossipTimings = FastGossip
	cfg.RejoinInterval = 500 * time.Millisecond
	cfg.ReconcileInterval = 200 * time.Millisecond
	cfg.MetaInterval = time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.DrainDelay = 0 // no load balancer to drain for
	// A request's whole leader wait (read index and proposal together, see clusterapi.WithWaitBudget):
	// failover takes about a second here, but a commit on the loaded test machine can take more
	// than one, and 2 s turned slow-but-healthy writes right after start into 503s.
	cfg.LeaderWait = 4 * time.Second
	cfg.ShardStallTimeout = 2 * time.Second
	cfg.ExpiryInterval = 200 * time.Millisecond
	cfg.RepairDelay = 2 * time.Second
	cfg.RepairInterval = 300 * time.Millisecond
	cfg.DeadServerCleanupAfter = 2 * time.Second
	cfg.ServerStabilizationTime = time.Second
	cfg.AutopilotInterval = 200 * time.Millisecond
	cfg.Network = c.Net.Node(id)
	cfg.Logger = c.logger
	cfg.Join = seeds
	if c.opts.Configure != nil {
		c.opts.Configure(i, &cfg)
	}
	return cfg
}

// startNew starts node i for the first time and records it.
func (c *Cluster) startNew(i int, seeds []string) (*node.Node, error) {
	cfg := c.nodeConfig(i, seeds)
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	// Pin the ports the OS chose, so a restart comes back on the same addresses.
	cfg.HTTPAddr = n.HTTPAddr()
	cfg.ClusterAddr = n.ClusterAddr()
	cfg.GossipAddr = n.GossipAddr()
	c.mu.Lock()
	c.configs = append(c.configs, cfg)
	c.nodes = append(c.nodes, n)
	cl := NewClient(n.HTTPAddr())
	if c.opts.ClientTLS != nil {
		cl.UseTLS(c.opts.ClientTLS)
	}
	c.clients = append(c.clients, cl)
	c.mu.Unlock()
	return n, nil
}

// seeds lists the gossip addresses of every node started so far.
func (c *Cluster) seeds() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, cfg := range c.configs {
		out = append(out, cfg.GossipAddr)
	}
	return out
}

// AddNode starts one more node with the same command line as the others (including
// --bootstrap-expect), joining the running cluster, and returns its index.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	i := c.Size()
	if _, err := c.startNew(i, c.seeds()); err != nil {
		c.t.Fatalf("add node%d: %v", i, err)
	}
	return i
}
