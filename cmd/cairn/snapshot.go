package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	snapshot "github.com/hashicorp/raft-snapshot"

	"github.com/cairn-dev/cairn/core"
)

const snapshotUsage = `usage: cairn snapshot save|inspect|restore [flags] FILE
  save FILE      download a point-in-time snapshot of the metadata into FILE
  inspect FILE   have the cluster verify FILE and describe it (changes nothing)
  restore FILE   replace the metadata of every node with FILE's (see docs/operations.md)`

// runSnapshot implements `cairn snapshot save|inspect|restore FILE` over /v1/snapshot.
func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(snapshotUsage)
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("cairn snapshot "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := adminFlags(fs)
	otherCluster := fs.Bool("allow-other-cluster", false, "inspect/restore: accept a snapshot of another cluster (rebuilding a lost cluster from its backup)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New(snapshotUsage)
	}
	file := fs.Arg(0)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	query := ""
	if *otherCluster {
		query = "?allowOtherCluster=true"
	}
	switch sub {
	case "save":
		return snapshotSave(ctx, c, file, stdout)
	case "inspect":
		var info core.SnapshotInfo
		if err := c.sendFile(ctx, http.MethodPost, "/v1/snapshot/inspect"+query, file, &info); err != nil {
			return fmt.Errorf("inspect %s: %w", file, err)
		}
		return printSnapshotInfo(stdout, info)
	case "restore":
		var rep core.RestoreReport
		if err := c.sendFile(ctx, http.MethodPut, "/v1/snapshot"+query, file, &rep); err != nil {
			return fmt.Errorf("restore %s: %w", file, err)
		}
		fmt.Fprintf(stdout, "restored %s: the metadata of every node is now the snapshot's (raft index %d)\n", file, rep.RestoredIndex)
		if err := printSnapshotInfo(stdout, rep.Snapshot); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unreadable files: %d", rep.UnreadableFiles)
		if rep.UnreadableFiles > 0 {
			fmt.Fprintf(stdout, " (their shards are gone; listed: %s)", strings.Join(rep.UnreadableFileIDs, ","))
		}
		fmt.Fprintln(stdout)
		return nil
	default:
		return fmt.Errorf("unknown snapshot command %q\n%s", sub, snapshotUsage)
	}
}

// snapshotSave streams the archive into FILE.part, checks it as inspect would offline (gzip
// stream and SHA-256 sums), fsyncs it and only then renames it to FILE, so FILE is never a
// partial archive.
func snapshotSave(ctx context.Context, c *adminClient, file string, stdout io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, "/v1/snapshot", nil)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	defer resp.Body.Close()
	part := file + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	defer os.Remove(part) // a no-op once renamed
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save: download broke after %d bytes: %w", n, err)
	}
	meta, err := verifySnapshotFile(part)
	if err != nil {
		return fmt.Errorf("save: the downloaded archive does not verify: %w", err)
	}
	if err := os.Rename(part, file); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if d, err := os.Open(filepath.Dir(file)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	fmt.Fprintf(stdout, "saved %s: raft index %d, term %d, %d bytes\n", file, meta.Index, meta.Term, n)
	return nil
}

type snapshotMeta struct{ Index, Term uint64 }

func verifySnapshotFile(path string) (snapshotMeta, error) {
	f, err := os.Open(path)
	if err != nil {
		return snapshotMeta{}, err
	}
	defer f.Close()
	m, err := snapshot.Verify(f)
	if err != nil {
		return snapshotMeta{}, err
	}
	return snapshotMeta{Index: m.Index, Term: m.Term}, nil
}

func printSnapshotInfo(w io.Writer, info core.SnapshotInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "index\t%d\nterm\t%d\nsize\t%d bytes\ncairn version\t%s\ncluster\t%s\nfiles\t%d\ntokens\t%d\napi keys\t%d\n",
		info.Index, info.Term, info.Size, versionOrUnknown(info.CairnVersion), info.ClusterID, info.Files, info.Tokens, info.APIKeys)
	return tw.Flush()
}

// do sends one request with the API key and returns a 2xx response; other answers become errors
// quoting the API's message.
func (c *adminClient) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	if c.key == "" {
		return nil, errors.New("--key (or CAIRN_KEY) is required")
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.addr, "/")+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, responseError(resp, b)
	}
	return resp, nil
}

// sendFile streams a local file as the request body and decodes the JSON answer into out.
func (c *adminClient) sendFile(ctx context.Context, method, path, file string, out any) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	resp, err := c.do(ctx, method, path, f)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}
