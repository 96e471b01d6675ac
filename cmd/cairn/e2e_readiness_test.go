package main

// Readiness tells the truth: the reproductions re-run with real agents. From the first
// /readyz 200 of a restarted node, every download and upload through it succeeds on the first try.

import (
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"
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
	waitFor(t, 10*time.Second, "a leader", func() (err error) { leader, err = leaderOf(c, cl.urls(0)[0]); return err })
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
