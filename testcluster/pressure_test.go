package testcluster

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/node"
)

var (
	pressureDuration = flag.Duration("pressure.duration", 0,
		"how long TestLeaderStaysPutUnderCPUPressure keeps the CPU busy (0 skips it; see make pressure)")
	pressureMultiplier = flag.Int("pressure.multiplier", 0,
		"--raft-multiplier of TestLeaderStaysPutUnderCPUPressure's nodes (0: the default), to compare")
)

// hogEnv makes the test binary a CPU hog (see TestCPUHog) instead of running tests.
const hogEnv = "CAIRN_CPU_HOG_FOR"

// TestCPUHog is not a test: started by TestLeaderStaysPutUnderCPUPressure as a child process with
// hogEnv set, it keeps every core busy for that long and exits. A separate process, so that the
// operating system's scheduler, not Go's, shares the cores, as with other work on the machine.
func TestCPUHog(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv(hogEnv))
	if err != nil {
		t.Skip("only runs as the CPU hog of TestLeaderStaysPutUnderCPUPressure")
	}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := uint64(1)
			for time.Now().Before(deadline) {
				for range 1 << 16 {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
			_ = x
		}()
	}
	wg.Wait()
}

// TestLeaderStaysPutUnderCPUPressure runs a 3-node cluster with the production timings (real Raft,
// real memberlist, the default --raft-multiplier) next to a process that keeps every core busy,
// under a light load of uploads and downloads, and counts leader changes: there must be none.
// Run it with make pressure (PRESSURE_DURATION, default 2m).
func TestLeaderStaysPutUnderCPUPressure(t *testing.T) {
	if *pressureDuration <= 0 {
		t.Skip("CPU-pressure test: run with make pressure, or -args -pressure.duration=2m")
	}
	c := New(t, Options{Configure: func(_ int, cfg *node.Config) {
		def := node.DefaultConfig()
		cfg.RaftTimings = def.RaftTimings
		cfg.RaftMultiplier = def.RaftMultiplier
		if *pressureMultiplier > 0 {
			cfg.RaftMultiplier = *pressureMultiplier
		}
		cfg.GossipTimings = def.GossipTimings
		cfg.LeaderWait = def.LeaderWait
	}})
	leader := c.WaitLeader(60 * time.Second)
	startTerm := maxTerm(t, c)
	t.Logf("leader node%d in term %d, raft multiplier %d; starting the CPU hog for %s on %d cores",
		leader, startTerm, c.Config(leader).RaftMultiplier, *pressureDuration, runtime.NumCPU())

	ctx, cancel := context.WithTimeout(context.Background(), *pressureDuration)
	defer cancel()
	hog := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCPUHog$")
	hog.Env = append(os.Environ(), hogEnv+"="+pressureDuration.String())
	if err := hog.Start(); err != nil {
		t.Fatalf("start the CPU hog: %v", err)
	}
	hogDone := make(chan error, 1)
	go func() { hogDone <- hog.Wait() }()

	// Light load: one upload and one download every 250 ms, through the nodes in turn; and a watch
	// of every node's view of the leader every 20 ms.
	var (
		leaders  = map[string]bool{c.Node(leader).ID(): true}
		changes  []string
		failures []string
		ops      int
		slowest  time.Duration
	)
	last := c.Node(leader).ID()
	watch := time.NewTicker(20 * time.Millisecond)
	defer watch.Stop()
	work := time.NewTicker(250 * time.Millisecond)
	defer work.Stop()
	began := time.Now()
	for i := 0; ; {
		select {
		case err := <-hogDone:
			if ctx.Err() == nil {
				t.Fatalf("the CPU hog ended early: %v", err)
			}
			hogDone = nil
		case <-watch.C:
			for _, n := range c.Running() {
				if id := c.Node(n).LeaderID(); id != "" && id != last {
					changes = append(changes, fmt.Sprintf("[%6.2fs] node%d sees leader %s (was %s)", time.Since(began).Seconds(), n, id, last))
					last = id
					leaders[id] = true
				}
			}
			continue
		case <-work.C:
			i++
			start := time.Now()
			cl := *c.Client(i % 3)
			cl.APIKey = c.RootKey
			data := randomData(int64(i), 4096)
			meta, resp, err := cl.Upload(fmt.Sprintf("load-%d", i), data)
			if err == nil && resp.Status == http.StatusOK {
				resp, err = c.Client((i + 1) % 3).Download(meta.Tokens[0].Token)
			}
			ops++
			slowest = max(slowest, time.Since(start))
			if err != nil || resp.Status != http.StatusOK {
				failures = append(failures, fmt.Sprintf("[%6.2fs] op %d: err %v status %d body %.200s", time.Since(began).Seconds(), i, err, resp.Status, resp.Body))
			}
		}
		if hogDone == nil {
			break
		}
	}
	endTerm := maxTerm(t, c)
	t.Logf("%s under CPU pressure: %d upload+download pairs, %d failed, slowest %s; terms %d -> %d; %d leader changes",
		time.Since(began).Round(time.Second), ops, len(failures), slowest.Round(time.Millisecond), startTerm, endTerm, len(changes))
	for _, ch := range changes {
		t.Log(ch)
	}
	for _, f := range failures {
		t.Log(f)
	}
	if len(changes) > 0 || endTerm != startTerm {
		t.Fatalf("the leader changed %d times (terms %d -> %d) under CPU pressure", len(changes), startTerm, endTerm)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed under CPU pressure", len(failures), ops)
	}
}

// maxTerm is the highest Raft term any running node is in.
func maxTerm(t *testing.T, c *Cluster) uint64 {
	t.Helper()
	var term uint64
	for _, i := range c.Running() {
		v, err := strconv.ParseUint(c.Node(i).RaftStat("term"), 10, 64)
		if err != nil {
			t.Fatalf("node%d raft term: %v", i, err)
		}
		term = max(term, v)
	}
	return term
}
