package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

const nodeUsage = "usage: cairn node remove <node id> [--addr URL] [--key KEY]"

// runNode implements `cairn node remove <id>`: decommission a node (DELETE /v1/nodes/{id}, needs
// MANAGE_CLUSTER). The id may come before or after the flags.
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "remove" {
		return errors.New(nodeUsage)
	}
	rest := args[1:]
	var id string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		id, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("cairn node remove", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() != 0 || id == "" {
		return errors.New(nodeUsage)
	}
	if err := c.call(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(id), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed %s: it leaves Raft shortly and its shards are rebuilt elsewhere\n", id)
	return nil
}
