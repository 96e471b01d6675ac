package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/httpapi"
)

// Node is one running cairn member: Raft, memberlist, the shard store, internal RPC and the public
// HTTP API, wired together.
type Node struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry

	fsm       *fsm.FSM
	shards    *erasure.ShardStore
	mux       *cluster.Mux
	raft      *cluster.RaftNode
	consensus *cluster.Consensus
	protocol  *cluster.ProtocolGate // which commands the leader may propose (fsm/DESIGN.md)
	members   *cluster.Membership
	rpcServer *cluster.RPCServer
	rpcClient *cluster.RPCClient
	service   *core.Service
	autopilot *cluster.Autopilot // node/autopilot.go
	// leadership runs the leader tasks (initialisation, reconcile, autopilot, expiry, repair).
	leadership *cluster.Leadership
	tls        *nodeTLS // node/tls.go; nil without TLS

	httpLn      net.Listener
	httpServer  *http.Server
	clusterAddr string
	httpAddr    string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	started      time.Time
	healthMu     sync.Mutex // guards the cached storage health of /v1/status
	health       core.SegmentHealth
	healthAt     time.Time
	announceNow  chan struct{}
	bootstrapped atomic.Bool
	freeBytes    atomic.Uint64
	putFree      *freeSpace    // the put path's cached free bytes
	scrub        scrubProgress // node/metrics.go
	stopping     atomic.Bool
	restoring    atomic.Bool   // a snapshot restore runs on this leader (snapshot.go)
	draining     atomic.Bool   // shutdown requested: not ready, serving on for DrainDelay
	drainNow     chan struct{} // closed by SkipDrain
	skipOnce     sync.Once
	leaving      atomic.Bool  // announced before a graceful leave
	readyAt      atomic.Int64 // unix ns of the last ready check that passed, 0 after a failure
	applyWatch   applyWatch   // the oldest confirmed commit index not applied yet (readiness)
	stopOnce     sync.Once
	stopErr      error
}

