package main

// Harness for the end-to-end tests in e2e_test.go: it builds the real binary once, runs it as child
// processes, and talks to them over HTTP and TCP only, as an operator or a client would.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// cairnBin is the binary TestMain builds; it stays empty under -short, where every e2e test skips.
// It is written once before any test runs and only read afterwards.
var cairnBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTestMain(m))
}

func runTestMain(m *testing.M) int {
	if testing.Short() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "cairn-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "cairn")
	args := []string{"build", "-o", bin}
	// A race-enabled test run gets a race-enabled binary, so that a data race in a real process
	// fails the test (the child then exits 66 instead of 0).
	if raceEnabled() {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build cairn:", err)
		return 1
	}
	cairnBin = bin
	return m.Run()
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// skipShort marks a test as end-to-end: it runs real processes and takes seconds.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e test runs real cairn processes; skipped with -short")
	}
}

// tail is the last n bytes of s, so that a failure report stays readable.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// process is one running cairn child.
type process struct {
	name   string
	cmd    *exec.Cmd
	stdout testutil.SyncBuffer
	stderr testutil.SyncBuffer
	done   chan struct{} // closed once the process has exited and its output is copied
	exitAt time.Time     // when Wait returned; read only after done is closed
}

// startCairn runs the cairn binary with args and extra environment. The child does not inherit
// the caller's CAIRN_* variables, so a developer's shell cannot change what a test means. Cleanup
// kills it if it still runs, and prints its output if the test failed.
func startCairn(t *testing.T, name string, env []string, args ...string) *process {
	t.Helper()
	return startBinary(t, cairnBin, name, env, args...)
}

// startBinary is startCairn with another cairn binary (e.g. a previous release).
func startBinary(t *testing.T, bin, name string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAIRN_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	if os.Getenv("GORACE") == "" {
		// A race-enabled child otherwise sleeps 1 s at exit; races still make it exit 66.
		p.cmd.Env = append(p.cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.exitAt = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		// A process killed by a signal has no race exit code to show; its report is still there.
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			p.report(t)
		}
	})
	return p
}

