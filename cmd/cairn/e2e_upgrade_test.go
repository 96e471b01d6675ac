package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/cairn-dev/cairn/fsm"
)

// oldProtocol is the fsm protocol of the previous release. v0.1.0 announces none in gossip, which
// the protocol gate counts as 1.
const oldProtocol = 1

// previousRelease is cmd/cairn/testdata/previous-release: the tag and commit of the release an
// upgrade starts from.
type previousRelease struct{ tag, commit string }

func readPreviousRelease(t *testing.T) previousRelease {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "previous-release"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rel previousRelease
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch k {
		case "tag":
			rel.tag = v
		case "commit":
			rel.commit = v
		}
	}
	if rel.tag == "" || len(rel.commit) != 40 {
		t.Fatalf("testdata/previous-release needs a tag line and a 40-hex commit line, got %+v", rel)
	}
	return rel
}

// buildPreviousRelease builds the previous release's cairn from the local git history: git archive
// of its commit into a temp dir, then go build there (module cache and Go proxy only). A clone
// without that commit (a shallow one) fails the test with the fix to apply.
func buildPreviousRelease(t *testing.T) (bin string, rel previousRelease) {
	t.Helper()
	rel = readPreviousRelease(t)
	if out, err := exec.Command("git", "cat-file", "-e", rel.commit+"^{commit}").CombinedOutput(); err != nil {
		shallow, _ := exec.Command("git", "rev-parse", "--is-shallow-repository").Output()
		t.Fatalf("the previous release %s (commit %s) is not in the local git history (shallow clone: %s): %v %s\n"+
			"fetch it with: git fetch --unshallow (or git fetch origin %s)",
			rel.tag, rel.commit, strings.TrimSpace(string(shallow)), err, out, rel.commit)
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git rev-parse --show-toplevel: %v", err)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh",
		strings.TrimSpace(string(top)), rel.commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", rel.commit, err, out)
	}
	bin = filepath.Join(t.TempDir(), "cairn-"+rel.tag)
	start := time.Now()
	// -trimpath keeps the build cache warm across temp dirs; no -race: the old release is the
	// baseline here, not the code under test.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+rel.tag, "-o", bin, "./cmd/cairn")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false -mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", rel.tag, err, out)
	}
	t.Logf("built %s (%s) in %s", rel.tag, rel.commit[:12], time.Since(start).Round(time.Millisecond))
	return bin, rel
}

// ackedUpload is an upload the cluster acknowledged (200 with a full token).
type ackedUpload struct {
	token string
	data  []byte
}

// uploadLoad is a bounded concurrent client load: a fixed number of writers, one request at a
// time each, paced, spreading uploads over the nodes, plus a reader that re-reads acknowledged
// uploads. Failed requests are expected while nodes restart; only acknowledged writes count,
// and wrong bytes or a refused token for an acknowledged upload are fatal.
type uploadLoad struct {
	mu     sync.Mutex
	acked  []ackedUpload
	failed int
	fatal  []string
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startUploadLoad(t *testing.T, urls []string, key string, writers int) *uploadLoad {
	l := &uploadLoad{stop: make(chan struct{})}
	c := newClient()
	for w := range writers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				data := make([]byte, 1+rng.IntN(16<<10))
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				status, body, err := postFile(c, urls[(w+n)%len(urls)], key, fmt.Sprintf("load-%d-%d", w, n), data)
				l.mu.Lock()
				switch {
				case err == nil && status == http.StatusOK:
					var md struct {
						Tokens []struct{ Token string } `json:"tokens"`
					}
					if json.Unmarshal(body, &md) != nil || len(md.Tokens) == 0 {
						l.fatal = append(l.fatal, fmt.Sprintf("acknowledged upload without a token: %s", body))
					} else {
						l.acked = append(l.acked, ackedUpload{md.Tokens[0].Token, data})
					}
				case err == nil && status/100 == 4:
					l.fatal = append(l.fatal, fmt.Sprintf("upload refused with %d: %s", status, body))
				default:
					l.failed++
				}
				l.mu.Unlock()
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(60 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			l.mu.Lock()
			if len(l.acked) == 0 {
				l.mu.Unlock()
				continue
			}
			u := l.acked[n%len(l.acked)]
			l.mu.Unlock()
			// A node that is restarting cannot answer; a wrong answer from a serving node is fatal.
			if err := fetchFile(c, urls[n%len(urls)], u.token, u.data); err != nil && strings.Contains(err.Error(), errPermanent.Error()) {
				l.mu.Lock()
				l.fatal = append(l.fatal, "read of an acknowledged upload: "+err.Error())
				l.mu.Unlock()
			}
		}
	}()
	return l
}