// New starts a node: it binds every port, opens the data dir, starts Raft and memberlist, and
// serves. It returns once the node is serving; joining a cluster continues in the background.
func New(cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Network == nil {
		cfg.Network = cluster.OSNetwork{}
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	// Certificates first: a bad file must fail the start before any port is bound.
	tlsState, err := loadTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	// n is not the named result: every failure below returns (nil, err), and the deferred cleanup
	// and the goroutines already started must still see the node.
	n := &Node{cfg: cfg, log: log, reg: cfg.Registry, ctx: ctx, cancel: cancel, started: time.Now(),
		announceNow: make(chan struct{}, 1), drainNow: make(chan struct{}), tls: tlsState}
	// Anything opened before a failure is closed again.
	var closers []func() error
	defer func() {
		if err != nil {
			cancel()
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
			n.wg.Wait()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	if err := checkWritable(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	if n.shards, err = erasure.OpenShardStoreWith(filepath.Join(cfg.DataDir, "shards"), cfg.storeOptions(log.With("component", "shards"))); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	closers = append(closers, func() error { n.shards.Close(); return nil })
	n.putFree = newFreeSpace(n.shards.FreeBytes)
	// The state store lives beside the raft dir (DATA_DIR/raft): DATA_DIR/fsm (a pebble store).
	if n.fsm, err = fsm.New(filepath.Join(cfg.DataDir, "fsm"), fsm.Options{Logger: log.With("component", "fsm"), CacheBytes: cfg.StateCacheSize}); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	closers = append(closers, n.fsm.Close)

	// Bind the public port first: its address goes into the gossip metadata from the start.
	n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen --http-addr %s: %w", cfg.HTTPAddr, err)
	}
	closers = append(closers, n.httpLn.Close)
	n.httpAddr = advertised(cfg.AdvertiseHTTP, n.httpLn.Addr())

	// Cluster port: Raft and internal RPC on one authenticated, multiplexed listener.
	clusterSecurity := n.tls.clusterSecurity(cfg.derivedSecret("cluster handshake"))
	ln, err := cfg.Network.Listen("tcp", cfg.ClusterAddr)
	if err != nil {
		return nil, fmt.Errorf("listen --cluster-addr %s: %w", cfg.ClusterAddr, err)
	}
	n.mux = cluster.NewMux(ln, clusterSecurity, log.With("component", "mux"))
	closers = append(closers, n.mux.Close)
	n.clusterAddr = advertised(cfg.AdvertiseCluster, ln.Addr())
	n.spawn(func() { _ = n.mux.Serve() })

	advAddr, err := net.ResolveTCPAddr("tcp", n.clusterAddr)
	if err != nil {
		return nil, fmt.Errorf("advertise cluster address %s: %w", n.clusterAddr, err)
	}
	layer := cluster.NewRaftLayer(n.mux.Listener(cluster.ConnRaft), advAddr, cfg.Network, clusterSecurity)
	n.raft, err = cluster.StartRaft(cluster.RaftOptions{
		NodeID: cfg.NodeID, DataDir: cfg.DataDir, Layer: layer, FSM: cluster.NewRaftFSM(n.fsm), Timings: cfg.raftTimings(),
		SnapshotThreshold: cfg.SnapshotThreshold, TrailingLogs: cfg.TrailingLogs, SnapshotInterval: cfg.SnapshotInterval,
		Recover: cfg.Recover, Logger: log.With("component", "raft"),
	})
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	closers = append(closers, n.raft.Shutdown)
	n.bootstrapped.Store(n.raft.HadState)

	// Gossip starts before consensus, which needs it for the protocol gate; it joins nobody until
	// Start below.
	n.refreshFreeBytes()
	n.members, err = cluster.NewMembership(cluster.MembershipConfig{
		NodeID: cfg.NodeID, BindAddr: cfg.GossipAddr, AdvertiseAddr: cfg.AdvertiseGossip,
		Network: cfg.Network, SecretKey: cfg.derivedSecret("gossip encryption"),
		KeyringFile: filepath.Join(cfg.DataDir, gossipKeyringFile), // node/tls.go
		Seeds:       cfg.Join, PeersFile: filepath.Join(cfg.DataDir, "gossip-peers.json"), KnownPeers: n.raftPeersGossip,
		RejoinInterval: cfg.RejoinInterval, Timings: cfg.GossipTimings,
		Meta: n.meta, Now: cfg.Clock, ClockVoters: n.raftVoters, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("listen --gossip-addr %s: %w", cfg.GossipAddr, err)
	}
	closers = append(closers, n.members.Shutdown)
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "cairn_gossip_bad_packets_total",
		Help: "Gossip packets and streams refused as undecryptable or malformed (their log lines are rate-limited).",
	}, func() float64 { return float64(n.members.BadPackets()) }))
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "cairn_gossip_refused_streams_total",
		Help: "Inbound gossip TCP streams closed at once because as many as the transport allows were open (a flood of connections to the gossip port).",
	}, func() float64 { return float64(n.members.RefusedStreams()) }))
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cairn_gossip_unverified_members",
		Help: "Members gossip shows alive that have not proven their id over the authenticated cluster port; they take no shards and no Raft place until they do.",
	}, func() float64 { return float64(n.UnverifiedMembers()) }))
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "cairn_gossip_rejoins_on_raft_contact_total",
		Help: "Gossip re-joins started at once because Raft reached a peer that this node's gossip view did not show alive (after a partition healed).",
	}, func() float64 { return float64(n.members.RaftRejoins()) }))

	n.rpcClient = cluster.NewRPCClient(cfg.Network, clusterSecurity, log.With("component", "rpc"))
	closers = append(closers, func() error { n.rpcClient.Close(); return nil })
	// A member counts only once it proved its id over the cluster port: the gossip key alone does
	// not make a Raft server or a shard holder (membership.go, Member.Verified).
	n.members.SetVerifier(n.verifyMember)
	n.consensus = cluster.NewConsensus(cfg.NodeID, n.raft.Raft, n.fsm, n.rpcClient, log.With("component", "consensus"))
	n.consensus.LeaderWait = cfg.leaderWait()
	n.protocol = cluster.NewProtocolGate(cfg.NodeID, n.raft, n.members)
	n.consensus.Gate = n.protocol
	n.consensus.LocalLogErr = n.raft.LogWriteErr
	n.consensus.ClockSkew = n.clockSkew
	n.consensus.MaxClockAhead = cfg.MaxClockOffset
	n.consensus.Now = cfg.Clock
	closers = append(closers, func() error { n.consensus.Close(); return nil })
	n.rpcServer = cluster.NewRPCServer(n.local(), n.consensus.LeaderEndpoint(), log.With("component", "rpc"))
	n.rpcServer.ServeIdentity(cfg.NodeID)
	n.rpcServer.ServeSnapshots(snapshotEndpoint{n}) // snapshot.go
	rpcLn := n.mux.Listener(cluster.ConnRPC)
	n.spawn(func() { _ = n.rpcServer.Serve(rpcLn) })
	closers = append(closers, func() error { return n.rpcServer.Shutdown(context.Background()) })

	n.rpcServer.ServeKeyring(n.members)

	metrics := core.NewMetrics(n.reg)
	n.service = core.NewService(core.Config{
		NodeID: cfg.NodeID, MaxFileSize: cfg.MaxFileSize, AllowAnonymousUpload: cfg.AllowAnonymousUpload,
		WriteQuorum: cfg.WriteQuorum, MaxUploadAge: cfg.GCGracePeriod / 2, Logger: log.With("component", "core"),
		ShardStallTimeout: cfg.ShardStallTimeout, Now: cfg.Clock,
		ShardFormat: func() uint16 {
			if n.protocol.ClusterProtocol() >= fsm.ProtocolShardFormatV2 {
				return erasure.FormatV2
			}
			return erasure.FormatV1
		},
		TokenAuthority: func() bool { return n.protocol.ClusterProtocol() >= fsm.ProtocolTokenAuthority },
		Keyring:        &cluster.KeyringAdmin{Self: cfg.NodeID, Members: n.members, RPC: n.rpcClient, RaftServers: n.raftServerIDs},
	}, n.fsm, n.consensus, &shardRouter{node: n}, placer{n}, metrics)
	closers = append(closers, func() error { n.service.Close(); return nil })
	n.registerMetrics()
	n.registerTLSMetrics() // node/tls.go

	handler, err := httpapi.New(httpapi.Config{
		FilesV1: n.service, Enmeshed: n.service, Admin: n.service, Snapshots: n, Ops: ops{n}, Registry: n.reg,
		Logger:               log.With("component", "http"),
		MaxConcurrentUploads: cfg.MaxConcurrentUploads, UploadIdleTimeout: cfg.UploadIdleTimeout,
		DownloadStallTimeout: cfg.DownloadStallTimeout,
		Debug:                debugView{n}, EnablePprof: cfg.EnableDebug,
	})
	if err != nil {
		return nil, fmt.Errorf("http api: %w", err)
	}
	n.httpServer = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelDebug),
	}
	serve := n.httpServer.Serve
	if n.tls != nil {
		n.httpServer.TLSConfig = n.tls.httpConfig()
		serve = func(ln net.Listener) error { return n.httpServer.ServeTLS(ln, "", "") }
		n.spawn(n.watchTLS)
	}
	n.spawn(func() {
		if err := serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	})

	// Membership drives Raft: bootstrap on first start, reconcile on the leader, re-announce state.
	n.members.Start()
	n.members.RejoinWhenRaftReaches(n.raft.Raft)
	(&cluster.Bootstrapper{
		Node: n.raft, Members: n.members, Self: cfg.NodeID, Expect: cfg.BootstrapExpect,
		MaxVoters: cfg.MaxVoters, Logger: log.With("component", "bootstrap"),
	}).Run(ctx, &n.wg)
	// Every leader task runs under the one leadership loop: after the term's barrier, under a
	// context the end of the term cancels, and the next term starts only once they all returned.
	n.autopilot = n.newAutopilot() // node/autopilot.go
	reconciler := &cluster.Reconciler{
		Node: n.raft, Members: n.members, Self: cfg.NodeID, MaxVoters: cfg.MaxVoters,
		MinQuorum: max(cfg.BootstrapExpect, 1), Interval: cfg.ReconcileInterval,
		Removed: removedNodes{n.fsm}, // node/autopilot.go
		Logger:  log.With("component", "reconcile"),
	}
	repair := core.RepairConfig{Delay: cfg.RepairDelay, BytesPerSecond: cfg.RepairRate, Interval: cfg.RepairInterval}
	n.leadership = &cluster.Leadership{
		Raft: n.raft.Raft, Barrier: n.consensus.Barrier, Logger: log.With("component", "leadership"),
		Tasks: []cluster.LeaderTask{
			{Name: "initialise cluster", Run: func(ctx context.Context) {
				if err := n.service.InitCluster(ctx, core.ClusterInit{
					Geometry: cfg.Erasure, BlockSize: cfg.BlockSize, BlocksPerSegment: cfg.BlocksPerSegment, RootKey: cfg.RootKey,
				}); err != nil {
					log.Error("cluster init failed", "err", err)
				}
			}},
			{Name: "reconcile membership", Run: reconciler.Run},
			{Name: "autopilot", Run: n.autopilot.Run},
			{Name: "expiry", Run: func(ctx context.Context) {
				// Expire commands are judged at this node's time: not before its clock is known good.
				if n.waitClockConfirmed(ctx) {
					n.service.RunExpiry(ctx, cfg.ExpiryInterval)
				}
			}},
			{Name: "repair", Run: func(ctx context.Context) { n.service.RunRepair(ctx, repair, placer{n}) }},
		},
	}
	n.leadership.Run(ctx, &n.wg)
	n.spawn(n.announceLoop)
	n.spawn(n.watchRemoval) // node/ready.go
	n.spawn(n.clockLoop)    // node/clock.go
	n.spawn(n.gcLoop)       // node/gc.go
	n.spawn(n.scrubLoop)    // node/scrub.go
	log.Info("node started", "http", n.httpAddr, "cluster", n.clusterAddr, "gossip", n.members.LocalGossipAddr(),
		"erasure", cfg.Erasure.String(), "restarted", n.raft.HadState)
	return n, nil
}

