package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	"github.com/cairn-dev/cairn/httpapi"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer, membersOnly bool) error {
	name, summary := "cairn status", "Show a node's view of the cluster (GET /v1/status); --all shows every node's side by side."
	if membersOnly {
		name, summary = "cairn members", "List the cluster's members as a node sees them."
	}
	cmd := newCommand(name, "", summary, stderr)
	cf := addClientFlags(cmd.fs, "")
	asJSON := cmd.fs.Bool("json", false, "print the raw JSON")
	all := false
	if !membersOnly {
		cmd.fs.BoolVar(&all, "all", false, "ask every member for its own view and show them side by side")
	}
	if _, err := cmd.parse(args, 0); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if all {
		return runStatusAll(ctx, c, stdout, *asJSON)
	}
	st, body, err := fetchStatus(ctx, c)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(append(body, '\n'))
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if !membersOnly {
		fmt.Fprintf(tw, "node\t%s (version %s)\n", st.NodeID, versionOrUnknown(st.Version))
		fmt.Fprintf(tw, "leader\t%s\nraft state\t%s\nterm\t%d\ncommit index\t%d\napplied index\t%d\nerasure\t%s (write quorum %d)\n",
			st.LeaderID, st.RaftState, st.Term, st.CommitIndex, st.AppliedIndex, st.Erasure, st.WriteQuorum)
		s := st.Storage
		fmt.Fprintf(tw, "segments\t%d healthy, %d degraded, %d unrecoverable\nrepair queue\t%d shards\nshard bytes here\t%s\nrepaired here\t%s\ncorrupt shards read here\t%d\n\n",
			s.SegmentsHealthy, s.SegmentsDegraded, s.SegmentsUnrecoverable, s.RepairQueue,
			humanBytes(uint64(s.ShardBytes)), humanBytes(uint64(s.RepairedBytes)), s.ChecksumFailures)
	}
	shards := memberShardsColumn(body, len(st.Members))
	fmt.Fprintln(tw, "MEMBER\tSTATE\tRAFT\tVERSION\tSHARDS\tCLOCK\tCLUSTER ADDR\tHTTP ADDR\tZONE\tFREE")
	for i, m := range st.Members {
		role, state := dash(m.Suffrage), m.State
		if m.Leader {
			role = "leader"
		}
		if m.Removed {
			state = httpapi.MemberRemoved
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, state, role, versionOrUnknown(m.Version), shards[i], clockOffset(m.ClockOffsetSeconds), m.ClusterAddr,
			dash(m.HTTPAddr), dash(m.Zone), humanBytes(m.FreeBytes))
	}
	return tw.Flush()
}

// memberShardsColumn says for each member of a /v1/status body whether it takes new shards:
// "yes", "no" (draining, stopping, or its disk hangs), or "-" when the answering node is of a
// release before acceptsShards, which a plain bool would show as "no".
func memberShardsColumn(body []byte, members int) []string {
	var presence struct {
		Members []struct {
			AcceptsShards *bool `json:"acceptsShards"`
		} `json:"members"`
	}
	column := make([]string, members)
	_ = json.Unmarshal(body, &presence) // fetchStatus decoded the same body already
	for i := range column {
		column[i] = "-"
		if i < len(presence.Members) && presence.Members[i].AcceptsShards != nil {
			column[i] = map[bool]string{true: "yes", false: "no"}[*presence.Members[i].AcceptsShards]
		}
	}
	return column
}

// clockOffset shows a member's clock offset to the answering node ("+0.003s"), "-" when there is
// none (the answering node itself, a member not measured, or an answering node of an older
// release).
func clockOffset(seconds *float64) string {
	if seconds == nil {
		return "-"
	}
	return fmt.Sprintf("%+.3fs", *seconds)
}

// versionOrUnknown shows a member that announced no version (a release before v0.2) as such.
func versionOrUnknown(v string) string {
	if v == "" {
		return "unknown"
	}
	return v
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

// fetchStatus gets one node's /v1/status, decoded and raw.
func fetchStatus(ctx context.Context, c *apiClient) (httpapi.Status, []byte, error) {
	var raw json.RawMessage
	if err := c.callJSON(ctx, http.MethodGet, "/v1/status", false, nil, &raw); err != nil {
		return httpapi.Status{}, nil, err
	}
	var st httpapi.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return httpapi.Status{}, nil, fmt.Errorf("decode status of %s: %w", c.base, err)
	}
	return st, raw, nil
}
