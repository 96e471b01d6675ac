package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cairn-dev/cairn/httpapi"
)

// nodeView is one member's own answer to /v1/status, or why there is none.
type nodeView struct {
	ID     string          `json:"id"`
	Addr   string          `json:"addr"`
	Status json.RawMessage `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
	st     httpapi.Status
}

// memberClients are clients for every member that announces an HTTP address, in member id order,
// with the scheme of c; the node c points at comes first when it is a member.
func memberClients(c *apiClient, st httpapi.Status) []struct {
	id string
	c  *apiClient
} {
	scheme := "http"
	if u, err := url.Parse(c.base); err == nil {
		scheme = u.Scheme
	}
	members := slices.Clone(st.Members)
	slices.SortFunc(members, func(a, b httpapi.MemberStatus) int { return strings.Compare(a.ID, b.ID) })
	var out []struct {
		id string
		c  *apiClient
	}
	for _, m := range members {
		if m.HTTPAddr == "" {
			continue
		}
		mc := *c
		mc.base = scheme + "://" + m.HTTPAddr
		out = append(out, struct {
			id string
			c  *apiClient
		}{m.ID, &mc})
	}
	return out
}

// collectViews asks every member for its own status, in parallel, each bounded by perNode.
func collectViews(ctx context.Context, c *apiClient, perNode time.Duration) ([]nodeView, error) {
	first, _, err := fetchStatus(ctx, c)
	if err != nil {
		return nil, err
	}
	targets := memberClients(c, first)
	views := make([]nodeView, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		views[i] = nodeView{ID: t.id, Addr: t.c.base}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, perNode)
			defer cancel()
			st, raw, err := fetchStatus(ctx, t.c)
			if err != nil {
				views[i].Error = err.Error()
				return
			}
			views[i].Status, views[i].st = raw, st
		})
	}
	wg.Wait()
	return views, nil
}

// runStatusAll implements `cairn status --all`: every member's own view, one column per node, so
// that a split view (two leaders, a lagging applied index, members seen differently) shows at once.
func runStatusAll(ctx context.Context, c *apiClient, stdout io.Writer, asJSON bool) error {
	views, err := collectViews(ctx, c, 5*time.Second)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(views)
	}
	rows := []struct {
		label string
		value func(httpapi.Status) string
	}{
		{"leader", func(s httpapi.Status) string { return dash(s.LeaderID) }},
		{"raft state", func(s httpapi.Status) string { return s.RaftState }},
		{"term", func(s httpapi.Status) string { return fmt.Sprint(s.Term) }},
		{"commit index", func(s httpapi.Status) string { return fmt.Sprint(s.CommitIndex) }},
		{"applied index", func(s httpapi.Status) string { return fmt.Sprint(s.AppliedIndex) }},
		{"erasure", func(s httpapi.Status) string { return fmt.Sprintf("%s (quorum %d)", s.Erasure, s.WriteQuorum) }},
		{"members alive", func(s httpapi.Status) string {
			alive := 0
			for _, m := range s.Members {
				if m.State == "alive" {
					alive++
				}
			}
			return fmt.Sprintf("%d/%d", alive, len(s.Members))
		}},
		{"raft voters", func(s httpapi.Status) string {
			voters := 0
			for _, m := range s.Members {
				if m.Suffrage == "voter" {
					voters++
				}
			}
			return fmt.Sprint(voters)
		}},
		{"segments healthy", func(s httpapi.Status) string { return fmt.Sprint(s.Storage.SegmentsHealthy) }},
		{"segments degraded", func(s httpapi.Status) string { return fmt.Sprint(s.Storage.SegmentsDegraded) }},
		{"unrecoverable", func(s httpapi.Status) string { return fmt.Sprint(s.Storage.SegmentsUnrecoverable) }},
		{"repair queue", func(s httpapi.Status) string { return fmt.Sprint(s.Storage.RepairQueue) }},
		{"shard bytes here", func(s httpapi.Status) string { return humanBytes(uint64(s.Storage.ShardBytes)) }},
		{"corrupt shards read", func(s httpapi.Status) string { return fmt.Sprint(s.Storage.ChecksumFailures) }},
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "NODE")
	for _, v := range views {
		fmt.Fprintf(tw, "\t%s", v.ID)
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		fmt.Fprint(tw, r.label)
		for _, v := range views {
			if v.Error != "" {
				fmt.Fprint(tw, "\t(unreachable)")
				continue
			}
			fmt.Fprintf(tw, "\t%s", r.value(v.st))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, v := range views {
		if v.Error != "" {
			fmt.Fprintf(stdout, "%s (%s) unreachable: %s\n", v.ID, v.Addr, v.Error)
		}
	}
	return nil
}