// advertised picks the configured advertise address, else the bound one.
func advertised(configured string, bound net.Addr) string {
	if configured != "" {
		return configured
	}
	return bound.String()
}

func (n *Node) spawn(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// meta is what memberlist announces about this node.
func (n *Node) meta() cluster.NodeMeta {
	return cluster.NodeMeta{
		ID: n.cfg.NodeID, ClusterAddr: n.clusterAddr, HTTPAddr: n.httpAddr, Zone: n.cfg.Zone,
		FreeBytes: n.freeBytes.Load(), AcceptsShards: !n.stopping.Load() && !n.draining.Load() && !n.diskStalled(),
		Full:            belowReserve(n.freeBytes.Load(), n.cfg.MinFree),
		BootstrapExpect: n.cfg.BootstrapExpect, Bootstrapped: n.bootstrapped.Load(),
		Leaving:     n.leaving.Load(),
		ProtocolMin: fsm.MinProtocolVersion, ProtocolMax: fsm.ProtocolVersion,
		Version: announcedVersion(n.cfg.Version),
	}
}

// diskStalled is true while a write to this node's Raft log has been in flight for longer than
// the stall timeout: the data dir's disk hangs, so this node's shard writes would hang too, and
// every upload placing a shard here would wait for --shard-stall-timeout (twice) before giving up
// on it. The node announces that it takes no shards until the write returns.
func (n *Node) diskStalled() bool {
	return n.raft != nil && n.raft.LogWriteStall() >= n.raft.LogStallTimeout() // nil: Raft not started yet
}

func (n *Node) refreshFreeBytes() {
	if free, err := n.shards.FreeBytes(); err == nil {
		n.freeBytes.Store(free)
	}
}

// local is this node's shard store as the RPC server and local puts see it.
func (n *Node) local() localShards {
	return localShards{store: n.shards, free: n.putFree, minFree: n.cfg.MinFree, onFull: n.announceSoon}
}

// announceSoon asks the announce loop to refresh free space and re-announce now.
func (n *Node) announceSoon() {
	select {
	case n.announceNow <- struct{}{}:
	default:
	}
}

// announceLoop re-announces this node's metadata when it changes: free space, and whether it
// belongs to a Raft cluster yet.
func (n *Node) announceLoop() {
	interval := n.cfg.MetaInterval
	tick := time.NewTicker(min(interval, time.Second))
	defer tick.Stop()
	last := n.meta()
	lastFull := time.Now()
	for {
		forced := false
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		case <-n.announceNow:
			forced = true
		}
		if n.stopping.Load() {
			return // shutdown announces the final state itself
		}
		if !n.bootstrapped.Load() && len(n.raft.Servers()) > 0 {
			n.bootstrapped.Store(true)
		}
		if forced || time.Since(lastFull) >= interval {
			n.refreshFreeBytes()
			lastFull = time.Now()
		}
		if cur := n.meta(); cur != last {
			// Short: the next tick retries, and shutdown must never wait on this.
			if err := n.members.UpdateMeta(time.Second); err != nil {
				n.log.Debug("announce metadata failed", "err", err)
				continue
			}
			last = cur
		}
	}
}

