// Command cairn is the one binary of the cairn distributed file store: `cairn agent` runs a node,
// `cairn dev` runs a ready 3-node cluster in one process, and the other subcommands talk to a
// running cluster's HTTP API.
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
	"strings"
	"syscall"
)

const usage = `cairn: a distributed, erasure-coded file store

Usage:
  cairn agent [flags]     run one node (flags also read from CAIRN_* environment variables)
  cairn dev [flags]       run a ready 3-node cluster in this process, data in a temp dir
  cairn status [flags]    show a node's view of the cluster (GET /v1/status)
  cairn members [flags]   list the cluster's members
  cairn apikey create|list|revoke [flags]
                          manage API keys (needs a key with MANAGE_API_KEYS)
  cairn keys rotate       rotate the ephemeral-token signing key (needs MANAGE_CLUSTER)
  cairn node remove <id>  decommission a node: out of Raft, shards moved (needs MANAGE_CLUSTER)
  cairn bench [flags]     measure token creation on an in-process 3-node cluster
  cairn tls ca create | cert create --server|--client
                          make a cluster CA and node or client certificates (PEM)
  cairn keyring list|install|use|remove
                          rotate the gossip encryption key on every member (needs MANAGE_CLUSTER)
  cairn version           print the version

Run 'cairn <command> -h' for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "cairn:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("a command is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "agent":
		return runAgent(ctx, rest, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, false)
	case "members":
		return runStatus(ctx, rest, stdout, true)
	case "apikey":
		return runAPIKey(ctx, rest, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, stdout, stderr)
	case "node":
		return runNode(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "tls":
		return runTLS(rest, stdout, stderr) // tls.go
	case "keyring":
		return runKeyring(ctx, rest, stdout, stderr) // keyring.go
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "cairn", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// applyEnv gives every flag not set on the command line the value of CAIRN_<NAME> (upper case, '-'
// as '_'), so that each flag can also come from the environment.
func applyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "CAIRN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	return errors.Join(errs...)
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
