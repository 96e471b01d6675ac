package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	snapshot "github.com/hashicorp/raft-snapshot"

	"github.com/cairn-dev/cairn/core"
	"github.com/cairn-dev/cairn/fsm"
	"github.com/cairn-dev/cairn/internal/fsmtest"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// snapshotState is the replicated metadata an archive holds, as canonical JSON per table.
type snapshotState struct {
	config, files, tokens, apiKeys string
}

// decodeSnapshotFile unpacks an archive with raft-snapshot and loads its state into a fresh FSM
// through the same Restore a node uses, then reads every table back.
func decodeSnapshotFile(t *testing.T, path string) snapshotState {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var state bytes.Buffer
	if _, err := snapshot.Parse(f, &state); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	m := fsmtest.New(t)
	if err := m.Restore(io.NopCloser(&state)); err != nil {
		t.Fatalf("restore %s into an FSM: %v", path, err)
	}
	cfg, _ := m.Config()
	var files []fsm.File
	m.Files(func(f fsm.File) bool { files = append(files, f); return true })
	var tokens []fsm.Token
	m.Tokens(func(tok fsm.Token) bool { tokens = append(tokens, tok); return true })
	js := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return snapshotState{config: js(cfg), files: js(files), tokens: js(tokens), apiKeys: js(m.APIKeys())}
}

func (s snapshotState) diff(o snapshotState) string {
	var d []string
	for _, p := range []struct{ name, a, b string }{
		{"config", s.config, o.config}, {"files", s.files, o.files}, {"tokens", s.tokens, o.tokens}, {"api keys", s.apiKeys, o.apiKeys},
	} {
		if p.a != p.b {
			d = append(d, fmt.Sprintf("%s differ:\n  %s\n  %s", p.name, tail(p.a, 600), tail(p.b, 600)))
		}
	}
	return strings.Join(d, "\n")
}

var (
	keyLine   = regexp.MustCompile(`(?m)^key:\s+(\S+)$`)
	keyIDLine = regexp.MustCompile(`(?m)^id:\s+(\S+)$`)
)

