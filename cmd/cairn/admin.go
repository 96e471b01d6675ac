package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// adminClient calls a node's administration routes with an API key.
type adminClient struct {
	addr string
	key  string
	tls  *clientTLSFlags // httpclient.go
}

// adminFlags adds --addr and --key (CAIRN_ADDR, CAIRN_KEY) and the client TLS flags to fs.
func adminFlags(fs *flag.FlagSet) *adminClient {
	c := &adminClient{}
	fs.StringVar(&c.addr, "addr", "http://127.0.0.1:8081", "HTTP(S) address of any node")
	fs.StringVar(&c.key, "key", "", "API key with the needed permission (e.g. the root key)")
	c.tls = addClientTLSFlags(fs)
	return c
}

// call sends a JSON request and decodes a JSON answer into out (when non-nil). A non-2xx answer
// becomes an error quoting the API's message.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	if c.key == "" {
		return errors.New("--key (or CAIRN_KEY) is required")
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.addr, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client, err := c.tls.httpClient(0)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var apiErr struct {
			Code    int    `json:"code"`
			Name    string `json:"name"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &apiErr) == nil && apiErr.Name != "" {
			return fmt.Errorf("%s: %s (%s, code %d)", resp.Status, apiErr.Message, apiErr.Name, apiErr.Code)
		}
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type apiKeyOut struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Permissions []string `json:"permissions"`
	CreatedAt   string   `json:"createdAt"`
	Key         string   `json:"key"`
}

// runAPIKey implements `cairn apikey create|list|revoke`.
func runAPIKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: cairn apikey create|list|revoke [flags]")
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("cairn apikey "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	name := fs.String("name", "", "create: a label for the key")
	perms := fs.String("permissions", "", "create: comma-separated permissions (VIEW_FILES, VIEW_FILE_SERVICE_SETTINGS, UPDATE_FILE_SERVICE_SETTINGS, MANAGE_API_KEYS, MANAGE_CLUSTER)")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	switch sub {
	case "create":
		var list []string
		for _, p := range strings.Split(*perms, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		var out apiKeyOut
		if err := c.call(ctx, http.MethodPost, "/v1/apikeys", map[string]any{"name": *name, "permissions": list}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "id:          %s\nname:        %s\npermissions: %s\nkey:         %s\n\nThe key is shown only now; store it safely.\n",
			out.ID, out.Name, strings.Join(out.Permissions, ","), out.Key)
		return nil
	case "list":
		var out struct {
			Data []apiKeyOut `json:"data"`
		}
		if err := c.call(ctx, http.MethodGet, "/v1/apikeys", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tPERMISSIONS\tCREATED")
		for _, k := range out.Data {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, dash(k.Name), strings.Join(k.Permissions, ","), k.CreatedAt)
		}
		return tw.Flush()
	case "revoke":
		if fs.NArg() != 1 {
			return errors.New("usage: cairn apikey revoke [flags] <key id>")
		}
		if err := c.call(ctx, http.MethodDelete, "/v1/apikeys/"+url.PathEscape(fs.Arg(0)), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s\n", fs.Arg(0))
		return nil
	default:
		return fmt.Errorf("unknown apikey command %q (want create, list or revoke)", sub)
	}
}

// runKeys implements `cairn keys rotate`: a new signing key for ephemeral tokens.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		return errors.New("usage: cairn keys rotate [--addr URL] [--key KEY]")
	}
	fs := flag.NewFlagSet("cairn keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if err := c.call(ctx, http.MethodPost, "/v1/signing-key/rotate", nil, nil); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "signing key rotated: every ephemeral token issued before is now invalid")
	return nil
}