// ClusterProtocol is the newest fsm protocol version every Raft server speaks, as this node's
// gossip view tells.
func (n *Node) ClusterProtocol() int { return n.protocol.ClusterProtocol() }

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// HTTPAddr is the address the public API listens on.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// ClusterAddr is the advertised Raft/RPC address.
func (n *Node) ClusterAddr() string { return n.clusterAddr }

// GossipAddr is the advertised memberlist address.
func (n *Node) GossipAddr() string { return n.members.LocalGossipAddr() }

// Shards exposes the local shard store (tests inspect and corrupt shards through it).
func (n *Node) Shards() *erasure.ShardStore { return n.shards }

// FSM exposes the local replicated state, read-only by convention.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node leads Raft now.
func (n *Node) IsLeader() bool { return n.raft.Raft.State() == raft.Leader }

// LeaderID is the id of the leader this node knows, or "".
func (n *Node) LeaderID() string {
	_, id := n.raft.Raft.LeaderWithID()
	return string(id)
}

// Shutdown stops the node gracefully. First it drains: /readyz answers 503 and peers stop placing
// shards here, while every request is still served, for DrainDelay (or until SkipDrain), so that a
// load balancer takes the node out of rotation by its health check. Then it stops accepting and
// lets in-flight requests finish, hands leadership over if it leads, leaves gossip, and stops
// everything.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.shutdown(ctx, true) })
	return n.stopErr
}