// report prints the tail of the process's output and keeps all of it in a file that outlives the
// test, since a goroutine dump or a long log does not fit in a test log.
func (p *process) report(t *testing.T) {
	pid := p.cmd.Process.Pid
	t.Logf("--- %s (pid %d) stdout ---\n%s", p.name, pid, tail(p.stdout.String(), 4<<10))
	t.Logf("--- %s (pid %d) stderr ---\n%s", p.name, pid, tail(p.stderr.String(), 16<<10))
	f, err := os.CreateTemp("", "cairn-e2e-"+strings.ReplaceAll(p.name, " ", "-")+"-*.log")
	if err != nil {
		t.Logf("cannot keep the full output of %s: %v", p.name, err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s (pid %d) %q\n--- stdout ---\n%s\n--- stderr ---\n%s", p.name, pid, p.cmd.Args,
		p.stdout.String(), p.stderr.String())
	t.Logf("full output of %s (pid %d) kept in %s", p.name, pid, f.Name())
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// waitExit waits up to timeout for the process to exit and returns its exit code (-1 when a
// signal killed it). If it hangs, SIGQUIT makes the Go runtime dump every goroutine to stderr,
// which the cleanup prints, and the test fails.
func (p *process) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	t.Fatalf("%s did not exit within %s; goroutine dump (SIGQUIT) in its stderr below", p.name, timeout)
	return 0
}

// errPermanent marks a poll result that no amount of waiting will fix, such as wrong bytes.
var errPermanent = errors.New("permanent")

// waitForOrFail is waitFor that also stops at once on an error wrapping errPermanent.
func waitForOrFail(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var fatal error
	testutil.WaitForNil(t, timeout, what, func() error {
		err := cond()
		if errors.Is(err, errPermanent) {
			fatal = err
			return nil
		}
		return err
	})
	if fatal != nil {
		t.Fatalf("%s: %v", what, fatal)
	}
}

// newClient returns an HTTP client without keep-alives: a pooled connection to a process the test
// has just killed must not make the next request fail.
func newClient() *http.Client {
	return &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
}

// statusDoc is the part of GET /v1/status the tests read.
type statusDoc struct {
	NodeID   string `json:"nodeId"`
	LeaderID string `json:"leaderId"`
	Erasure  string `json:"erasure"`
	Members  []struct {
		ID            string `json:"id"`
		State         string `json:"state"`
		AcceptsShards bool   `json:"acceptsShards"`
	} `json:"members"`
}

func checkReady(c *http.Client, base string) error {
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/readyz: %s: %s", base, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

func waitReady(t *testing.T, c *http.Client, timeout time.Duration, bases ...string) {
	t.Helper()
	testutil.WaitForNil(t, timeout, "nodes ready", func() error {
		for _, b := range bases {
			if err := checkReady(c, b); err != nil {
				return err
			}
		}
		return nil
	})
}

func getStatus(c *http.Client, base string) (statusDoc, error) {
	var st statusDoc
	resp, err := c.Get(base + "/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s/v1/status: %s", base, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// postFile uploads data as the SDK does (a name part, then a file part) and returns the status
// and the raw answer.
func postFile(c *http.Client, base, key, name string, data []byte) (int, []byte, error) {
	var body bytes.Buffer
	status, _, answer, err := send(c, http.MethodPost, base+"/files/v1/", key, multipartWriter(&body, name, data), &body)
	return status, answer, err
}

// send sends a request, with key as bearer token unless it is empty, and returns the status, the
// headers and up to 1 MiB of the answer.
func send(c *http.Client, method, url, key, contentType string, body io.Reader) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, answer, err
}

// answerError judges an API answer for waitForOrFail: nil for a 200; a transport error or a 503
// (the documented "cannot serve yet, retry") as it is; any other status wrapped in errPermanent.
func answerError(status int, body []byte, err error) error {
	switch {
	case err != nil:
		return err
	case status == http.StatusServiceUnavailable:
		return fmt.Errorf("503: %s", body)
	case status != http.StatusOK:
		return fmt.Errorf("%w: status %d: %s", errPermanent, status, body)
	}
	return nil
}

// upload stores data through base and returns its full token. A 503 is the documented "cannot
// serve yet, retry" answer, so it is retried until the deadline; any other failure is final.
func upload(t *testing.T, c *http.Client, base, key, name string, data []byte) string {
	t.Helper()
	var token string
	waitForOrFail(t, 15*time.Second, "upload "+name+" through "+base, func() error {
		status, body, err := postFile(c, base, key, name, data)
		if err := answerError(status, body, err); err != nil {
			return err
		}
		var md struct {
			Size   int64 `json:"size"`
			Tokens []struct {
				Token       string `json:"token"`
				AccessLevel string `json:"accessLevel"`
			} `json:"tokens"`
		}
		if err := json.Unmarshal(body, &md); err != nil {
			return fmt.Errorf("%w: decode answer %q: %v", errPermanent, body, err)
		}
		if len(md.Tokens) == 0 || md.Tokens[0].Token == "" || md.Tokens[0].AccessLevel != "full" {
			return fmt.Errorf("%w: answer has no full token: %s", errPermanent, body)
		}
		if md.Size != int64(len(data)) {
			return fmt.Errorf("%w: answer says size %d, uploaded %d", errPermanent, md.Size, len(data))
		}
		token = md.Tokens[0].Token
		return nil
	})
	return token
}

// fetchFile reads a file's bytes; the error wraps errPermanent for an answer that waiting cannot
// fix: wrong bytes, or a 4xx (e.g. a node that forgot the token).
func fetchFile(c *http.Client, base, token string, want []byte) error {
	resp, err := c.Get(base + "/files/v1/" + token + "/file")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: read body: %w", base, err)
	}
	switch {
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return fmt.Errorf("%w: %s: status %d: %s", errPermanent, base, resp.StatusCode, tail(string(got), 512))
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s: status %d: %s", base, resp.StatusCode, tail(string(got), 512))
	case !bytes.Equal(got, want):
		return fmt.Errorf("%w: %s: got %d bytes, want %d, not byte-exact", errPermanent, base, len(got), len(want))
	}
	return nil
}

// expectFile waits until every base serves the file byte-exact.
func expectFile(t *testing.T, c *http.Client, timeout time.Duration, token string, want []byte, bases ...string) {
	t.Helper()
	for _, b := range bases {
		waitForOrFail(t, timeout, "read file through "+b, func() error { return fetchFile(c, b, token, want) })
	}
}

// metricValue reads one unlabelled metric from a node's /metrics.
func metricValue(c *http.Client, base, name string) (float64, error) {
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(text)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("metric %s not in %s/metrics", name, base)
}

// portFree reports whether port is free for TCP and UDP on ip (gossip takes both).
func portFree(ip string, port int) bool {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// freePorts returns n distinct ports, each free for TCP and UDP on every one of ips, drawn by
// listening on port 0. Another process may still take one before the child binds it; that is the
// usual, small risk of this technique.
func freePorts(t *testing.T, ips []string, n int) []int {
	t.Helper()
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			t.Fatalf("found only %d of %d free ports on %v", len(ports), n, ips)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", ips[0], err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if seen[port] {
			continue
		}
		seen[port] = true
		ok := true
		for _, ip := range ips {
			ok = ok && portFree(ip, port)
		}
		if ok {
			ports = append(ports, port)
		}
	}
	return ports
}

// agentSpec is one `cairn agent` of a test cluster.
type agentSpec struct {
	id                                string
	ip                                string
	httpPort, clusterPort, gossipPort int
}

func (a agentSpec) addr(port int) string { return net.JoinHostPort(a.ip, strconv.Itoa(port)) }

// url is the agent's plain HTTP address; agentCluster.urls knows whether the cluster runs HTTPS.
func (a agentSpec) url() string { return "http://" + a.addr(a.httpPort) }

// agentCluster runs `cairn agent` processes. Some settings go in as CAIRN_* variables and the
// rest as flags, and a restarted agent gets exactly the command line and environment it had.
type agentCluster struct {
	t       *testing.T
	rootKey string
	specs   []agentSpec
	dirs    []string
	env     []string
	procs   []*process
	// extra flags every agent gets after the common ones; bins[i], when set, is the binary agent i
	// runs instead of cairnBin (the upgrade test swaps it node by node).
	extra []string
	bins  []string
	// tls, when set, gives every agent the --tls-* flags of its certificate: HTTPS on the public
	// port and mutual TLS on the cluster port (useTLS, or a directory `cairn tls` wrote).
	tls *clusterTLS
}

// newAgentCluster prepares (but does not start) one agent per spec. The environment carries the
// join list, the bootstrap size, the root key and the size limit; it also carries an invalid
// CAIRN_ERASURE that the --erasure flag must override, which proves flags win over the
// environment.
func newAgentCluster(t *testing.T, specs []agentSpec, maxFileSize string) *agentCluster {
	c := &agentCluster{t: t, rootKey: "e2e-root-key-0123456789abcdef", specs: specs}
	var join []string
	for _, s := range specs {
		join = append(join, s.addr(s.gossipPort))
		c.dirs = append(c.dirs, t.TempDir())
	}
	c.env = []string{
		"CAIRN_JOIN=" + strings.Join(join, ","),
		"CAIRN_BOOTSTRAP_EXPECT=" + strconv.Itoa(len(specs)),
		"CAIRN_ROOT_KEY=" + c.rootKey,
		"CAIRN_MAX_FILE_SIZE=" + maxFileSize,
		"CAIRN_ERASURE=0+1",
	}
	c.procs = make([]*process, len(specs))
	return c
}

func (c *agentCluster) args(i int) []string {
	s := c.specs[i]
	args := []string{"agent",
		"--node-id", s.id,
		"--data-dir", c.dirs[i],
		"--http-addr", s.addr(s.httpPort),
		"--cluster-addr", s.addr(s.clusterPort),
		"--gossip-addr", s.addr(s.gossipPort),
		"--erasure", "2+1",
	}
	if c.tls != nil {
		args = append(args, c.tls.agentArgs(s.id)...)
	}
	return append(args, c.extra...)
}

// start runs agent i (again), with the same command line and environment every time.
func (c *agentCluster) start(i int) *process {
	bin := cairnBin
	if i < len(c.bins) && c.bins[i] != "" {
		bin = c.bins[i]
	}
	c.procs[i] = startBinary(c.t, bin, c.specs[i].id, c.env, c.args(i)...)
	return c.procs[i]
}

func (c *agentCluster) startAll() {
	for i := range c.specs {
		c.start(i)
	}
}

// urls are the public addresses of agents idx, https:// when the cluster runs TLS.
func (c *agentCluster) urls(idx ...int) []string {
	var out []string
	for _, i := range idx {
		u := c.specs[i].url()
		if c.tls != nil {
			u = "https://" + c.specs[i].addr(c.specs[i].httpPort)
		}
		out = append(out, u)
	}
	return out
}

// client is an HTTP client for the agents: newClient, or with TLS one that trusts the cluster CA
// and presents the client certificate.
func (c *agentCluster) client() *http.Client {
	if c.tls == nil {
		return newClient()
	}
	return c.tls.client(c.t)
}

// stopAll sends sig to every agent at once and expects each to exit 0 within timeout, as a
// graceful shutdown of a whole cluster does.
func (c *agentCluster) stopAll(sig syscall.Signal, timeout time.Duration) {
	t := c.t
	t.Helper()
	start := time.Now()
	for _, p := range c.procs {
		p.signal(t, sig)
	}
	deadline := start.Add(timeout)
	for _, p := range c.procs {
		code := p.waitExit(t, time.Until(deadline))
		t.Logf("%s exited %d after %s", p.name, code, time.Since(start).Round(time.Millisecond))
		if code != 0 {
			t.Errorf("%s exited %d after %v, want 0", p.name, code, sig)
		}
	}
}

// requireTool finds a program the test needs. Without it the test skips, except under CI=true,
// where .ci/run installs it and its absence is a failure.
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (.ci/run installs Debian's %s package): %v", name, debianPackage, err)
	}
	t.Skipf("%s is missing (apt-get install %s): %v", name, debianPackage, err)
	return ""
}

// requireLoopbackAliases skips the test unless every ip (127.0.0.2, …) can be bound here.
func requireLoopbackAliases(t *testing.T, ips []string) {
	t.Helper()
	for _, ip := range ips {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("cannot bind %s (loopback aliases beyond 127.0.0.1 are not routed here): %v", ip, err)
		}
		l.Close()
	}
}

// waitLeader waits until one of the nodes at urls says it leads, and returns its index.
func waitLeader(t *testing.T, c *http.Client, timeout time.Duration, urls []string) int {
	t.Helper()
	leader := -1
	testutil.WaitForNil(t, timeout, "a leader", func() error {
		for i, u := range urls {
			st, err := getStatus(c, u)
			if err != nil {
				return err
			}
			if st.LeaderID == st.NodeID {
				leader = i
				return nil
			}
		}
		return errors.New("no node says it leads")
	})
	return leader
}
