package main

// Readiness tells the truth: the reproductions re-run with real agents. From the first
// /readyz 200 of a restarted node, every download and upload through it succeeds on the first try.

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

func TestE2EReadyAfterRestart(t *testing.T) {
	skipShort(t)
	cl := newLocalCluster(t, 3, true) // every --join names node1 only
	c := newClient()
	cl.startAll()
	waitReady(t, c, 30*time.Second, cl.urls(0, 1, 2)...)
	files := map[string][]byte{}
	a := randomBytes(t, 300<<10)
	files[upload(t, c, cl.urls(1)[0], cl.rootKey, "a.bin", a)] = a

	// Case 1: SIGKILL node1, write through node2, restart node1 with the same flags.
	cl.procs[0].signal(t, syscall.SIGKILL)
	cl.procs[0].waitExit(t, 10*time.Second)
	b := randomBytes(t, 1<<20+5)
	bToken := upload(t, c, cl.urls(1)[0], cl.rootKey, "b.bin", b)
	files[bToken] = b
	restart := time.Now()
	cl.start(0)
	reasons := waitFirstReady(t, c, cl.urls(0)[0], 30*time.Second)
	t.Logf("node1 ready %s after its restart; not-ready reasons before: %q", time.Since(restart).Round(time.Millisecond), reasons)
	servesAtOnce(t, c, cl.urls(0)[0], cl.rootKey, files, 3)

	// Case 2: restart all three on their data dirs, node3 first, so that its join of node1 finds
	// nobody; each node must serve from its first 200.
	cl.stopAll(syscall.SIGTERM, 30*time.Second)
	restart = time.Now()
	for _, i := range []int{2, 1, 0} {
		cl.start(i)
	}
	checkEachServesFromFirstReady(t, c, cl, []int{0, 1, 2}, files)
	t.Logf("all three restarted and served within %s", time.Since(restart).Round(time.Millisecond))

	// Then kill the leader: the survivors' gossip views must not stay split, so once they are
	// ready again, uploads through them succeed. b was written while node1 was down, so it has
	// only two shards until repair places the third: losing one more would make it unreadable
	// whatever readiness says. The files read now are those written with all three up.
	delete(files, bToken)
	cdata := randomBytes(t, 700<<10)
	files[upload(t, c, cl.urls(2)[0], cl.rootKey, "c.bin", cdata)] = cdata
	var leader string
	testutil.WaitForNil(t, 10*time.Second, "a leader", func() (err error) { leader, err = leaderOf(c, cl.urls(0)[0]); return err })
	victim := -1
	for i, s := range cl.specs {
		if s.id == leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("leader %q is none of the agents", leader)
	}
	t.Logf("SIGKILL the leader %s", leader)
	cl.procs[victim].signal(t, syscall.SIGKILL)
	cl.procs[victim].waitExit(t, 10*time.Second)
	var survivors []int
	for i := range cl.specs {
		if i != victim {
			survivors = append(survivors, i)
		}
	}
	checkEachServesFromFirstReady(t, c, cl, survivors, files)

	cl.start(victim)
	waitReady(t, c, 30*time.Second, cl.urls(0, 1, 2)...)
	cl.stopAll(syscall.SIGTERM, 30*time.Second)
}

