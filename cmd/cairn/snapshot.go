package main

import (
	"context"
	"encoding/json"
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

const snapshotGroupUsage = `Usage: cairn snapshot save|inspect|restore [flags] FILE

Back up and restore the cluster's metadata (needs MANAGE_CLUSTER); see docs/operations.md,
"Backup and restore".

  cairn snapshot save FILE      download a point-in-time snapshot of the metadata into FILE
  cairn snapshot inspect FILE   have the cluster verify FILE and describe it (changes nothing)
  cairn snapshot restore FILE   replace the metadata of every node with FILE's

Run 'cairn snapshot <subcommand> -h' for its flags.
`

// snapshotFlags are the flags every snapshot subcommand takes.
type snapshotFlags struct {
	cmd          *command
	client       *clientFlags
	otherCluster *bool
	timeout      *time.Duration
}

func newSnapshotCommand(name, summary string, stderr io.Writer, withOtherCluster bool) *snapshotFlags {
	f := &snapshotFlags{cmd: newCommand(name, "FILE", summary, stderr)}
	f.client = addClientFlags(f.cmd.fs, adminKeyUsage)
	f.timeout = f.cmd.fs.Duration("timeout", 10*time.Minute, "give up after this long")
	if withOtherCluster {
		f.otherCluster = f.cmd.fs.Bool("allow-other-cluster", false, "accept a snapshot of another cluster (rebuilding a lost cluster from its backup)")
	}
	return f
}

// parse returns the client, FILE and the query string of the call.
func (f *snapshotFlags) parse(args []string) (*apiClient, string, string, error) {
	pos, err := f.cmd.parse(args, 1)
	if err != nil {
		return nil, "", "", err
	}
	c, err := f.client.client()
	if err != nil {
		return nil, "", "", err
	}
	query := ""
	if f.otherCluster != nil && *f.otherCluster {
		query = "?allowOtherCluster=true"
	}
	return c, pos[0], query, nil
}

// runSnapshot implements `cairn snapshot save|inspect|restore FILE` over /v1/snapshot.
func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return group("cairn snapshot", snapshotGroupUsage, args, stdout, stderr, map[string]func([]string) error{
		"save": func(args []string) error {
			f := newSnapshotCommand("cairn snapshot save", "Download a point-in-time snapshot of the metadata into FILE (written as FILE.part, verified, then renamed).", stderr, false)
			c, file, _, err := f.parse(args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, *f.timeout)
			defer cancel()
			return snapshotSave(ctx, c, file, stdout)
		},
		"inspect": func(args []string) error {
			f := newSnapshotCommand("cairn snapshot inspect", "Have the cluster verify FILE as a restore would, and print what it holds. Nothing changes.", stderr, true)
			c, file, query, err := f.parse(args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, *f.timeout)
			defer cancel()
			var info core.SnapshotInfo
			if err := sendSnapshot(ctx, c, http.MethodPost, "/v1/snapshot/inspect"+query, file, &info); err != nil {
				return fmt.Errorf("inspect %s: %w", file, err)
			}
			return printSnapshotInfo(stdout, info)
		},
		"restore": func(args []string) error {
			f := newSnapshotCommand("cairn snapshot restore", "Replace the metadata of every node with FILE's, through Raft on the leader.", stderr, true)
			c, file, query, err := f.parse(args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, *f.timeout)
			defer cancel()
			var rep core.RestoreReport
			if err := sendSnapshot(ctx, c, http.MethodPut, "/v1/snapshot"+query, file, &rep); err != nil {
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
		},
	})
}

// snapshotSave streams the archive into FILE.part, checks it as inspect would offline (gzip
// stream and SHA-256 sums), fsyncs it and only then renames it to FILE, so FILE is never a
// partial archive.
func snapshotSave(ctx context.Context, c *apiClient, file string, stdout io.Writer) error {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/snapshot", nil, true)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return fmt.Errorf("save %s: %w", file, err)
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
		return fmt.Errorf("save %s: the download broke after %d bytes: %w", file, n, err)
	}
	index, term, err := verifySnapshotFile(part)
	if err != nil {
		return fmt.Errorf("save %s: the downloaded archive does not verify: %w", file, err)
	}
	if err := os.Rename(part, file); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if d, err := os.Open(filepath.Dir(file)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	fmt.Fprintf(stdout, "saved %s: raft index %d, term %d, %d bytes\n", file, index, term, n)
	return nil
}

// verifySnapshotFile checks an archive's gzip stream and SHA-256 sums (raft-snapshot's Verify).
func verifySnapshotFile(path string) (index, term uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	m, err := snapshot.Verify(f)
	if err != nil {
		return 0, 0, err
	}
	return m.Index, m.Term, nil
}

// sendSnapshot streams a local archive as the request body and decodes the JSON answer into out.
func sendSnapshot(ctx context.Context, c *apiClient, method, path, file string, out any) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := c.newRequest(ctx, method, path, f, true)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

func printSnapshotInfo(w io.Writer, info core.SnapshotInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "index\t%d\nterm\t%d\nsize\t%d bytes\ncairn version\t%s\ncluster\t%s\nfiles\t%d\ntokens\t%d\napi keys\t%d\n",
		info.Index, info.Term, info.Size, versionOrUnknown(info.CairnVersion), info.ClusterID, info.Files, info.Tokens, info.APIKeys)
	return tw.Flush()
}
