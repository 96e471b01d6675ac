package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const tokenGroupUsage = `Usage: cairn token create|delete <token> [flags]

Manage a file's tokens with one of its full tokens (no API key needed).

  cairn token create TOKEN [--read] [--expires 1h]   create another token for the file; prints it
  cairn token delete TOKEN [--with FULL_TOKEN]       delete a token (the file's last full token stays)

Run 'cairn token <subcommand> -h' for its flags.
`

// runToken implements `cairn token create|delete`.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return group("cairn token", tokenGroupUsage, args, stdout, stderr, map[string]func([]string) error{
		"create": func(args []string) error {
			cmd := newCommand("cairn token create", "<full token>", "Create another token for the file the full token opens, and print it.", stderr)
			cf := addClientFlags(cmd.fs, "")
			read := cmd.fs.Bool("read", false, "a read-only token (default: full access)")
			expires := cmd.fs.Duration("expires", 0, "lifetime of the token, e.g. 1h or 720h (default: no expiry)")
			pos, err := cmd.parse(args, 1)
			if err != nil {
				return err
			}
			if *expires < 0 {
				return cmd.usageErr("--expires must be positive")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			grant, err := createToken(ctx, c, pos[0], *read, *expires)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, grant.Token)
			return err
		},
		"delete": func(args []string) error {
			cmd := newCommand("cairn token delete", "<token>", "Delete a token. It is authorised by --with, a full token of the same file\n"+
				"(default: the token itself, which must then be full). The file's last full token cannot be deleted.", stderr)
			cf := addClientFlags(cmd.fs, "")
			with := cmd.fs.String("with", "", "a full token of the same file that authorises the delete (default: the token itself)")
			pos, err := cmd.parse(args, 1)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			authority := *with
			if authority == "" {
				authority = pos[0]
			}
			path := "/files/v1/" + url.PathEscape(authority) + "/tokens/" + url.PathEscape(pos[0])
			if err := c.callJSON(ctx, http.MethodDelete, path, false, nil, nil); err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, "deleted: the token stops working on every node at once")
			return err
		},
	})
}

// tokenGrant is /files/v1's answer to a token creation.
type tokenGrant struct {
	Token       string `json:"token"`
	AccessLevel string `json:"accessLevel"`
}

// createToken creates a token for the file of the full token (POST /files/v1/{token}/tokens).
func createToken(ctx context.Context, c *apiClient, fullToken string, read bool, lifetime time.Duration) (tokenGrant, error) {
	body := map[string]string{"accessLevel": "full"}
	if read {
		body["accessLevel"] = "read"
	}
	if lifetime > 0 {
		body["expiresAt"] = isoTime(time.Now().Add(lifetime))
	}
	var grant tokenGrant
	err := c.callJSON(ctx, http.MethodPost, "/files/v1/"+url.PathEscape(fullToken)+"/tokens", false, body, &grant)
	return grant, err
}

// isoTime is the ISO-8601 form both APIs accept: UTC with milliseconds.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
