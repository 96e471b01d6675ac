package main

// A disk that hangs instead of failing: a node's data dir is an ext4 image the test mounts and then
// freezes (fsfreeze), so every write and fsync there blocks while the process, its gossip and its
// Raft heartbeats go on. Such a node cannot append or apply, so it cannot answer a linearizable
// request, and /readyz must say so even while it trails the leader by only a few entries. A leader
// in that state must also give up the lead, or nothing commits anywhere.

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

func TestE2EHungStateDiskMakesAFollowerNotReady(t *testing.T) {
	skipShort(t)
	freeze := requireTool(t, "fsfreeze", "util-linux")
	mnt := ext4Image(t, "256M")
	cl := newLocalCluster(t, 3, false, "CAIRN_MIN_FREE=1MiB")
	cl.dirs[2] = filepath.Join(mnt, "node3")
	c := newClient()
	cl.startAll()
	waitReady(t, c, 30*time.Second, cl.urls(0, 1, 2)...)
	// A leader whose disk hangs is another case (its own log writes block the cluster's commits);
	// this test is about a follower, so node3 hands leadership over first.
	if leader, err := leaderOf(c, cl.urls(0)[0]); err == nil && leader == "node3" {
		cl.procs[2].signal(t, syscall.SIGTERM)
		cl.procs[2].waitExit(t, 30*time.Second)
		cl.start(2)
		waitReady(t, c, 30*time.Second, cl.urls(2)...)
	}
	data := randomBytes(t, 20<<10)
	full := upload(t, c, cl.urls(0)[0], cl.rootKey, "before.bin", data)

	thaw := freezeFS(t, freeze, mnt)

	// A few writes, far fewer than the apply lag /readyz tolerates: node3's log append blocks on
	// the frozen disk, so it applies none of them, and the append stays in flight.
	for range 5 {
		createReadToken(t, c, cl.urls(0)[0], full)
	}
	waitDiskStalled(t, c, "node3", cl.urls(2)[0])
	// The others go on.
	expectFile(t, c, 10*time.Second, full, data, cl.urls(0, 1)...)

	thaw()
	testutil.WaitForNil(t, 60*time.Second, "node3 ready once its disk thaws", func() error {
		return checkReady(c, cl.urls(2)[0])
	})
	expectFile(t, c, 10*time.Second, full, data, cl.urls(2)...)
	cl.stopAll(syscall.SIGTERM, 30*time.Second)
}

// ext4Image makes an ext4 filesystem of the given size in an image file, loop-mounts it in a
// temporary directory and unmounts it at the end: unlike tmpfs, it can be frozen.
// freezeFS freezes the filesystem mounted at mnt and returns what thaws it (once; later calls do
// nothing). The thaw is also registered as a cleanup: registered after the cluster's, it runs
// before it, and a process blocked on a frozen filesystem cannot exit until the filesystem thaws.
func freezeFS(t *testing.T, fsfreeze, mnt string) (thaw func()) {
	t.Helper()
	if out, err := exec.Command(fsfreeze, "-f", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze -f %s: %v: %s", mnt, err, out)
	}
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			if out, err := exec.Command(fsfreeze, "-u", mnt).CombinedOutput(); err != nil {
				t.Errorf("fsfreeze -u %s: %v: %s", mnt, err, out)
			}
		})
	}
	t.Cleanup(thaw)
	return thaw
}

