package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/cairn-dev/cairn/cluster"
)

const keyringUsage = `usage:
  cairn keyring generate                 print a new random gossip key (base64, 32 bytes)
  cairn keyring list [flags]             every member's gossip keys, by fingerprint
  cairn keyring install <key> [flags]    add a key on every member
  cairn keyring use <key|fingerprint>    make it the key gossip is encrypted with, on every member
  cairn keyring remove <key|fingerprint> drop a key no member uses any more
flags: --addr URL --key KEY (MANAGE_CLUSTER) --ca-cert FILE --client-cert FILE --client-key FILE`

type keyringAnswer struct {
	Data []cluster.MemberKeys `json:"data"`
}

// runKeyring implements `cairn keyring`: gossip key rotation through POST /v1/keyring/{op}.
func runKeyring(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(keyringUsage)
	}
	sub, rest := args[0], args[1:]
	if sub == "generate" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
		return nil
	}
	// The key argument may come before or after the flags.
	var ref string
	if sub != "list" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		ref, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("cairn keyring "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if ref == "" && fs.NArg() == 1 {
		ref = fs.Arg(0)
	} else if fs.NArg() != 0 {
		return errors.New(keyringUsage)
	}
	var out keyringAnswer
	switch sub {
	case "list":
		if err := c.call(ctx, http.MethodGet, "/v1/keyring", nil, &out); err != nil {
			return err
		}
	case "install", "use", "remove":
		if ref == "" {
			return errors.New(keyringUsage)
		}
		if err := c.call(ctx, http.MethodPost, "/v1/keyring/"+sub, map[string]string{"key": ref}, &out); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown keyring command %q\n%s", sub, keyringUsage)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tPRIMARY\tKEYS")
	for _, mk := range out.Data {
		if mk.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t(%s)\n", mk.Node, mk.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", mk.Node, mk.Primary, strings.Join(mk.Keys, ","))
	}
	return tw.Flush()
}
