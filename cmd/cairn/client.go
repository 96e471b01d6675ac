package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Exit codes of the client subcommands. They follow the API's answer, so a script can tell "fix
// the request" from "try again later" without parsing messages (docs/operations.md lists them).
const (
	exitFailure     = 1 // anything else: network error, server error, a local file problem
	exitUsage       = 2 // bad flags or arguments
	exitDenied      = 3 // 401/403: no or unknown API key, missing permission, read token used for a full one
	exitNotFound    = 4 // 404, or an invalid, expired or deleted token (2605)
	exitRejected    = 5 // another 4xx: too large, a bad field, a conflict
	exitUnavailable = 6 // 503/507: the cluster cannot serve it now (no quorum, out of space); retry later
)

// clientFlags are the flags of every command that talks to a running cluster.
type clientFlags struct {
	addr string
	key  string
}

// addClientFlags adds --addr and, when keyUsage is not empty, --key (CAIRN_ADDR, CAIRN_KEY) to fs.
func addClientFlags(fs *flag.FlagSet, keyUsage string) *clientFlags {
	f := &clientFlags{}
	fs.StringVar(&f.addr, "addr", defaultAddr(), "HTTP address of any node: host:port or an http(s):// URL")
	if keyUsage != "" {
		fs.StringVar(&f.key, "key", "", keyUsage)
	}
	return f
}

// client checks --addr and returns a client for it.
func (f *clientFlags) client() (*apiClient, error) {
	base, err := normalizeAddr(f.addr)
	if err != nil {
		return nil, usageError{"cairn", err.Error(), false}
	}
	return &apiClient{base: base, key: f.key, http: newHTTPClient()}, nil
}

// newHTTPClient is the one place the CLI builds its HTTP client. Timeouts bound connecting and
// waiting for an answer's headers, never a transfer (a download of a large file may take hours).
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,     // uploads send Expect: 100-continue
		ResponseHeaderTimeout: 2 * time.Minute, // an upload's answer comes after its last shard is durable
		MaxIdleConnsPerHost:   4,
	}}
}

// apiClient calls one node's HTTP API.
type apiClient struct {
	base string // scheme://host:port, no trailing slash
	key  string // API key; empty for token-only routes
	http *http.Client
}

// url is the absolute URL of path on the node.
func (c *apiClient) url(path string) string { return c.base + path }

// newRequest builds a request; withKey adds the API key (an error when none was given).
func (c *apiClient) newRequest(ctx context.Context, method, path string, body io.Reader, withKey bool) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return nil, err
	}
	if withKey {
		if c.key == "" {
			return nil, usageError{"cairn", "--key (or CAIRN_KEY) is required", false}
		}
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// do sends req. A non-2xx answer becomes an *apiError, with the body read and closed.
func (c *apiClient) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		// Not the *url.Error's own text: it quotes the whole URL, and paths carry tokens.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, parseAPIError(resp, b)
	}
	return resp, nil
}

// callJSON sends body (when not nil) as JSON and decodes a JSON answer into out (when not nil).
func (c *apiClient) callJSON(ctx context.Context, method, path string, withKey bool, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := c.newRequest(ctx, method, path, rd, withKey)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// apiError is an error answer of the API, in either front-end's format.
type apiError struct {
	Status  int    // HTTP status
	Code    string // "2610" (/files/v1) or "error.runtime.recordNotFound" (/api/v2)
	Name    string // FILE_TOO_LARGE_EXCEPTION (/files/v1 only)
	Message string
}

func (e *apiError) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	if e.Message == "" {
		b.WriteString(http.StatusText(e.Status))
	}
	switch {
	case e.Name != "":
		fmt.Fprintf(&b, " (%s, code %s, HTTP %d)", e.Name, e.Code, e.Status)
	case e.Code != "":
		fmt.Fprintf(&b, " (%s, HTTP %d)", e.Code, e.Status)
	default:
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	return b.String()
}

// exitCode maps the answer to the CLI's exit codes.
func (e *apiError) exitCode() int {
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return exitDenied
	case e.Status == http.StatusNotFound || e.Code == "2605":
		return exitNotFound
	case e.Status == http.StatusServiceUnavailable || e.Status == http.StatusInsufficientStorage:
		return exitUnavailable
	case e.Status/100 == 4:
		return exitRejected
	default:
		return exitFailure
	}
}

// parseAPIError reads an error body of /files/v1 ({"code","name","message"}) or /api/v2
// ({"error":{"code","message"}}); another body is quoted as it is, shortened.
func parseAPIError(resp *http.Response, body []byte) *apiError {
	e := &apiError{Status: resp.StatusCode}
	var v1 struct {
		Code    json.Number `json:"code"`
		Name    string      `json:"name"`
		Message string      `json:"message"`
	}
	var v2 struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	switch {
	case json.Unmarshal(body, &v2) == nil && v2.Error.Code != "":
		e.Code, e.Message = v2.Error.Code, v2.Error.Message
	case json.Unmarshal(body, &v1) == nil && v1.Name != "":
		e.Code, e.Name, e.Message = v1.Code.String(), v1.Name, v1.Message
	default:
		msg := strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		e.Message = msg
	}
	return e
}

// exitCodeOf is the process exit code for the error run returned.
func exitCodeOf(err error) int {
	var (
		ae *apiError
		ue usageError
	)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ae):
		return ae.exitCode()
	case errors.As(err, &ue):
		return exitUsage
	default:
		return exitFailure
	}
}