// SkipDrain ends a running (or later) drain at once: the operator's second signal.
func (n *Node) SkipDrain() {
	n.skipOnce.Do(func() { close(n.drainNow) })
}

// Kill stops the node abruptly, as a crash would: no leadership transfer, no gossip leave, no
// waiting for requests. Only what was already fsynced survives.
func (n *Node) Kill() {
	n.stopOnce.Do(func() { n.stopErr = n.shutdown(context.Background(), false) })
}

// drain reports not ready and takes no new shards, while serving on, for DrainDelay.
func (n *Node) drain(ctx context.Context) {
	n.draining.Store(true)
	_ = n.members.UpdateMeta(time.Second)
	if n.cfg.DrainDelay <= 0 {
		return
	}
	n.log.Info("draining: /readyz answers 503 while requests are still served", "for", n.cfg.DrainDelay)
	t := time.NewTimer(n.cfg.DrainDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-n.drainNow:
		n.log.Info("drain cut short")
	case <-ctx.Done():
	}
}

func (n *Node) shutdown(ctx context.Context, graceful bool) error {
	if graceful {
		n.drain(ctx)
	}
	n.stopping.Store(true)
	var errs []error
	if graceful {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, n.cfg.ShutdownTimeout)
			defer cancel()
		}
		// Stop accepting and let in-flight requests finish.
		if err := n.httpServer.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain http: %w", err))
		}
		if n.IsLeader() && len(n.raft.Servers()) > 1 {
			// Stops this node's leader tasks first, so the next leader never runs beside them.
			if err := n.leadership.Transfer(); err != nil {
				n.log.Warn("leadership transfer failed", "err", err)
			}
		}
		n.leaving.Store(true)
		if err := n.members.UpdateMeta(time.Second); err != nil {
			n.log.Warn("announcing the leave failed; peers will see this node as failed", "err", err)
		}
		if err := n.members.Leave(2 * time.Second); err != nil {
			// Routine when every peer stops at once; the others then see this node fail instead.
			n.log.Info("gossip leave not acknowledged", "err", err)
		}
	} else {
		_ = n.httpServer.Close()
	}
	n.cancel()
	n.service.Close()
	if graceful {
		errs = append(errs, n.rpcServer.Shutdown(ctx))
	} else {
		rctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = n.rpcServer.Shutdown(rctx)
	}
	n.consensus.Close()
	errs = append(errs, n.members.Shutdown())
	errs = append(errs, n.raft.Shutdown())
	n.rpcClient.Close()
	_ = n.mux.Close()
	n.wg.Wait()
	// Raft has stopped: nothing applies or restores any more, and the node's tasks have ended.
	errs = append(errs, n.fsm.Close())
	n.shards.Close() // after the loops; a request still writing gets ErrStoreClosed
	n.log.Info("node stopped", "graceful", graceful)
	return errors.Join(errs...)
}

