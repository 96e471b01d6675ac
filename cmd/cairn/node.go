package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

const nodeGroupUsage = `Usage: cairn node remove <node id> [flags]

Decommission a node (needs MANAGE_CLUSTER): it leaves Raft for good and the leader rebuilds its
shards elsewhere. Run 'cairn node remove -h' for its flags.
`

// runNode implements `cairn node remove <id>`: decommission a node (DELETE /v1/nodes/{id}, needs
// MANAGE_CLUSTER).
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return group("cairn node", nodeGroupUsage, args, stdout, stderr, map[string]func([]string) error{
		"remove": func(args []string) error {
			pos, c, err := adminCommand("cairn node remove", "<node id>", "Decommission a node: out of Raft for good, its shards rebuilt elsewhere (needs MANAGE_CLUSTER).", args, 1, stderr)
			if err != nil {
				return err
			}
			if err := c.callJSON(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(pos[0]), true, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "removed %s: it leaves Raft shortly and its shards are rebuilt elsewhere\n", pos[0])
			return nil
		},
	})
}
