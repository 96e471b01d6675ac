package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
)

const adminKeyUsage = "API key with the needed permission (e.g. the root key)"

type apiKeyOut struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
	CreatedAt   string   `json:"createdAt"`
	Key         string   `json:"key"`
}

const apiKeyGroupUsage = `Usage: cairn apikey create|list|revoke [flags]

Manage API keys (needs a key with MANAGE_API_KEYS).

  cairn apikey create --name N --permissions P1,P2   create a key; its secret is printed once
  cairn apikey list                                  list the keys (never their secrets)
  cairn apikey revoke ID                             revoke a key

Run 'cairn apikey <subcommand> -h' for its flags.
`

// runAPIKey implements `cairn apikey create|list|revoke`.
func runAPIKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return group("cairn apikey", apiKeyGroupUsage, args, stdout, stderr, map[string]func([]string) error{
		"create": func(args []string) error {
			cmd := newCommand("cairn apikey create", "", "Create an API key. Its secret is printed once and stored only as a hash.", stderr)
			cf := addClientFlags(cmd.fs, adminKeyUsage)
			name := cmd.fs.String("name", "", "a label for the key")
			perms := cmd.fs.String("permissions", "", "comma-separated permissions (VIEW_FILES, VIEW_FILE_SERVICE_SETTINGS, UPDATE_FILE_SERVICE_SETTINGS, MANAGE_API_KEYS, MANAGE_CLUSTER)")
			if _, err := cmd.parse(args, 0); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			list := []string{}
			for _, p := range strings.Split(*perms, ",") {
				if p = strings.TrimSpace(p); p != "" {
					list = append(list, p)
				}
			}
			var out apiKeyOut
			if err := c.callJSON(ctx, http.MethodPost, "/v1/apikeys", true, map[string]any{"name": *name, "permissions": list}, &out); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "id:          %s\nname:        %s\npermissions: %s\nkey:         %s\n\nThe key is shown only now; store it safely.\n",
				out.ID, out.Name, strings.Join(out.Permissions, ","), out.Key)
			return nil
		},
		"list": func(args []string) error {
			_, c, err := adminCommand("cairn apikey list", "", "List the API keys: id, name, permissions, creation time (never the secrets).", args, 0, stderr)
			if err != nil {
				return err
			}
			var out struct {
				Data []apiKeyOut `json:"data"`
			}
			if err := c.callJSON(ctx, http.MethodGet, "/v1/apikeys", true, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tPERMISSIONS\tCREATED")
			for _, k := range out.Data {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, dash(k.Name), strings.Join(k.Permissions, ","), k.CreatedAt)
			}
			return tw.Flush()
		},
		"revoke": func(args []string) error {
			pos, c, err := adminCommand("cairn apikey revoke", "<key id>", "Revoke an API key: it stops working on every node at once.", args, 1, stderr)
			if err != nil {
				return err
			}
			if err := c.callJSON(ctx, http.MethodDelete, "/v1/apikeys/"+url.PathEscape(pos[0]), true, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "revoked %s\n", pos[0])
			return nil
		},
	})
}

const keysGroupUsage = `Usage: cairn keys rotate [flags]

Rotate the signing key of ephemeral tokens (needs MANAGE_CLUSTER): every ephemeral token issued
before stops working at once. Run 'cairn keys rotate -h' for its flags.
`

// runKeys implements `cairn keys rotate`: a new signing key for ephemeral tokens.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return group("cairn keys", keysGroupUsage, args, stdout, stderr, map[string]func([]string) error{
		"rotate": func(args []string) error {
			_, c, err := adminCommand("cairn keys rotate", "", "Rotate the ephemeral-token signing key (needs MANAGE_CLUSTER).", args, 0, stderr)
			if err != nil {
				return err
			}
			if err := c.callJSON(ctx, http.MethodPost, "/v1/signing-key/rotate", true, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "signing key rotated: every ephemeral token issued before is now invalid")
			return nil
		},
	})
}

// adminCommand parses an admin subcommand that takes only the client flags (--addr, --key, TLS)
// and want positional arguments, and returns those arguments and a client for it.
func adminCommand(name, argsUsage, short string, args []string, want int, stderr io.Writer) ([]string, *apiClient, error) {
	cmd := newCommand(name, argsUsage, short, stderr)
	cf := addClientFlags(cmd.fs, adminKeyUsage)
	pos, err := cmd.parse(args, want)
	if err != nil {
		return nil, nil, err
	}
	c, err := cf.client()
	if err != nil {
		return nil, nil, err
	}
	return pos, c, nil
}
