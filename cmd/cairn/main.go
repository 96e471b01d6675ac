package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// usage is the top-level help; --addr's default comes from node.DefaultConfig like the flag's.
var usage = `cairn: a distributed, erasure-coded file store

Usage:
  cairn agent [flags]          run one node (flags also from CAIRN_* variables or --config-file)
  cairn dev [flags]            run a ready 3-node cluster in this process, data in a temp dir
  cairn put FILE               upload a file and print its full token
  cairn get TOKEN [-o FILE]    download a file (resumes an interrupted download)
  cairn token create|delete TOKEN
                               create a (read) token for a file, or delete one
  cairn share TOKEN|--id ID    print a read link (and a QR code on a terminal)
  cairn status [flags]         show a node's view of the cluster (--all: every node's)
  cairn members [flags]        list the cluster's members
  cairn apikey create|list|revoke
                               manage API keys (needs a key with MANAGE_API_KEYS)
  cairn keys rotate            rotate the ephemeral-token signing key (needs MANAGE_CLUSTER)
  cairn node remove ID         decommission a node: out of Raft, shards moved (needs MANAGE_CLUSTER)
  cairn debug [flags]          write a debug archive from every node (needs MANAGE_CLUSTER)
  cairn snapshot save|inspect|restore FILE
                               back up, check or restore the metadata (needs MANAGE_CLUSTER)
  cairn bench [flags]          measure file PUT/GET and token workloads against the machine's ceilings
  cairn tls ca create | cert create --server|--client
                               make a cluster CA and node or client certificates (PEM)
  cairn keyring list|install|use|remove|generate
                               rotate the gossip encryption key on every member (needs MANAGE_CLUSTER)
  cairn version                print the version

Run 'cairn <command> -h' for a command's flags. Client commands take --addr (default ` + defaultAddr() + `)
and --key, also as CAIRN_ADDR and CAIRN_KEY, and for https:// nodes --ca-cert (CAIRN_CACERT),
--client-cert and --client-key. Exit codes: 0 ok, 1 failure, 2 usage, 3 denied,
4 not found or invalid token, 5 request rejected, 6 cluster unavailable (retry later).
`

// version and revision are set at build time with -ldflags "-X main.version=... -X main.revision=..."
// (the Makefile does); revision falls back to the VCS revision go build records.
var (
	version  = "dev"
	revision = ""
)

// buildRevision is the commit this binary was built from, or "" when unknown.
func buildRevision() string {
	if revision != "" {
		return revision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		// One problem per line: a configuration can have several (node.Config.Validate).
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "cairn:", line)
		}
	}
	os.Exit(exitCodeOf(err))
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"cairn", "a command is required", false}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "agent":
		return runAgent(ctx, rest, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "put":
		return runPut(ctx, rest, stdout, stderr)
	case "get":
		return runGet(ctx, rest, stdout, stderr)
	case "token":
		return runToken(ctx, rest, stdout, stderr)
	case "share":
		return runShare(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr, false)
	case "members":
		return runStatus(ctx, rest, stdout, stderr, true)
	case "apikey":
		return runAPIKey(ctx, rest, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, stdout, stderr)
	case "node":
		return runNode(ctx, rest, stdout, stderr)
	case "debug":
		return runDebug(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "tls":
		return runTLS(rest, stdout, stderr) // tls.go
	case "keyring":
		return runKeyring(ctx, rest, stdout, stderr) // keyring.go
	case "snapshot":
		return runSnapshot(ctx, rest, stdout, stderr) // snapshot.go
	case "version", "--version", "-version":
		return runVersion(stdout) // version.go
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{"cairn", fmt.Sprintf("unknown command %q", cmd), false}
	}
}

// newLogger builds the process logger at the given level, on stderr.
func newLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
