package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/cairn-dev/cairn/core"
)

func runStatus(ctx context.Context, args []string, stdout io.Writer, membersOnly bool) error {
	fs := flag.NewFlagSet("cairn status", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	addr := fs.String("addr", "http://127.0.0.1:8081", "HTTP(S) address of any node")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	clientTLS := addClientTLSFlags(fs) // httpclient.go
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *addr+"/v1/status", nil)
	if err != nil {
		return err
	}
	client, err := clientTLS.httpClient(0)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", *addr, resp.Status, body)
	}
	if *asJSON {
		_, err := stdout.Write(append(body, '\n'))
		return err
	}
	var st core.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if !membersOnly {
		fmt.Fprintf(tw, "node\t%s\nleader\t%s\nraft state\t%s\nterm\t%d\ncommit index\t%d\napplied index\t%d\nerasure\t%s (write quorum %d)\n",
			st.NodeID, st.LeaderID, st.RaftState, st.Term, st.CommitIndex, st.AppliedIndex, st.Erasure, st.WriteQuorum)
		s := st.Storage
		fmt.Fprintf(tw, "segments\t%d healthy, %d degraded, %d unrecoverable\nrepair queue\t%d shards\nshard bytes here\t%s\nrepaired here\t%s\ncorrupt shards read here\t%d\n\n",
			s.SegmentsHealthy, s.SegmentsDegraded, s.SegmentsUnrecoverable, s.RepairQueue,
			humanBytes(uint64(s.ShardBytes)), humanBytes(uint64(s.RepairedBytes)), s.ChecksumFailures)
	}
	fmt.Fprintln(tw, "MEMBER\tSTATE\tRAFT\tCLUSTER ADDR\tHTTP ADDR\tZONE\tFREE")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.State, dash(m.Suffrage), m.ClusterAddr,
			dash(m.HTTPAddr), dash(m.Zone), humanBytes(m.FreeBytes))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