func ext4Image(t *testing.T, size string) string {
	t.Helper()
	mkfs := requireTool(t, "mkfs.ext4", "e2fsprogs")
	img := filepath.Join(t.TempDir(), "disk.img")
	dir := t.TempDir()
	if out, err := exec.Command("truncate", "-s", size, img).CombinedOutput(); err != nil {
		t.Fatalf("truncate %s: %v: %s", img, err, out)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", img, err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		skipOrFailWithoutPrivilege(t, "mount -o loop %s: %v: %s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// A leader whose disk hangs: its log appends block, so nothing commits, while its heartbeats go on
// and its followers never time out. The cluster must elect another leader and take writes again,
// and the hung node must say it is not ready.
func TestE2EHungStateDiskOnTheLeaderMovesLeadership(t *testing.T) {
	skipShort(t)
	freeze := requireTool(t, "fsfreeze", "util-linux")
	cl := newLocalCluster(t, 3, false, "CAIRN_MIN_FREE=1MiB")
	mounts := make([]string, 3)
	for i := range mounts {
		mounts[i] = ext4Image(t, "256M")
		cl.dirs[i] = filepath.Join(mounts[i], cl.specs[i].id)
	}
	c := newClient()
	cl.startAll()
	waitReady(t, c, 30*time.Second, cl.urls(0, 1, 2)...)
	data := randomBytes(t, 20<<10)
	full := upload(t, c, cl.urls(0)[0], cl.rootKey, "before.bin", data)
	hung := waitLeader(t, c, 10*time.Second, cl.urls(0, 1, 2))
	var others []int
	for i := range 3 {
		if i != hung {
			others = append(others, i)
		}
	}
	mnt := mounts[hung]

	thaw := freezeFS(t, freeze, mnt)
	frozenAt := time.Now()

	// A write through a follower: the hung leader's log append blocks, so it cannot commit.
	other := cl.urls(others[0])[0]
	var token string
	testutil.WaitForNil(t, 60*time.Second, "a read token created through "+other, func() error {
		status, body, err := apiCall(c, http.MethodPost, other+"/files/v1/"+full+"/tokens", "", map[string]string{"accessLevel": "read"})
		if err := answerError(status, body, err); err != nil {
			return err
		}
		token = string(body)
		return nil
	})
	t.Logf("a write committed %s after the leader's disk froze: %s", time.Since(frozenAt).Round(time.Millisecond), tail(token, 120))
	leader, err := leaderOf(c, other)
	if err != nil || leader == cl.specs[hung].id {
		t.Fatalf("leader after the freeze: %q, %v; want one of the others", leader, err)
	}
	// It names its own disk, not the leader it lost because of it (no_leader would also pass as
	// ready for the leader wait).
	waitDiskStalled(t, c, cl.specs[hung].id, cl.urls(hung)[0])
	expectFile(t, c, 10*time.Second, full, data, cl.urls(others...)...)
	// Uploads too: the hung node announces that it takes no shards, so they go to the other two
	// (the write quorum) instead of each waiting out the stall timeout on it.
	testutil.WaitForNil(t, 30*time.Second, "the others see "+cl.specs[hung].id+" take no shards", func() error {
		for _, u := range cl.urls(others...) {
			st, err := getStatus(c, u)
			if err != nil {
				return err
			}
			for _, m := range st.Members {
				if m.ID == cl.specs[hung].id && m.AcceptsShards {
					return fmt.Errorf("%s sees %s accepting shards", st.NodeID, m.ID)
				}
			}
		}
		return nil
	})
	out := mustCLI(t, "members", "--addr", other)
	if row := memberRow(out, cl.specs[hung].id); row["SHARDS"] != "no" {
		t.Errorf("cairn members shows %s as %v; want SHARDS no:\n%s", cl.specs[hung].id, row, out)
	}
	if row := memberRow(out, cl.specs[others[0]].id); row["SHARDS"] != "yes" {
		t.Errorf("cairn members shows %s as %v; want SHARDS yes:\n%s", cl.specs[others[0]].id, row, out)
	}
	// CLOCK: the answering node's measurement of each peer's clock, none of itself.
	if row := memberRow(out, cl.specs[others[0]].id); row["CLOCK"] != "-" {
		t.Errorf("cairn members shows the answering node %s as %v; want CLOCK -:\n%s", cl.specs[others[0]].id, row, out)
	}
	if row := memberRow(out, cl.specs[others[1]].id); !regexp.MustCompile(`^[+-]0\.\d{3}s$`).MatchString(row["CLOCK"]) {
		t.Errorf("cairn members shows %s as %v; want a CLOCK offset under a second:\n%s", cl.specs[others[1]].id, row, out)
	}
	after := randomBytes(t, 20<<10)
	uploadedAt := time.Now()
	afterFull, afterID := uploadTracked(t, c, other, cl.rootKey, "after.bin", after, []string{cl.dirs[others[0]], cl.dirs[others[1]]})
	t.Logf("an upload through %s took %s while %s hangs", other, time.Since(uploadedAt).Round(time.Millisecond), cl.specs[hung].id)
	if onHung := shardsOnDisk(t, cl.dirs[hung])[afterID]; len(onHung) != 0 {
		t.Errorf("the upload placed shards on the hung node: %v", onHung)
	}
	expectFile(t, c, 10*time.Second, afterFull, after, cl.urls(others...)...)
	if withheld, err := metricValue(c, cl.urls(hung)[0], "cairn_raft_rpcs_withheld_total"); err != nil || withheld == 0 {
		t.Errorf("%s cairn_raft_rpcs_withheld_total = %v, %v; want > 0", cl.specs[hung].id, withheld, err)
	}

	thaw()
	testutil.WaitForNil(t, 60*time.Second, cl.specs[hung].id+" ready once its disk thaws", func() error {
		return checkReady(c, cl.urls(hung)[0])
	})
	expectFile(t, c, 10*time.Second, full, data, cl.urls(hung)...)
	expectFile(t, c, 10*time.Second, afterFull, after, cl.urls(hung)...)
	cl.stopAll(syscall.SIGTERM, 30*time.Second)
}

// waitDiskStalled waits until the node at url answers /readyz 503 raft_log_write_stalled.
func waitDiskStalled(t *testing.T, c *http.Client, id, url string) {
	t.Helper()
	testutil.WaitForNil(t, 30*time.Second, id+" not ready (raft_log_write_stalled) while its disk hangs", func() error {
		code, reason := readyz(c, url)
		if code == http.StatusServiceUnavailable && strings.HasPrefix(reason, "raft_log_write_stalled") {
			t.Logf("%s /readyz: %d %s", id, code, reason)
			return nil
		}
		return fmt.Errorf("%s /readyz %d %s", id, code, reason)
	})
}

// memberRow finds id's row in `cairn members` output and maps the header's columns to its fields.
// FREE ("1.2 GiB") splits in two, which leaves the columns before it intact.
func memberRow(out, id string) map[string]string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	header := strings.Fields(strings.ReplaceAll(strings.ReplaceAll(lines[0], "CLUSTER ADDR", "CLUSTER_ADDR"), "HTTP ADDR", "HTTP_ADDR"))
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != id {
			continue
		}
		row := map[string]string{}
		for i, name := range header {
			if i < len(fields) {
				row[name] = fields[i]
			}
		}
		return row
	}
	return nil
}
