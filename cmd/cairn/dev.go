package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/erasure"
	"github.com/cairn-dev/cairn/node"
)

// devNodes is the size of the dev cluster.
const devNodes = 3

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newCommand("cairn dev", "", "Run a ready 3-node cluster in this process, data in a temporary directory; print its endpoints and root key.", stderr)
	fs := cmd.fs
	defaults := node.DefaultConfig()
	_, defaultPort, _ := net.SplitHostPort(defaults.HTTPAddr)
	firstPort, _ := strconv.Atoi(defaultPort)
	basePort := fs.Int("base-port", firstPort, "HTTP port of the first node; the others follow (cluster ports at +100, gossip at +200)")
	host := fs.String("host", "127.0.0.1", "address to bind every port on")
	rootKey := fs.String("root-key", "", "root API key (default: generated and printed)")
	keep := fs.Bool("keep-data", false, "keep the temporary data directory on exit")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	anonymous := fs.Bool("allow-anonymous-upload", defaults.AllowAnonymousUpload, "accept uploads without an API key")
	enableDebug := fs.Bool("enable-debug", defaults.EnableDebug, "serve /debug/pprof (to keys with MANAGE_CLUSTER)")
	useTLS := fs.Bool("tls", false, "generate a CA and certificates in the temp dir: HTTPS, and mutual TLS between the nodes")
	size := defaults.MaxFileSize
	sizeVar(fs, &size, "max-file-size", "largest accepted upload")
	if _, err := cmd.parse(args, 0); err != nil {
		return err
	}
	if *basePort < 1 || *basePort+200+devNodes > 65535 {
		return cmd.usageErr("--base-port out of range")
	}
	logger, err := newLogger(stderr, *logLevel, false)
	if err != nil {
		return err
	}
	if *rootKey == "" {
		*rootKey = core.NewSecret()
	}
	dir, err := os.MkdirTemp("", "cairn-dev-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}

	dc := devClusterConfig{
		host: *host, basePort: *basePort, dir: dir, rootKey: *rootKey, anonymous: *anonymous,
		maxFileSize: size, enableDebug: *enableDebug, logger: logger,
	}
	if *useTLS {
		if dc.tls, err = makeDevTLS(dir); err != nil { // dev_tls.go
			return err
		}
	}
	nodes, stopAll, err := startDevCluster(dc)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cairn dev: starting %d nodes (erasure 2+1), data in %s\n", devNodes, dir)
	if err := waitDevReady(ctx, nodes, 60*time.Second); err != nil {
		_ = stopAll()
		return err
	}
	fmt.Fprintln(stdout, "\ncairn dev cluster is ready.")
	scheme := dc.scheme()
	for _, n := range nodes {
		fmt.Fprintf(stdout, "  %-5s %s://%s\n", n.ID(), scheme, n.HTTPAddr())
	}
	first, second := scheme+"://"+nodes[0].HTTPAddr(), scheme+"://"+nodes[1].HTTPAddr()
	fmt.Fprintf(stdout, "\nRoot API key: %s\n", *rootKey)
	curl, caEnv := "curl -s", ""
	if dc.tls != nil {
		fmt.Fprintf(stdout, "CA certificate: %s\nClient certificate: %s (key %s)\n", dc.tls.caFile, dc.tls.clientCert, dc.tls.clientKey)
		curl = "curl -s --cacert " + dc.tls.caFile
		caEnv = " CAIRN_CACERT=" + dc.tls.caFile
	}
	fmt.Fprintf(stdout, `
Try it:
  export CAIRN_KEY=%s CAIRN_ADDR=%s%s
  echo 'hello, cairn' > hello.txt
  # upload (prints the full token), then read it through another node:
  TOKEN=$(cairn put hello.txt)
  cairn get $TOKEN -o - --addr %s
  # or with curl:
  %s -H "Authorization: Bearer $CAIRN_KEY" -F name=hello.txt -F file=@hello.txt %s/files/v1/
  %s %s/files/v1/$TOKEN/file

Press Ctrl-C to stop.
`, *rootKey, first, caEnv, second, curl, first, curl, second)
	<-ctx.Done()
	fmt.Fprintln(stdout, "\ncairn dev: stopping")
	return stopAll()
}

// waitDevReady waits until every node reports ready, polling with a deadline.
func waitDevReady(ctx context.Context, nodes []*node.Node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var notReady error
		for _, n := range nodes {
			if err := n.Ready(); err != nil {
				notReady = fmt.Errorf("%s: %w", n.ID(), err)
				break
			}
		}
		if notReady == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready after %s: %w", timeout, notReady)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// devClusterConfig shapes an in-process 3-node cluster (cairn dev, cairn bench).
type devClusterConfig struct {
	host        string
	basePort    int // HTTP of node i at basePort+i; 0 picks free ports
	dir         string
	rootKey     string
	anonymous   bool
	maxFileSize int64
	enableDebug bool
	logger      *slog.Logger
	tls         *devTLS // dev_tls.go; nil: plain HTTP and TCP
}

// startDevCluster starts devNodes nodes in this process. stop shuts them all down gracefully.
func startDevCluster(dc devClusterConfig) (nodes []*node.Node, stop func() error, err error) {
	addr := func(offset, i int) string {
		if dc.basePort == 0 {
			return dc.host + ":0"
		}
		return dc.host + ":" + strconv.Itoa(dc.basePort+offset+i)
	}
	stop = func() error {
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				errs[i] = n.Shutdown(sctx)
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	var seeds []string
	for i := range devNodes {
		cfg := node.DefaultConfig()
		cfg.NodeID = "dev" + strconv.Itoa(i+1)
		cfg.DataDir = filepath.Join(dc.dir, cfg.NodeID)
		cfg.HTTPAddr = addr(0, i)
		cfg.ClusterAddr = addr(100, i)
		cfg.GossipAddr = addr(200, i)
		if dc.basePort != 0 {
			seeds = seeds[:0]
			for j := range devNodes {
				seeds = append(seeds, addr(200, j))
			}
		}
		cfg.Join = slices.Clone(seeds)
		cfg.BootstrapExpect = devNodes
		cfg.DrainDelay = 0 // no load balancer in front of a dev cluster
		cfg.Erasure = erasure.Geometry{Data: 2, Parity: 1}
		cfg.RootKey = dc.rootKey
		cfg.Version, cfg.Revision = version, buildRevision()
		cfg.AllowAnonymousUpload = dc.anonymous
		cfg.MaxFileSize = dc.maxFileSize
		cfg.EnableDebug = dc.enableDebug
		cfg.RejoinInterval = 2 * time.Second
		cfg.ReconcileInterval = time.Second
		cfg.Logger = dc.logger
		if dc.tls != nil {
			cfg.TLS = dc.tls.nodeConfig()
		}
		cfg.Version = version
		n, err := node.New(cfg)
		if err != nil {
			_ = stop()
			return nil, nil, fmt.Errorf("start %s: %w", cfg.NodeID, err)
		}
		nodes = append(nodes, n)
		if dc.basePort == 0 { // ports were picked by the OS: later nodes join the earlier ones
			seeds = append(seeds, n.GossipAddr())
		}
	}
	return nodes, stop, nil
}