// checkEachServesFromFirstReady watches every node in idx at once: as soon as one first answers
// /readyz 200, downloads of files and two uploads through it must succeed on the first try.
func checkEachServesFromFirstReady(t *testing.T, c *http.Client, cl *agentCluster, idx []int, files map[string][]byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(idx))
	for j, i := range idx {
		wg.Go(func() {
			base := cl.urls(i)[0]
			start := time.Now()
			var reasons []string
			for {
				if time.Since(start) > 30*time.Second {
					errs[j] = fmt.Errorf("%s never ready within 30s; reasons %q", base, reasons)
					return
				}
				code, reason := readyz(c, base)
				if code == http.StatusOK {
					break
				}
				if len(reasons) == 0 || reasons[len(reasons)-1] != reason {
					reasons = append(reasons, reason)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%s ready after %s; reasons before: %q", cl.specs[i].id, time.Since(start).Round(time.Millisecond), reasons)
			servesAtOnce(t, c, base, cl.rootKey, files, 2)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestE2EFullRaftLogDisk: node3's data dir is a small tmpfs the test mounts and fills. Once a Raft
// write fails there, its /readyz answers 503 naming the failing log, and uploads through it answer
// 507 (out of space), not 503. Freeing the space makes it ready again.
func TestE2EFullRaftLogDisk(t *testing.T) {
	skipShort(t)
	mnt := smallTmpfs(t, "32m")
	cl := newLocalCluster(t, 3, false, "CAIRN_MIN_FREE=1MiB")
	cl.dirs[2] = filepath.Join(mnt, "node3")
	c := newClient()
	cl.startAll()
	waitReady(t, c, 30*time.Second, cl.urls(0, 1, 2)...)
	// A node whose stable store cannot be written panics inside hashicorp/raft on a term change,
	// so node3 must not lead while its disk is full: a graceful restart hands leadership over.
	if leader, err := leaderOf(c, cl.urls(0)[0]); err == nil && leader == "node3" {
		cl.procs[2].signal(t, syscall.SIGTERM)
		cl.procs[2].waitExit(t, 30*time.Second)
		cl.start(2)
		waitReady(t, c, 30*time.Second, cl.urls(2)...)
	}
	data := randomBytes(t, 100<<10)
	token := upload(t, c, cl.urls(0)[0], cl.rootKey, "before.bin", data)

	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler)
	// Any write through the cluster makes the leader append to node3's log.
	testutil.WaitForNil(t, 30*time.Second, "node3 not ready for its raft log", func() error {
		postFile(c, cl.urls(0)[0], cl.rootKey, "trigger.txt", []byte("trigger"))
		code, reason := readyz(c, cl.urls(2)[0])
		if code == http.StatusServiceUnavailable && strings.HasPrefix(reason, "raft_log_write_failed") {
			t.Logf("node3 /readyz: %d %s", code, reason)
			return nil
		}
		return fmt.Errorf("node3 /readyz %d %s", code, reason)
	})
	if !strings.Contains(func() string { _, r := readyz(c, cl.urls(2)[0]); return r }(), "no space left") {
		t.Errorf("node3's readiness reason does not say the disk is full")
	}
	status, body, err := postFile(c, cl.urls(2)[0], cl.rootKey, "full.bin", []byte("no room"))
	if err != nil || status != http.StatusInsufficientStorage {
		t.Errorf("upload through node3 with a full raft log: status %d, err %v, body %s; want 507", status, err, body)
	}
	// The others go on.
	expectFile(t, c, 10*time.Second, token, data, cl.urls(0, 1)...)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testutil.WaitForNil(t, 60*time.Second, "node3 ready once space is back", func() error {
		postFile(c, cl.urls(0)[0], cl.rootKey, "trigger.txt", []byte("trigger"))
		return checkReady(c, cl.urls(2)[0])
	})
	after := randomBytes(t, 50<<10)
	token2 := upload(t, c, cl.urls(2)[0], cl.rootKey, "after.bin", after)
	expectFile(t, c, 10*time.Second, token2, after, cl.urls(0, 1, 2)...)
	cl.stopAll(syscall.SIGTERM, 30*time.Second)
}

// smallTmpfs mounts a tmpfs of the given size in a temporary directory and unmounts it at the end.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		skipOrFailWithoutPrivilege(t, "mounting a tmpfs needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		skipOrFailWithoutPrivilege(t, "mount tmpfs: %v: %s", err, out)
	}
	// Registered after TempDir's own cleanup, so it runs first: the mount goes before the dir.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes path until the filesystem is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatalf("fill %s: %v", path, err)
		}
	}
	// The last partial pages too.
	for _, n := range []int{64 << 10, 4 << 10, 512, 1} {
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
}