func (l *uploadLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *uploadLoad) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fatal) > 0 {
		t.Fatalf("load saw %d fatal answers, first: %s", len(l.fatal), l.fatal[0])
	}
}

func (l *uploadLoad) finish(t *testing.T) []ackedUpload {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	l.check(t)
	return l.acked
}

// TestE2ERollingUpgrade follows docs/upgrading.md: a 3-node cluster on the previous release, with
// files, tokens and an API key, is upgraded one node at a time (followers first, the leader last)
// to the current build under a bounded concurrent load. No acknowledged write is lost, every old
// file reads back byte-exact, the old tokens and key still work, and the mixed-version cluster
// serves between the steps.
func TestE2ERollingUpgrade(t *testing.T) {
	skipShort(t)
	old, rel := buildPreviousRelease(t)
	specs := loopbackSpecs(t, "upg", 3, 50)
	cl := newAgentCluster(t, specs, "1MiB")
	cl.bins = []string{old, old, old}
	c := newClient()
	cl.startAll()
	urls := cl.urls(0, 1, 2)
	waitReady(t, c, 60*time.Second, urls...)
	root := cl.rootKey

	// State written by the old release.
	r := runCLIProcess(t, old, "apikey", "create", "--addr", urls[0], "--key", root, "--name", "app")
	if r.code != 0 {
		t.Fatalf("old apikey create: %d %s", r.code, r.stderr)
	}
	appKey := keyLine.FindStringSubmatch(r.stdout)[1]
	type oldFile struct {
		full, read string
		data       []byte
	}
	var files []oldFile
	for i, size := range []int{1, 3 << 10, 200 << 10, 900 << 10} {
		data := randomBytes(t, size)
		full := upload(t, c, urls[i%3], appKey, fmt.Sprintf("old-%d", i), data)
		files = append(files, oldFile{full: full, read: createReadToken(t, c, urls[(i+1)%3], full), data: data})
	}
	checkOld := func(bases ...string) {
		t.Helper()
		for _, f := range files {
			expectFile(t, c, 20*time.Second, f.full, f.data, bases...)
			expectFile(t, c, 20*time.Second, f.read, f.data, bases...)
		}
	}
	checkOld(urls...)
	load := startUploadLoad(t, urls, appKey, 2)
	waitFor(t, 30*time.Second, "load running on the old release", func() error {
		if n := load.ackedCount(); n < 5 {
			return fmt.Errorf("%d uploads acknowledged", n)
		}
		return nil
	})

	// Followers first, the leader last.
	var mixedUntil uint64
	leader := leaderIndex(t, c, specs, 0, 1, 2)
	order := []int{(leader + 1) % 3, (leader + 2) % 3, leader}
	for step, i := range order {
		start := time.Now()
		cl.procs[i].signal(t, syscall.SIGTERM)
		if code := cl.procs[i].waitExit(t, 60*time.Second); code != 0 {
			t.Fatalf("%s (%s) exited %d on SIGTERM", specs[i].id, rel.tag, code)
		}
		cl.bins[i] = cairnBin
		cl.start(i)
		waitReady(t, c, 60*time.Second, urls...)
		// The mixed cluster serves: the load makes progress through the step, and every old file
		// reads back byte-exact through the new node.
		before := load.ackedCount()
		waitFor(t, 30*time.Second, "load progresses after the step", func() error {
			if n := load.ackedCount(); n < before+5 {
				return fmt.Errorf("%d uploads acknowledged, want %d", n, before+5)
			}
			return nil
		})
		load.check(t)
		checkOld(specs[i].url())
		// The new node reports its version and the old ones report none (they predate it). The
		// protocol gate holds new command kinds back while any server runs the old release.
		wantProtocol := min(oldProtocol, fsm.ProtocolVersion)
		if step == len(order)-1 {
			wantProtocol = fsm.ProtocolVersion
		}
		waitFor(t, 20*time.Second, "versions and cluster protocol in /v1/status", func() error {
			st, err := getVersions(c, specs[i].url())
			if err != nil {
				return err
			}
			for j := range specs {
				want := ""
				if cl.bins[j] == cairnBin {
					want = "dev"
				}
				if st.versions[specs[j].id] != want {
					return fmt.Errorf("%s reports version %q, want %q", specs[j].id, st.versions[specs[j].id], want)
				}
			}
			if st.clusterProtocol != wantProtocol {
				return fmt.Errorf("cluster protocol %d, want %d", st.clusterProtocol, wantProtocol)
			}
			return nil
		})
		if step == len(order)-1 {
			// Everything proposed up to here was proposed while some server ran the old release.
			st, err := getVersions(c, specs[i].url())
			if err != nil {
				t.Fatal(err)
			}
			mixedUntil = st.commitIndex
		}
		t.Logf("step %d: %s on the new build after %s; %d uploads acknowledged so far", step+1, specs[i].id,
			time.Since(start).Round(time.Millisecond), load.ackedCount())
	}

	acked := load.finish(t)
	t.Logf("%d uploads acknowledged under load, %d failed while nodes restarted", len(acked), load.failed)
	for _, u := range acked {
		expectFile(t, c, 20*time.Second, u.token, u.data, urls...)
	}
	checkOld(urls...)
	upload(t, c, urls[2], appKey, "after-upgrade", []byte("the old key still works"))
	out := mustCLI(t, "members", "--addr", urls[0])
	t.Logf("cairn members after the upgrade:\n%s", out)
	if strings.Contains(out, "unknown") {
		t.Fatalf("a member still reports no version after the upgrade:\n%s", out)
	}

	// The log shows it: no entry up to the end of the mixed phase is of a command kind the old
	// release does not speak.
	cl.procs[order[0]].signal(t, syscall.SIGTERM)
	cl.procs[order[0]].waitExit(t, 60*time.Second)
	checked, later := checkLogProtocols(t, filepath.Join(cl.dirs[order[0]], "raft", "raft.db"), mixedUntil, oldProtocol)
	t.Logf("%d commands up to index %d (mixed versions) all of protocol <= %d; %d commands after", checked, mixedUntil, oldProtocol, later)
}