// TestE2ESnapshotSaveRestore follows docs/operations.md "Backup and restore": save through a
// follower, inspect, change the cluster (upload, delete, revoke a token and a key), refuse bad
// archives and a concurrent restore, restore, and check that the state is the snapshot's, that its
// files read back byte-exact, and that the shards of the file created after it are collected.
func TestE2ESnapshotSaveRestore(t *testing.T) {
	skipShort(t)
	specs := loopbackSpecs(t, "snap", 3, 20)
	cl := newAgentCluster(t, specs, "1MiB")
	cl.extra = []string{"--gc-interval", "300ms", "--gc-grace-period", "5s"}
	c := newClient()
	cl.startAll()
	urls := cl.urls(0, 1, 2)
	waitReady(t, c, 30*time.Second, urls...)
	leader := leaderIndex(t, c, specs, 0, 1, 2)
	follower := (leader + 1) % 3
	root, dirs := cl.rootKey, cl.dirs

	out := mustCLI(t, "apikey", "create", "--addr", urls[follower], "--key", root, "--name", "app")
	appKey, appID := keyLine.FindStringSubmatch(out)[1], keyIDLine.FindStringSubmatch(out)[1]
	dataA, dataB := randomBytes(t, 300<<10), randomBytes(t, 70<<10)
	tokA, idA := uploadTracked(t, c, urls[0], root, "a.bin", dataA, dirs)
	tokB, _ := uploadTracked(t, c, urls[1], appKey, "b.bin", dataB, dirs)
	readB := createReadToken(t, c, urls[2], tokB)

	// Save through a follower (it forwards to the leader), then inspect.
	snapFile := filepath.Join(t.TempDir(), "cairn.snap")
	out = mustCLI(t, "snapshot", "save", "--addr", urls[follower], "--key", root, snapFile)
	t.Logf("save: %s", out)
	out = mustCLI(t, "snapshot", "inspect", "--addr", urls[leader], "--key", root, snapFile)
	t.Logf("inspect:\n%s", out)
	for _, want := range []string{`(?m)^files\s+2$`, `(?m)^tokens\s+3$`, `(?m)^api keys\s+2$`, `(?m)^cairn version\s+dev$`, `(?m)^index\s+\d+$`, `(?m)^term\s+\d+$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Fatalf("inspect output lacks %s:\n%s", want, out)
		}
	}
	saved := decodeSnapshotFile(t, snapFile)

	// Changes after the snapshot: an upload, a delete, a token and a key revoked.
	dataC := randomBytes(t, 50<<10)
	tokC, idC := uploadTracked(t, c, urls[2], root, "c.bin", dataC, dirs)
	if status, body, err := apiCall(c, http.MethodDelete, urls[0]+"/files/v1/"+tokA, "", nil); err != nil || status != http.StatusOK {
		t.Fatalf("delete a.bin: %d %s %v", status, body, err)
	}
	if status, body, err := apiCall(c, http.MethodDelete, urls[1]+"/files/v1/"+tokB+"/tokens/"+readB, "", nil); err != nil || status != http.StatusOK {
		t.Fatalf("revoke the read token of b.bin: %d %s %v", status, body, err)
	}
	mustCLI(t, "apikey", "revoke", "--addr", urls[2], "--key", root, appID)
	testutil.WaitForNil(t, 15*time.Second, "shards of the deleted a.bin removed", func() error {
		if n := len(shardsOnDisk(t, dirs...)[idA]); n != 0 {
			return fmt.Errorf("a.bin still has shards in %d segments", n)
		}
		return nil
	})

	// Bad input changes nothing: truncated, tampered and foreign archives are refused.
	raw, err := os.ReadFile(snapFile)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{"truncated": raw[:len(raw)/2], "tampered": bytes.Clone(raw)}
	bad["tampered"][len(raw)/2] ^= 0x40
	other := loopbackSpecs(t, "other", 1, 23)
	ocl := newAgentCluster(t, other, "1MiB")
	ocl.extra = []string{"--erasure", "1+1", "--write-quorum", "1"} // one node: readiness needs k alive members
	ocl.startAll()
	waitReady(t, c, 30*time.Second, ocl.urls(0)...)
	foreign := filepath.Join(t.TempDir(), "foreign.snap")
	mustCLI(t, "snapshot", "save", "--addr", ocl.urls(0)[0], "--key", ocl.rootKey, foreign)
	ocl.procs[0].signal(t, 9)
	for name, b := range bad {
		p := filepath.Join(t.TempDir(), name+".snap")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		bad[name] = nil
		for _, sub := range []string{"inspect", "restore"} {
			r := runCLIProcess(t, cairnBin, "snapshot", sub, "--addr", urls[follower], "--key", root, p)
			if r.code == 0 || !strings.Contains(r.stderr, "the snapshot is refused") || !strings.Contains(r.stderr, "BODY_FORMAT_EXCEPTION, code 22, HTTP 400") {
				t.Fatalf("snapshot %s of a %s archive: exit %d, stderr %q; want a refusal", sub, name, r.code, r.stderr)
			}
			t.Logf("%s %s: %s", sub, name, strings.TrimSpace(r.stderr))
		}
	}
	for _, sub := range []string{"inspect", "restore"} {
		r := runCLIProcess(t, cairnBin, "snapshot", sub, "--addr", urls[leader], "--key", root, foreign)
		if r.code == 0 || !strings.Contains(r.stderr, "the snapshot belongs to cluster") || !strings.Contains(r.stderr, "HTTP 409") {
			t.Fatalf("snapshot %s of another cluster's archive: exit %d, stderr %q; want a refusal", sub, r.code, r.stderr)
		}
		t.Logf("%s foreign: %s", sub, strings.TrimSpace(r.stderr))
	}
	expectFile(t, c, 10*time.Second, tokC, dataC, urls...) // still the changed state

	// A restore while another runs is refused. The first one is held open half-sent; it owns the
	// leader's restore slot once the leader spools its upload.
	pr, pw := io.Pipe()
	first := make(chan *http.Response, 1)
	firstErr := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, urls[follower]+"/v1/snapshot", pr)
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			firstErr <- err
			return
		}
		first <- resp
	}()
	if _, err := pw.Write(raw[:len(raw)/2]); err != nil {
		t.Fatal(err)
	}
	testutil.WaitForNil(t, 10*time.Second, "the first restore spooling on the leader", func() error {
		m, _ := filepath.Glob(filepath.Join(dirs[leader], "snapshot-upload-*.tmp"))
		if len(m) == 0 {
			return fmt.Errorf("no upload spool in %s", dirs[leader])
		}
		return nil
	})
	r := runCLIProcess(t, cairnBin, "snapshot", "restore", "--addr", urls[leader], "--key", root, snapFile)
	if r.code == 0 || !strings.Contains(r.stderr, "another restore is running") || !strings.Contains(r.stderr, "HTTP 409") {
		t.Fatalf("second restore: exit %d, stderr %q; want it refused", r.code, r.stderr)
	}
	if _, err := pw.Write(raw[len(raw)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var rep core.RestoreReport
	select {
	case err := <-firstErr:
		t.Fatalf("first restore: %v", err)
	case resp := <-first:
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("first restore: %s: %s", resp.Status, body)
		}
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatal(err)
		}
		t.Logf("restore report: %s", body)
	case <-time.After(time.Minute):
		t.Fatal("first restore did not answer within a minute")
	}
	// a.bin is back in the metadata, but its shards went with its delete: reported unreadable.
	if rep.UnreadableFiles != 1 || len(rep.UnreadableFileIDs) != 1 || rep.UnreadableFileIDs[0] != idA || rep.Snapshot.Files != 2 {
		t.Fatalf("restore report %+v: want 2 files, 1 unreadable (%s)", rep, idA)
	}

	// The state is the snapshot's.
	again := filepath.Join(t.TempDir(), "again.snap")
	mustCLI(t, "snapshot", "save", "--addr", urls[leader], "--key", root, again)
	if d := saved.diff(decodeSnapshotFile(t, again)); d != "" {
		t.Fatalf("state after restore differs from the snapshot:\n%s", d)
	}
	// On every node: b.bin byte-exact through its full and its (revived) read token; c.bin and
	// its token are gone; a.bin's token is known again but its bytes are not there.
	expectFile(t, c, 20*time.Second, tokB, dataB, urls...)
	expectFile(t, c, 20*time.Second, readB, dataB, urls...)
	for _, u := range urls {
		waitForOrFail(t, 10*time.Second, "c.bin gone through "+u, func() error {
			status, body, err := apiCall(c, http.MethodGet, u+"/files/v1/"+tokC+"/file", "", nil)
			if err != nil || status != http.StatusBadRequest || !strings.Contains(string(body), "INVALID_TOKEN") {
				return fmt.Errorf("c.bin after restore: %d %s %v", status, body, err)
			}
			return nil
		})
		if status, _, err := apiCall(c, http.MethodGet, u+"/files/v1/"+tokA+"/details", "", nil); err != nil || status != http.StatusOK {
			t.Fatalf("a.bin's metadata after restore through %s: %d %v", u, status, err)
		}
		if err := fetchFile(c, u, tokA, dataA); err == nil {
			t.Fatalf("a.bin read back through %s although its shards are gone", u)
		}
	}
	// The revoked key works again.
	upload(t, c, urls[follower], appKey, "d.bin", []byte("after the restore"))
	// The shards of c.bin, created after the snapshot, are garbage now: GC removes them after its
	// grace period.
	testutil.WaitForNil(t, 30*time.Second, "GC collects c.bin's shards", func() error {
		if n := len(shardsOnDisk(t, dirs...)[idC]); n != 0 {
			return fmt.Errorf("c.bin still has shards in %d segments", n)
		}
		return nil
	})
}
