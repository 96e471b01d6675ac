package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2ERecoverLostQuorum follows docs/operations.md "Recovering from lost quorum": a 5-node
// cluster with geometry 2+3 loses three voters for good (SIGKILL, data dirs abandoned), so Raft
// has no quorum although the two survivors hold k=2 shards of every segment. The survivors are
// stopped, given a peers.json naming the two of them, and started once with --recover; three fresh
// nodes join, the lost ones are removed, and repair brings every segment back to k+m=5 shards.
func TestE2ERecoverLostQuorum(t *testing.T) {
	skipShort(t)
	specs := loopbackSpecs(t, "rec", 8, 30)
	cl := newAgentCluster(t, specs[:5], "1MiB")
	cl.extra = []string{"--erasure", "2+3", "--repair-interval", "1s"}
	c := newClient()
	cl.startAll()
	waitReady(t, c, 60*time.Second, cl.urls(0, 1, 2, 3, 4)...)
	root := cl.rootKey

	files := map[string][]byte{}
	for i, size := range []int{1, 4 << 10, 100 << 10, 700 << 10} {
		data := randomBytes(t, size)
		files[upload(t, c, specs[i%5].url(), root, "f"+strconv.Itoa(i), data)] = data
	}
	alive := []int{0, 1, 2, 3, 4}
	dirsOf := func(idx []int) []string {
		var d []string
		for _, i := range idx {
			d = append(d, cl.dirs[i])
		}
		return d
	}
	waitFor(t, 20*time.Second, "every segment at 5 shards before the loss", func() error {
		return segmentsAt(t, 5, len(files), dirsOf(alive)...)
	})

	// Three voters are gone for good: a majority of 5. The survivors cannot elect a leader.
	lost := []int{2, 3, 4}
	for _, i := range lost {
		cl.procs[i].signal(t, syscall.SIGKILL)
		cl.procs[i].waitExit(t, 10*time.Second)
	}
	survivors := []int{0, 1}
	waitFor(t, 30*time.Second, "survivors report no quorum", func() error {
		for _, u := range cl.urls(survivors...) {
			if checkReady(c, u) == nil {
				return fmt.Errorf("%s still ready", u)
			}
		}
		return nil
	})

	// Step 1: stop the survivors. Step 2: peers.json in each survivor's DATA_DIR/raft.
	for _, i := range survivors {
		cl.procs[i].signal(t, syscall.SIGTERM)
		cl.procs[i].waitExit(t, 60*time.Second)
	}
	var peers []map[string]any
	for _, i := range survivors {
		s := specs[i]
		peers = append(peers, map[string]any{"id": s.id, "address": s.addr(s.clusterPort), "non_voter": false})
	}
	peersJSON, err := json.MarshalIndent(peers, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peers.json:\n%s", peersJSON)
	for _, i := range survivors {
		if err := os.WriteFile(filepath.Join(cl.dirs[i], "raft", "peers.json"), peersJSON, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Step 3: start each survivor once with --recover.
	base := cl.extra
	cl.extra = append(append([]string{}, base...), "--recover")
	for _, i := range survivors {
		cl.start(i)
	}
	cl.extra = base
	waitReady(t, c, 60*time.Second, cl.urls(survivors...)...)
	for _, i := range survivors {
		if _, err := os.Stat(filepath.Join(cl.dirs[i], "raft", "peers.json.recovered")); err != nil {
			t.Fatalf("peers.json of %s not marked applied: %v", specs[i].id, err)
		}
	}
	// Every acknowledged file reads back byte-exact from the k shards left.
	for tok, data := range files {
		expectFile(t, c, 30*time.Second, tok, data, cl.urls(survivors...)...)
	}

	// Step 4: fresh nodes join (same --join list and --bootstrap-expect as the others had).
	for i := 5; i < 8; i++ {
		cl.specs = append(cl.specs, specs[i])
		cl.dirs = append(cl.dirs, t.TempDir())
		cl.procs = append(cl.procs, nil)
		cl.start(i)
	}
	alive = []int{0, 1, 5, 6, 7}
	waitReady(t, c, 60*time.Second, cl.urls(alive...)...)
	// Step 5: remove the lost nodes, so repair rebuilds their shards at once.
	for _, i := range lost {
		out := mustCLI(t, "node", "remove", "--addr", specs[0].url(), "--key", root, specs[i].id)
		t.Logf("node remove %s: %s", specs[i].id, strings.TrimSpace(out))
	}
	waitFor(t, 90*time.Second, "repair brings every segment back to k+m=5 shards", func() error {
		return segmentsAt(t, 5, len(files), dirsOf(alive)...)
	})
	for tok, data := range files {
		expectFile(t, c, 30*time.Second, tok, data, cl.urls(alive...)...)
	}
	// Writes work again, through a new node too.
	upload(t, c, specs[6].url(), root, "after", []byte("after the recovery"))
	st, err := getStatus(c, specs[0].url())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("members after recovery: %+v", st.Members)
}

// segmentsAt checks that the disks hold exactly want shards of every segment of nfiles files.
func segmentsAt(t *testing.T, want, nfiles int, dirs ...string) error {
	onDisk := shardsOnDisk(t, dirs...)
	if len(onDisk) < nfiles {
		return fmt.Errorf("%d files on disk, want %d", len(onDisk), nfiles)
	}
	for id, segs := range onDisk {
		for seg, n := range segs {
			if n != want {
				return fmt.Errorf("file %s segment %d has %d shards, want %d", id, seg, n, want)
			}
		}
	}
	return nil
}

// TestE2ERecoverBadInput: --recover refuses a data dir without Raft state, and one without a
// peers.json, with a clear error and before anything starts.
func TestE2ERecoverBadInput(t *testing.T) {
	skipShort(t)
	specs := loopbackSpecs(t, "fresh", 1, 40)
	cl := newAgentCluster(t, specs, "1MiB")
	cl.extra = []string{"--erasure", "1+1", "--write-quorum", "1", "--recover"} // one node: readiness needs k alive members
	p := cl.start(0)
	if code := p.waitExit(t, 30*time.Second); code == 0 || !strings.Contains(p.stderr.String(), "holds no raft state to recover") {
		t.Fatalf("--recover on an empty data dir: exit %d, stderr %q", code, tail(p.stderr.String(), 2000))
	}
	t.Logf("empty data dir: %s", lastLine(p.stderr.String()))

	// A node with Raft state but no peers.json.
	cl.extra = []string{"--erasure", "1+1", "--write-quorum", "1"}
	cl.start(0)
	waitReady(t, newClient(), 30*time.Second, cl.urls(0)...)
	cl.procs[0].signal(t, syscall.SIGTERM)
	cl.procs[0].waitExit(t, 30*time.Second)
	cl.extra = []string{"--erasure", "1+1", "--write-quorum", "1", "--recover"}
	p = cl.start(0)
	if code := p.waitExit(t, 30*time.Second); code == 0 || !strings.Contains(p.stderr.String(), "--recover needs") {
		t.Fatalf("--recover without peers.json: exit %d, stderr %q", code, tail(p.stderr.String(), 2000))
	}
	t.Logf("no peers.json: %s", lastLine(p.stderr.String()))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
