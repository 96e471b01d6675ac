package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/node"
)

// agentFlags binds the agent's flags onto a node.Config: each flag writes its field directly, with
// the field's value in node.DefaultConfig as its default.
type agentFlags struct {
	cfg      node.Config
	logLevel string
	logJSON  bool
}

func newAgentFlags(fs *flag.FlagSet) *agentFlags {
	a := &agentFlags{cfg: node.DefaultConfig()}
	c := &a.cfg
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "unique, stable id of this node (required)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for Raft state and shards (required)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "public API and ops endpoints (host:port)")
	fs.StringVar(&c.ClusterAddr, "cluster-addr", c.ClusterAddr, "Raft and internal RPC, one TCP port (host:port)")
	fs.StringVar(&c.GossipAddr, "gossip-addr", c.GossipAddr, "memberlist gossip, UDP and TCP (host:port)")
	fs.StringVar(&c.AdvertiseHTTP, "advertise-http", c.AdvertiseHTTP, "HTTP address other nodes and clients should use, if not the bind address")
	fs.StringVar(&c.AdvertiseCluster, "advertise-cluster", c.AdvertiseCluster, "cluster address other nodes should use, if not the bind address")
	fs.StringVar(&c.AdvertiseGossip, "advertise-gossip", c.AdvertiseGossip, "gossip address other nodes should use, if not the bind address")
	fs.Var(listValue{&c.Join}, "join", "gossip addresses of other nodes, host:port[,host:port]")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", c.BootstrapExpect, "number of nodes that form a new cluster together (0: join an existing one)")
	fs.Var(geometryValue{&c.Erasure}, "erasure", "erasure coding K+M, fixed when the cluster bootstraps")
	fs.IntVar(&c.WriteQuorum, "write-quorum", c.WriteQuorum, "shards that must be durable before an upload commits (0: k, or k+1 when k == m)")
	fs.StringVar(&c.Zone, "zone", c.Zone, "failure zone of this node; shards spread across zones")
	sizeVar(fs, &c.MaxFileSize, "max-file-size", "largest accepted upload, e.g. 8MiB, 1GiB")
	sizeVar(fs, &c.MinFree, "min-free", "free-space reserve: below it this node takes no new shards")
	sizeVar(fs, &c.StateCacheSize, "state-cache-size", "caches of the metadata state store: pebble's block cache and, a 32nd of it (at most 1 MiB), API keys (at least 1 MiB)")
	fs.DurationVar(&c.RepairDelay, "repair-delay", c.RepairDelay, "how long a node may be unreachable before its shards are rebuilt elsewhere")
	fs.DurationVar(&c.RepairInterval, "repair-interval", c.RepairInterval, "pause between the leader's repair passes")
	sizeVar(fs, &c.RepairRate, "repair-rate", "bytes per second repair may write (0: unlimited)")
	fs.DurationVar(&c.GCInterval, "gc-interval", c.GCInterval, "pause between garbage-collection passes over this node's shards")
	fs.DurationVar(&c.GCGracePeriod, "gc-grace-period", c.GCGracePeriod, "age below which an unreferenced shard is kept (must exceed the longest upload)")
	fs.DurationVar(&c.ScrubCycle, "scrub-cycle", c.ScrubCycle, "period in which every local shard is re-verified once")
	sizeVar(fs, &c.ScrubRate, "scrub-rate", "bytes per second the scrubber may read")
	sizeVar(fs, &c.SmallShardMax, "small-shard-max", "largest shard kept in a group-committed volume file instead of a file of its own (0: none)")
	sizeVar(fs, &c.VolumeSize, "volume-size", "size at which a volume file of small shards takes no new records")
	fs.DurationVar(&c.GroupCommitWait, "group-commit-wait", c.GroupCommitWait, "longest a group commit of small shards waits for more while they arrive closer together than this (0: never; at most 100ms)")
	sizeVar(fs, &c.CompactionRate, "compaction-rate", "bytes per second volume compaction may read and write")
	fs.BoolVar(&c.CleanupDeadServers, "cleanup-dead-servers", c.CleanupDeadServers, "let the leader remove Raft servers that stay dead (autopilot)")
	fs.DurationVar(&c.DeadServerCleanupAfter, "dead-server-cleanup-after", c.DeadServerCleanupAfter, "how long a server must be dead before autopilot removes it")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "on SIGTERM/SIGINT, answer /readyz 503 for this long while still serving, before stopping (a second signal skips it)")
	fs.IntVar(&c.RaftMultiplier, "raft-multiplier", c.RaftMultiplier, "scales Raft's heartbeat, election and leader-lease timeouts (1 s, 1 s, 500 ms) together, 1-10; higher rides out CPU starvation, lower fails over faster")
	fs.DurationVar(&c.MaxClockOffset, "max-clock-offset", c.MaxClockOffset, "refuse requests and report not ready (clock_skew) while this node's clock is further than this from a majority of its peers'; 0 turns the check off")
	fs.DurationVar(&c.ShardStallTimeout, "shard-stall-timeout", c.ShardStallTimeout, "give up a peer whose shard stream makes no progress for this long (reads go on from parity, uploads with the write quorum)")
	fs.IntVar(&c.MaxConcurrentUploads, "max-concurrent-uploads", c.MaxConcurrentUploads, "uploads this node receives at once; more answer 503 with Retry-After (0: no cap)")
	fs.DurationVar(&c.UploadIdleTimeout, "upload-idle-timeout", c.UploadIdleTimeout, "abort an upload whose body sends nothing for this long (0: never)")
	fs.DurationVar(&c.DownloadStallTimeout, "download-stall-timeout", c.DownloadStallTimeout, "cut off a download whose client takes nothing (64 KiB) for this long (0: never)")
	fs.StringVar(&c.RootKey, "root-key", c.RootKey, "bootstrap API key with every permission (required with --bootstrap-expect)")
	fs.StringVar(&c.ClusterSecret, "cluster-secret", c.ClusterSecret, "secret that authenticates nodes to each other (default: derived from --root-key)")
	fs.BoolVar(&c.Recover, "recover", c.Recover, "replace the Raft configuration with DATA_DIR/raft/peers.json before starting (recovery from lost quorum; see docs/operations.md)")
	fs.BoolVar(&c.AllowAnonymousUpload, "allow-anonymous-upload", c.AllowAnonymousUpload, "accept uploads without an API key")
	fs.BoolVar(&c.EnableDebug, "enable-debug", c.EnableDebug, "serve /debug/pprof (to keys with MANAGE_CLUSTER)")
	fs.StringVar(&a.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&a.logJSON, "log-json", false, "log JSON lines instead of text")
	addAgentTLSFlags(fs, &c.TLS) // tls.go
	return a
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newCommand("cairn agent", "", "Run one cairn node. Settings come from flags, then CAIRN_* variables, then --config-file, then defaults.", stderr)
	a := newAgentFlags(cmd.fs)
	configFile := cmd.fs.String("config-file", "", "HCL or JSON file of settings (keys are the flag names with '_' for '-'); flags and CAIRN_* variables win over it")
	printConfig := cmd.fs.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	if _, err := cmd.parse(args, 0); err != nil {
		return err
	}
	sources, err := applyConfigFile(cmd, *configFile)
	if err != nil {
		return err
	}
	if *printConfig {
		if err := writeEffectiveConfig(stdout, cmd.fs, sources); err != nil {
			return err
		}
		return a.cfg.Validate()
	}
	logger, err := newLogger(stderr, a.logLevel, a.logJSON)
	if err != nil {
		return err
	}
	a.cfg.Logger = logger
	a.cfg.Version, a.cfg.Revision = version, buildRevision()
	// One node per process here, so raft's and memberlist's process-global go-metrics can be bridged
	// into this node's registry (cairn dev, with three nodes in one process, does not do this).
	a.cfg.Registry = prometheus.NewRegistry()
	if err := cluster.BridgeLibraryMetrics(a.cfg.Registry); err != nil {
		return err
	}
	// Every SIGINT/SIGTERM lands here as well as in ctx (which only the first one ends): the one
	// after the first skips the drain.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	warnUnencrypted(logger, a.cfg.TLS) // tls.go
	n, err := node.New(a.cfg)
	if err != nil {
		return err
	}
	defer reloadTLSOnSIGHUP(n)() // tls.go
	<-ctx.Done()
	logger.Info("signal received, shutting down gracefully; a second signal skips the drain", "drain", a.cfg.DrainDelay)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-sigs: // the signal that ended ctx
		case <-done:
			return
		}
		select {
		case <-sigs:
			logger.Info("second signal received, skipping the drain")
			n.SkipDrain()
		case <-done:
		}
	}()
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainDelay+a.cfg.ShutdownTimeout+5*time.Second)
	defer cancel()
	return n.Shutdown(sctx)
}
