package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/cairn-dev/cairn/cluster/clusterapi"
)

const keyringGroupUsage = `Usage: cairn keyring generate|list|install|use|remove [flags]

Rotate the gossip encryption key on every member (needs MANAGE_CLUSTER). Keys are shown by
fingerprint only.

  cairn keyring generate                 print a new random gossip key (base64, 32 bytes)
  cairn keyring list                     every member's gossip keys and its primary key
  cairn keyring install KEY              add a key on every member
  cairn keyring use KEY|FINGERPRINT      encrypt with it on every member (once all have it)
  cairn keyring remove KEY|FINGERPRINT   drop it from every member (once none uses it)

Run 'cairn keyring <subcommand> -h' for its flags.
`

type keyringAnswer struct {
	Data []clusterapi.MemberKeys `json:"data"`
}

// runKeyring implements `cairn keyring`: gossip key rotation through /v1/keyring.
func runKeyring(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	change := func(op, synopsis, summary string) func([]string) error {
		return func(args []string) error {
			cmd := newCommand("cairn keyring "+op, synopsis, summary, stderr)
			cf := addClientFlags(cmd.fs, "API key with MANAGE_CLUSTER")
			want := 1
			if op == "list" {
				want = 0
			}
			pos, err := cmd.parse(args, want)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out keyringAnswer
			if op == "list" {
				err = c.callJSON(ctx, http.MethodGet, "/v1/keyring", true, nil, &out)
			} else {
				err = c.callJSON(ctx, http.MethodPost, "/v1/keyring/"+op, true, map[string]string{"key": pos[0]}, &out)
			}
			if err != nil {
				return err
			}
			return printKeyrings(stdout, out.Data)
		}
	}
	return group("cairn keyring", keyringGroupUsage, args, stdout, stderr, map[string]func([]string) error{
		"generate": func(args []string) error {
			cmd := newCommand("cairn keyring generate", "", "Print a new random 32-byte gossip key, base64.", stderr)
			if _, err := cmd.parse(args, 0); err != nil {
				return err
			}
			key := make([]byte, 32)
			if _, err := rand.Read(key); err != nil {
				return err
			}
			fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
			return nil
		},
		"list":    change("list", "", "List every member's gossip keys by fingerprint, and its primary key."),
		"install": change("install", "<key>", "Install a base64 gossip key on every member it reaches."),
		"use":     change("use", "<key|fingerprint>", "Make an installed key primary on every member; refused until every member has it."),
		"remove":  change("remove", "<key|fingerprint>", "Remove a key from every member; refused while any member uses it as primary."),
	})
}

func printKeyrings(w io.Writer, keys []clusterapi.MemberKeys) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tPRIMARY\tKEYS")
	for _, mk := range keys {
		if mk.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t(%s)\n", mk.Node, mk.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", mk.Node, mk.Primary, strings.Join(mk.Keys, ","))
	}
	return tw.Flush()
}
