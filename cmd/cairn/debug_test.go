package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/testcluster"
)

// debugCluster runs three nodes; node0 runs with --enable-debug, the others without. (Only one:
// a CPU profile is per process, and these nodes share one.)
func debugCluster(t *testing.T) (*testcluster.Cluster, []string) {
	t.Helper()
	skipShort(t)
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *node.Config) {
		cfg.EnableDebug = i == 0
	}})
	var urls []string
	for i := range c.Size() {
		urls = append(urls, "http://"+c.Node(i).HTTPAddr())
	}
	return c, urls
}

// createKey makes an API key with the given permissions through the CLI and returns its secret.
func createKey(t *testing.T, addr, rootKey, perms string) string {
	t.Helper()
	r := runCLI(t, "apikey", "create", "--addr", addr, "--key", rootKey, "--name", "k", "--permissions", perms)
	if r.code != 0 {
		t.Fatalf("apikey create: exit %d: %v", r.code, r.err)
	}
	m := regexp.MustCompile(`(?m)^key:\s+(\S+)$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no key in %q", r.stdout)
	}
	return m[1]
}

type v1ErrorBody struct {
	Code    int    `json:"code"`
	Name    string `json:"name"`
	Message string `json:"message"`
}

// TestPprofNeedsEnableDebugAndManageCluster: /debug/pprof answers only on a node started with
// --enable-debug, and only to a key with MANAGE_CLUSTER; the refusal names the permission.
// /v1/config shows the configuration with the secrets redacted, to the same keys.
func TestPprofNeedsEnableDebugAndManageCluster(t *testing.T) {
	c, urls := debugCluster(t)
	viewer := createKey(t, urls[0], c.RootKey, "VIEW_FILES")
	noPerms := createKey(t, urls[0], c.RootKey, "")
	get := func(base, path, key string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	wantV1 := func(what string, status int, body []byte, wantStatus, wantCode int, wantMsg string) {
		t.Helper()
		var e v1ErrorBody
		if err := json.Unmarshal(body, &e); err != nil || status != wantStatus || e.Code != wantCode || !strings.Contains(e.Message, wantMsg) {
			t.Fatalf("%s: %d %s, want %d code %d with %q", what, status, body, wantStatus, wantCode, wantMsg)
		}
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap", "/debug/pprof/cmdline", "/v1/config"} {
		status, body := get(urls[0], path, "")
		wantV1(path+" without a key", status, body, http.StatusUnauthorized, 104, "API key")
		status, body = get(urls[0], path, "ck_unknown")
		wantV1(path+" with an unknown key", status, body, http.StatusUnauthorized, 104, "API key")
		status, body = get(urls[0], path, viewer)
		wantV1(path+" with VIEW_FILES only", status, body, http.StatusUnauthorized, 10, "MANAGE_CLUSTER")
		status, body = get(urls[0], path, noPerms)
		wantV1(path+" with no permission", status, body, http.StatusUnauthorized, 10, "MANAGE_CLUSTER")
		if status, body := get(urls[0], path, c.RootKey); status != http.StatusOK || len(body) == 0 {
			t.Fatalf("%s with the root key: %d %s", path, status, body)
		}
	}
	if status, body := get(urls[0], "/debug/pprof/goroutine?debug=1", c.RootKey); !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("goroutine profile: %d %.200s", status, body)
	}
	// node2 runs without --enable-debug: no profiles, even for the root key, but its config.
	status, body := get(urls[2], "/debug/pprof/goroutine", c.RootKey)
	wantV1("pprof without --enable-debug", status, body, http.StatusNotFound, 16, "")
	status, body = get(urls[2], "/v1/config", c.RootKey)
	if status != http.StatusOK {
		t.Fatalf("/v1/config: %d %s", status, body)
	}
	if strings.Contains(string(body), c.RootKey) {
		t.Fatalf("/v1/config shows the root key: %s", body)
	}
	var cfg map[string]any
	if err := json.Unmarshal(body, &cfg); err != nil || cfg["RootKey"] != "<redacted>" || cfg["NodeID"] != "node2" ||
		cfg["EnableDebug"] != false || cfg["MaxFileSize"] == nil {
		t.Fatalf("/v1/config = %v (%v)", cfg, err)
	}

	// The missing permission is named on the file routes too.
	status, body = get(urls[1], "/files/v1/", noPerms)
	wantV1("list without VIEW_FILES", status, body, http.StatusUnauthorized, 10, "VIEW_FILES")
}

// TestDebugArchiveAndStatusAll: cairn debug captures every node into one archive, noting what a
// node without --enable-debug cannot give; no secret is in it. cairn status --all shows every
// node's own view.
func TestDebugArchiveAndStatusAll(t *testing.T) {
	c, urls := debugCluster(t)
	out := filepath.Join(t.TempDir(), "capture.tar.gz")
	r := runCLI(t, "debug", "--addr", urls[1], "--key", c.RootKey, "--duration", "1s", "--interval", "500ms", "--output", out)
	if r.code != 0 {
		t.Fatalf("cairn debug: exit %d: %v\n%s", r.code, r.err, r.stderr)
	}
	if strings.TrimSpace(r.stdout) != out {
		t.Fatalf("cairn debug printed %q, want the archive's name", r.stdout)
	}
	files := readArchive(t, out)
	for _, id := range []string{"node0", "node1", "node2"} {
		for _, name := range []string{"status.json", "config.json", "metrics-00.prom", "metrics-01.prom", "metrics-02.prom"} {
			if len(files["capture/"+id+"/"+name]) == 0 {
				t.Errorf("the archive lacks %s/%s", id, name)
			}
		}
	}
	for _, name := range []string{"goroutine.txt", "heap.prof", "profile.prof"} {
		if len(files["capture/node0/"+name]) == 0 {
			t.Errorf("the archive lacks node0/%s", name)
		}
	}
	if _, ok := files["capture/node0/errors.txt"]; ok {
		t.Errorf("node0 has errors: %s", files["capture/node0/errors.txt"])
	}
	for _, id := range []string{"node1", "node2"} {
		if e := string(files["capture/"+id+"/errors.txt"]); !strings.Contains(e, "--enable-debug") {
			t.Errorf("%s's errors.txt does not say why its profiles are missing: %q", id, e)
		}
	}
	if !strings.Contains(string(files["capture/node0/goroutine.txt"]), "goroutine ") ||
		!strings.Contains(string(files["capture/node1/metrics-00.prom"]), "cairn_http_requests_total") {
		t.Error("a profile or metrics sample is not what it should be")
	}
	var index struct {
		Nodes []struct{ ID string }
	}
	if err := json.Unmarshal(files["capture/index.json"], &index); err != nil || len(index.Nodes) != 3 {
		t.Errorf("index.json: %s (%v)", files["capture/index.json"], err)
	}
	for name, b := range files {
		if strings.Contains(string(b), c.RootKey) {
			t.Errorf("%s holds the root key", name)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 1 {
		t.Errorf("temporary files left beside the archive: %v", entries)
	}
	// A key without MANAGE_CLUSTER gets nothing but the refusal in each node's errors.
	viewer := createKey(t, urls[0], c.RootKey, "VIEW_FILES")
	out2 := filepath.Join(t.TempDir(), "denied.tar.gz")
	if r := runCLI(t, "debug", "--addr", urls[0], "--key", viewer, "--duration", "1s", "--interval", "1s", "--output", out2); r.code != 0 {
		t.Fatalf("cairn debug with a viewer key: exit %d: %v", r.code, r.err)
	}
	if e := string(readArchive(t, out2)["denied/node0/errors.txt"]); !strings.Contains(e, "MANAGE_CLUSTER") {
		t.Errorf("errors.txt of a denied capture: %q", e)
	}

	// status --all: one column per node, every node's own view.
	r = runCLI(t, "status", "--all", "--addr", strings.TrimPrefix(urls[2], "http://"))
	if r.code != 0 {
		t.Fatalf("status --all: exit %d: %v", r.code, r.err)
	}
	lines := strings.Split(r.stdout, "\n")
	if !regexp.MustCompile(`^NODE\s+node0\s+node1\s+node2\s*$`).MatchString(lines[0]) {
		t.Fatalf("status --all header: %q", lines[0])
	}
	leader := c.WaitLeader(10e9)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^leader\s+(node\d)\s+(node\d)\s+(node\d)\s*$`),
		regexp.MustCompile(`(?m)^raft state\s+(\w+)\s+(\w+)\s+(\w+)\s*$`),
		regexp.MustCompile(`(?m)^members alive\s+3/3\s+3/3\s+3/3\s*$`),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("status --all lacks %s:\n%s", want, r.stdout)
		}
	}
	if m := regexp.MustCompile(`(?m)^raft state\s+(\w+)\s+(\w+)\s+(\w+)`).FindStringSubmatch(r.stdout); m != nil && m[1+leader] != "Leader" {
		t.Errorf("node%d is the leader but its column says %s:\n%s", leader, m[1+leader], r.stdout)
	}
	r = runCLI(t, "status", "--all", "--json", "--addr", urls[0])
	var views []nodeView
	if err := json.Unmarshal([]byte(r.stdout), &views); err != nil || len(views) != 3 || len(views[0].Status) == 0 {
		t.Fatalf("status --all --json: %v %q", err, r.stdout)
	}
}

func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
	}
}