// checkLogProtocols reads a stopped node's Raft log and fails the test if a command at or below
// index until is of a kind introduced after protocol maxProtocol. It returns how many commands it
// checked and how many lie after until.
func checkLogProtocols(t *testing.T, path string, until uint64, maxProtocol int) (checked, later int) {
	t.Helper()
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer store.Close()
	first, err := store.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first > 1 {
		t.Logf("the log starts at %d (compacted); earlier entries are in a snapshot", first)
	}
	for idx := first; idx <= last; idx++ {
		var l raft.Log
		if err := store.GetLog(idx, &l); err != nil {
			t.Fatalf("log %d: %v", idx, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if idx > until {
			later++
			continue
		}
		cmd, _, err := fsm.DecodeCommand(l.Data)
		if err != nil {
			t.Fatalf("log %d does not decode: %v", idx, err)
		}
		since, ok := fsm.CommandProtocol(cmd.Type)
		if !ok || since > maxProtocol {
			t.Fatalf("log %d holds %q (protocol %d) while a server spoke only protocol %d", idx, cmd.Type, since, maxProtocol)
		}
		checked++
	}
	if checked == 0 {
		t.Fatalf("no command at or below %d in %s", until, path)
	}
	return checked, later
}

// versionView is what /v1/status of one node says about versions.
type versionView struct {
	versions        map[string]string // member id to announced build version
	clusterProtocol int
	commitIndex     uint64
}

func getVersions(c *http.Client, base string) (versionView, error) {
	resp, err := c.Get(base + "/v1/status")
	if err != nil {
		return versionView{}, err
	}
	defer resp.Body.Close()
	var st struct {
		ClusterProtocol int    `json:"clusterProtocol"`
		CommitIndex     uint64 `json:"commitIndex"`
		Members         []struct {
			ID      string `json:"id"`
			Version string `json:"version"`
		} `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return versionView{}, err
	}
	v := versionView{versions: map[string]string{}, clusterProtocol: st.ClusterProtocol, commitIndex: st.CommitIndex}
	for _, m := range st.Members {
		v.versions[m.ID] = m.Version
	}
	return v, nil
}