// raftPeersGossip returns the last known gossip addresses of the servers in the Raft
// configuration, so that a restarted node joins them at once.
func (n *Node) raftPeersGossip() []string {
	var out []string
	for _, s := range n.raft.Servers() {
		if string(s.ID) == n.cfg.NodeID {
			continue
		}
		if addr, ok := n.members.GossipAddrOf(string(s.ID)); ok {
			out = append(out, addr)
		}
	}
	return out
}

// checkWritable proves dir takes new files, so an unwritable data dir fails the start with its
// own error instead of a later, vaguer one from the Raft store.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// JoinGossip contacts more gossip addresses now (the configured seeds are re-joined periodically
// anyway).
func (n *Node) JoinGossip(addrs []string) (int, error) { return n.members.Join(addrs) }

// verifyMember proves member id at its cluster address (cluster.Membership.SetVerifier). A peer
// of an older build, which cannot say its id, is taken only as the Raft server already at that
// address: that is who answered there before the upgrade, while any other id naming the address
// (a gossip-key holder pointing at a real old node) proves nothing. An old-build node that joins
// anew waits for its upgrade.
func (n *Node) verifyMember(ctx context.Context, id, addr string) error {
	err := n.rpcClient.VerifyMember(ctx, id, addr)
	if !errors.Is(err, cluster.ErrIdentityUnknown) {
		return err
	}
	for _, s := range n.raft.Servers() {
		if string(s.ID) == id && string(s.Address) == addr {
			n.log.Info("taking an older peer that cannot say its id as the raft server at its address", "member", id, "addr", addr)
			return nil
		}
	}
	return fmt.Errorf("%w, and no raft server %s is at %s", err, id, addr)
}

// raftServerIDs lists the ids of the Raft configuration's servers as this node knows them.
func (n *Node) raftServerIDs() []string {
	var ids []string
	for _, s := range n.raft.Servers() {
		ids = append(ids, string(s.ID))
	}
	return ids
}

// UnverifiedMembers counts the members gossip sees alive that have not proven their id over the
// cluster port (cluster.Member.Verified): they take no shards and no Raft place.
func (n *Node) UnverifiedMembers() int {
	unverified := 0
	for _, m := range n.members.Members() {
		if m.State == cluster.StateAlive && !m.Verified {
			unverified++
		}
	}
	return unverified
}

// AliveMembers counts the members gossip sees alive, this node included.
func (n *Node) AliveMembers() int {
	alive := 0
	for _, m := range n.members.Members() {
		if m.State == cluster.StateAlive {
			alive++
		}
	}
	return alive
}

// RaftStat returns one of raft's Stats() values (e.g. "last_snapshot_index").
func (n *Node) RaftStat(key string) string { return n.raft.Raft.Stats()[key] }
