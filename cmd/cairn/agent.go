package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	gmprometheus "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/node"
)

// agentFlags binds the agent's flags onto a node.Config.
type agentFlags struct {
	cfg         node.Config
	join        string
	erasureSpec string
	maxFileSize string
	minFree     string
	repairRate  string
	scrubRate   string
	logLevel    string
	logJSON     bool
}

func newAgentFlags(fs *flag.FlagSet) *agentFlags {
	a := &agentFlags{cfg: node.DefaultConfig()}
	c := &a.cfg
	fs.StringVar(&c.NodeID, "node-id", "", "unique, stable id of this node (required)")
	fs.StringVar(&c.DataDir, "data-dir", "", "directory for Raft state and shards (required)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "public API and ops endpoints (host:port)")
	fs.StringVar(&c.ClusterAddr, "cluster-addr", c.ClusterAddr, "Raft and internal RPC, one TCP port (host:port)")
	fs.StringVar(&c.GossipAddr, "gossip-addr", c.GossipAddr, "memberlist gossip, UDP and TCP (host:port)")
	fs.StringVar(&c.AdvertiseHTTP, "advertise-http", "", "HTTP address other nodes and clients should use, if not the bind address")
	fs.StringVar(&c.AdvertiseCluster, "advertise-cluster", "", "cluster address other nodes should use, if not the bind address")
	fs.StringVar(&c.AdvertiseGossip, "advertise-gossip", "", "gossip address other nodes should use, if not the bind address")
	fs.StringVar(&a.join, "join", "", "gossip addresses of other nodes, host:port[,host:port]")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", 0, "number of nodes that form a new cluster together (0: join an existing one)")
	fs.StringVar(&a.erasureSpec, "erasure", c.Erasure.String(), "erasure coding K+M, fixed when the cluster bootstraps")
	fs.IntVar(&c.WriteQuorum, "write-quorum", 0, "shards that must be durable before an upload commits (0: k, or k+1 when k == m)")
	fs.StringVar(&c.Zone, "zone", "", "failure zone of this node; shards spread across zones")
	fs.StringVar(&a.maxFileSize, "max-file-size", "8MiB", "largest accepted upload, e.g. 8MiB, 1GiB")
	fs.StringVar(&a.minFree, "min-free", "256MiB", "free-space reserve: below it this node takes no new shards")
	fs.DurationVar(&c.RepairDelay, "repair-delay", c.RepairDelay, "how long a node may be unreachable before its shards are rebuilt elsewhere")
	fs.StringVar(&a.repairRate, "repair-rate", "64MiB", "bytes per second repair may write (0: unlimited)")
	fs.DurationVar(&c.GCInterval, "gc-interval", c.GCInterval, "pause between garbage-collection passes over this node's shards")
	fs.DurationVar(&c.GCGracePeriod, "gc-grace-period", c.GCGracePeriod, "age below which an unreferenced shard is kept (must exceed the longest upload)")
	fs.DurationVar(&c.ScrubCycle, "scrub-cycle", c.ScrubCycle, "period in which every local shard is re-verified once")
	fs.StringVar(&a.scrubRate, "scrub-rate", "32MiB", "bytes per second the scrubber may read")
	fs.BoolVar(&c.CleanupDeadServers, "cleanup-dead-servers", c.CleanupDeadServers, "let the leader remove Raft servers that stay dead (autopilot)")
	fs.DurationVar(&c.DeadServerCleanupAfter, "dead-server-cleanup-after", c.DeadServerCleanupAfter, "how long a server must be dead before autopilot removes it")
	fs.StringVar(&c.RootKey, "root-key", "", "bootstrap API key with every permission (required with --bootstrap-expect)")
	fs.StringVar(&c.ClusterSecret, "cluster-secret", "", "secret that authenticates nodes to each other (default: derived from --root-key)")
	fs.BoolVar(&c.AllowAnonymousUpload, "allow-anonymous-upload", false, "accept uploads without an API key")
	fs.StringVar(&a.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&a.logJSON, "log-json", false, "log JSON lines instead of text")
	addAgentTLSFlags(fs, &c.TLS) // tls.go
	return a
}

// finish turns the string flags into config values.
func (a *agentFlags) finish() error {
	g, err := erasure.ParseGeometry(a.erasureSpec)
	if err != nil {
		return fmt.Errorf("--erasure: %w", err)
	}
	a.cfg.Erasure = g
	size, err := node.ParseSize(a.maxFileSize)
	if err != nil {
		return fmt.Errorf("--max-file-size: %w", err)
	}
	a.cfg.MaxFileSize = size
	if a.cfg.MinFree, err = node.ParseSize(a.minFree); err != nil {
		return fmt.Errorf("--min-free: %w", err)
	}
	if a.cfg.RepairRate, err = node.ParseSize(a.repairRate); err != nil {
		return fmt.Errorf("--repair-rate: %w", err)
	}
	if a.cfg.ScrubRate, err = node.ParseSize(a.scrubRate); err != nil {
		return fmt.Errorf("--scrub-rate: %w", err)
	}
	a.cfg.Join = nil
	for _, s := range strings.Split(a.join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			a.cfg.Join = append(a.cfg.Join, s)
		}
	}
	return nil
}

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("cairn agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	a := newAgentFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if err := a.finish(); err != nil {
		return err
	}
	logger, err := newLogger(stderr, a.logLevel, a.logJSON)
	if err != nil {
		return err
	}
	a.cfg.Logger = logger
	// One node per process here, so raft's and memberlist's process-global go-metrics can be bridged
	// into this node's registry (cairn dev, with three nodes in one process, does not do this).
	a.cfg.Registry = prometheus.NewRegistry()
	if err := bridgeLibraryMetrics(a.cfg.Registry); err != nil {
		return err
	}
	warnUnencrypted(logger, a.cfg.TLS) // tls.go
	n, err := node.New(a.cfg)
	if err != nil {
		return err
	}
	defer reloadTLSOnSIGHUP(n)() // tls.go
	<-ctx.Done()
	logger.Info("signal received, shutting down gracefully")
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout+5*time.Second)
	defer cancel()
	return n.Shutdown(sctx)
}

// bridgeLibraryMetrics routes hashicorp/raft's and memberlist's go-metrics into reg, under
// cairn_lib_ (e.g. cairn_lib_raft_commitTime, cairn_lib_memberlist_gossip).
func bridgeLibraryMetrics(reg prometheus.Registerer) error {
	sink, err := gmprometheus.NewPrometheusSinkFrom(gmprometheus.PrometheusOpts{
		Registerer: reg, Expiration: 5 * time.Minute, Name: "cairn_lib_sink",
	})
	if err != nil {
		return fmt.Errorf("metrics bridge: %w", err)
	}
	conf := gometrics.DefaultConfig("cairn_lib")
	conf.EnableHostname = false
	conf.EnableRuntimeMetrics = false // the Go collector already reports these
	if _, err := gometrics.NewGlobal(conf, sink); err != nil {
		return fmt.Errorf("metrics bridge: %w", err)
	}
	return nil
}
