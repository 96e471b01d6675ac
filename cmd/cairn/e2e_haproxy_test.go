package main

// A real HAProxy (deploy/haproxy.cfg, Debian's package) in front of three real agents, under a
// bounded load of uploads, downloads and token creates from concurrent clients, while one node at
// a time is SIGKILLed and restarted (a follower, then the leader) and then every node is restarted
// gracefully, one after another. Every client request is counted: the graceful rolling restart
// must cost nothing; a SIGKILL may cost only the requests already in flight on the killed node.
// TestE2EHAProxyTLS runs the same with deploy/haproxy-tls.cfg in front of agents serving HTTPS
// and requiring client certificates.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
	"github.com/cairn-dev/cairn/pki"
)

// lbRequest is one client request through the load balancer and how it ended.
type lbRequest struct {
	op         string
	start, end time.Time
	status     int
	node       string // X-Cairn-Node: the HAProxy server that answered ("" without an answer)
	err        error  // transport error, wrong status or wrong bytes
}

// lbEvent is one fault the test injected.
type lbEvent struct {
	what     string
	node     string
	at       time.Time     // signal sent
	gone     time.Time     // the process was reaped: its sockets, backlog included, are closed
	downFor  time.Duration // until HAProxy marked the node down
	upAgain  time.Time     // HAProxy marked it up after its restart
	sigkill  bool
	inFlight int // failed requests that were in flight on the killed node
}

func TestE2EHAProxy(t *testing.T) { testHAProxyFaults(t, false) }

// TestE2EHAProxyTLS: HTTPS from the clients to HAProxy and from HAProxy to the agents, which
// HAProxy verifies against the cluster CA and which require its client certificate
// (deploy/haproxy-tls.cfg); health checks run over TLS too.
func TestE2EHAProxyTLS(t *testing.T) { testHAProxyFaults(t, true) }

// testHAProxyFaults is the scenario of both tests, with plain HTTP or TLS on every hop.
func testHAProxyFaults(t *testing.T, withTLS bool) {
	skipShort(t)
	haproxyBin := requireTool(t, "haproxy", "haproxy")
	// The drain must outlast HAProxy's detection (inter 1s, fall 2): 5 s leaves room on a loaded
	// machine and keeps the test short; the default is 10 s.
	cl := newLocalCluster(t, 3, false, "CAIRN_DRAIN_DELAY=5s")
	if withTLS {
		cl.useTLS(true)
	}
	c := cl.client()
	cl.startAll()
	waitReady(t, c, 30*time.Second, cl.urls(0, 1, 2)...)

	if withTLS {
		// HAProxy does verify the nodes: trusting another CA, it finds every node DOWN.
		foreign, foreignKey := filepath.Join(t.TempDir(), "foreign-ca.pem"), filepath.Join(t.TempDir(), "foreign-ca-key.pem")
		ca, caKey, err := pki.NewCA("another CA", time.Hour)
		if err == nil {
			err = pki.WriteFiles(foreign, ca.CertPEM, foreignKey, caKey)
		}
		if err != nil {
			t.Fatal(err)
		}
		distrustful := startHAProxy(t, haproxyBin, cl, "CAIRN_LB_CA_FILE="+foreign)
		distrustful.waitAll(t, "DOWN", 30*time.Second)
		checks, err := distrustful.stat("last_chk")
		if err != nil {
			t.Fatal(err)
		}
		for name, last := range checks {
			if !strings.Contains(last, "SSL handshake failure") {
				t.Errorf("HAProxy trusting another CA: %s's last check says %q, want an SSL handshake failure", name, last)
			}
		}
		distrustful.stop()
	}
	lb := startHAProxy(t, haproxyBin, cl)
	lb.waitAll(t, "UP", 30*time.Second)
	base := lb.url

	// Seed files written with all three nodes up: each has all its shards, so it survives any one
	// node being down. (A file uploaded while a node is down has k shards until repair places the
	// last one, and one more failure makes it unreadable: see docs/operations.md.)
	type seeded struct {
		token string
		data  []byte
	}
	var seeds []seeded
	for i := range 3 {
		data := randomBytes(t, 200<<10+i)
		seeds = append(seeds, seeded{upload(t, c, base, cl.rootKey, fmt.Sprintf("seed%d.bin", i), data), data})
	}

	// The load: bounded in time (the test's own deadline) and in count (maxOps per client).
	const clients, maxOps = 6, 4000
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var (
		mu       sync.Mutex
		requests []lbRequest
		wg       sync.WaitGroup
	)
	for w := range clients {
		wg.Go(func() {
			// One connection per request: with keep-alive, a request in flight on a node that is
			// SIGKILLed can end with HAProxy closing the client connection without an answer,
			// which no log or header ties to the killed node, so it could not be counted as
			// excused or not.
			hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: lb.clientTLS}}
			rng := mathrand.New(mathrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			body := make([]byte, 64<<10)
			for i := 0; i < maxOps && ctx.Err() == nil; i++ {
				seed := seeds[rng.IntN(len(seeds))]
				var r lbRequest
				switch i % 3 {
				case 0:
					for j := range body {
						body[j] = byte(rng.Uint32())
					}
					r = lbUpload(hc, base, cl.rootKey, body)
				case 1:
					r = lbDownload(hc, base, seed.token, seed.data)
				default:
					r = lbCreateToken(hc, base, seed.token)
				}
				mu.Lock()
				requests = append(requests, r)
				mu.Unlock()
			}
		})
	}
	loadStart := time.Now()

	var events []*lbEvent
	leaderIndex := func() int {
		var leader string
		testutil.WaitForNil(t, 15*time.Second, "a leader", func() (err error) { leader, err = leaderOf(c, base); return err })
		for i, s := range cl.specs {
			if s.id == leader {
				return i
			}
		}
		t.Fatalf("leader %q is none of the agents", leader)
		return -1
	}
	settle := func() {
		lb.waitAll(t, "UP", 60*time.Second)
		time.Sleep(time.Second) // a second of load with every node up between faults
	}
	fault := func(what string, i int, sig syscall.Signal) {
		ev := &lbEvent{what: what, node: cl.specs[i].id, sigkill: sig == syscall.SIGKILL}
		ev.at = time.Now()
		cl.procs[i].signal(t, sig)
		ev.downFor = lb.waitState(t, cl.specs[i].id, "DOWN", 30*time.Second).Sub(ev.at)
		code := cl.procs[i].waitExit(t, 40*time.Second)
		ev.gone = cl.procs[i].exitAt
		if sig == syscall.SIGTERM && code != 0 {
			t.Errorf("%s exited %d after SIGTERM, want 0", cl.specs[i].id, code)
		}
		cl.start(i)
		ev.upAgain = lb.waitState(t, cl.specs[i].id, "UP", 60*time.Second)
		events = append(events, ev)
		t.Logf("%s %s: HAProxy marked it down after %s, up again %s after the signal", what, ev.node,
			ev.downFor.Round(time.Millisecond), ev.upAgain.Sub(ev.at).Round(time.Millisecond))
		settle()
	}

	settle()
	leader := leaderIndex()
	fault("SIGKILL follower", (leader+1)%3, syscall.SIGKILL)
	fault("SIGKILL leader", leaderIndex(), syscall.SIGKILL)
	rollingStart := time.Now()
	for i := range cl.specs {
		fault("graceful restart", i, syscall.SIGTERM)
	}
	rollingEnd := time.Now()
	stopLoad()
	wg.Wait()
	loadEnd := time.Now()

	// Judge every request.
	byOp := map[string][2]int{} // op -> {total, failed}
	var unexpected []lbRequest
	for _, r := range requests {
		n := byOp[r.op]
		n[0]++
		if r.err == nil {
			byOp[r.op] = n
			continue
		}
		n[1]++
		byOp[r.op] = n
		if ev := killInFlight(events, r); ev != nil {
			ev.inFlight++
			continue
		}
		unexpected = append(unexpected, r)
	}
	t.Logf("load: %d clients, %d requests in %s (the rolling restart took %s)", clients, len(requests),
		loadEnd.Sub(loadStart).Round(time.Millisecond), rollingEnd.Sub(rollingStart).Round(time.Millisecond))
	for _, op := range slices.Sorted(func(yield func(string) bool) {
		for op := range byOp {
			if !yield(op) {
				return
			}
		}
	}) {
		t.Logf("  %-13s %5d requests, %d failed", op, byOp[op][0], byOp[op][1])
	}
	t.Logf("  %-17s %-6s %-15s %-12s %s", "fault", "node", "marked down in", "up again in", "failed requests in flight on it")
	for _, ev := range events {
		t.Logf("  %-17s %-6s %-15s %-12s %d", ev.what, ev.node, ev.downFor.Round(time.Millisecond),
			ev.upAgain.Sub(ev.at).Round(time.Millisecond), ev.inFlight)
		if !ev.sigkill && ev.inFlight != 0 {
			t.Errorf("graceful restart of %s cost %d requests", ev.node, ev.inFlight)
		}
	}
	for i, r := range unexpected {
		if i == 20 {
			t.Errorf("... and %d more", len(unexpected)-20)
			break
		}
		t.Errorf("request not excused by a SIGKILL: %s started %s after the load began, took %s, node %q, status %d: %v",
			r.op, r.start.Sub(loadStart).Round(time.Millisecond), r.end.Sub(r.start).Round(time.Millisecond), r.node, r.status, r.err)
	}
	if len(requests) < 100 {
		t.Errorf("only %d requests ran: the load did not exercise the faults", len(requests))
	}
	cl.stopAll(syscall.SIGTERM, 40*time.Second)
}

// killInFlight is the SIGKILL that excuses failed request r: r was answered (or cut off) for the
// killed node and had started before the killed process was gone. Until the kernel has reaped it,
// its listening socket still completes TCP handshakes into the backlog, so HAProxy's connection
// succeeds and then meets a reset ("invalid or incomplete response"); a request sent after that
// meets a refused connection, which HAProxy retries on another node.
func killInFlight(events []*lbEvent, r lbRequest) *lbEvent {
	for _, ev := range events {
		if !ev.sigkill || r.start.After(ev.gone) || r.end.Before(ev.at) {
			continue
		}
		if r.node == ev.node {
			return ev
		}
	}
	return nil
}

func lbUpload(hc *http.Client, base, key string, data []byte) lbRequest {
	r := lbRequest{op: "upload", start: time.Now()}
	defer func() { r.end = time.Now() }()
	status, node, body, err := lbPost(hc, base, key, data)
	r.status, r.node = status, node
	switch {
	case err != nil:
		r.err = err
	case status != http.StatusOK:
		r.err = fmt.Errorf("status %d: %s", status, tail(string(body), 200))
	case !bytes.Contains(body, []byte(`"accessLevel":"full"`)):
		r.err = fmt.Errorf("no full token in %s", tail(string(body), 200))
	}
	r.end = time.Now()
	return r
}

func lbPost(hc *http.Client, base, key string, data []byte) (int, string, []byte, error) {
	var body bytes.Buffer
	status, header, answer, err := send(hc, http.MethodPost, base+"/files/v1/", key, multipartWriter(&body, "load.bin", data), &body)
	return status, header.Get("X-Cairn-Node"), answer, err
}

func lbDownload(hc *http.Client, base, token string, want []byte) lbRequest {
	r := lbRequest{op: "download", start: time.Now()}
	resp, err := hc.Get(base + "/files/v1/" + token + "/file")
	if err != nil {
		r.err, r.end = err, time.Now()
		return r
	}
	defer resp.Body.Close()
	r.status, r.node = resp.StatusCode, resp.Header.Get("X-Cairn-Node")
	got, err := io.ReadAll(resp.Body)
	r.end = time.Now()
	switch {
	case err != nil:
		r.err = fmt.Errorf("read body: %w", err)
	case resp.StatusCode != http.StatusOK:
		r.err = fmt.Errorf("status %d: %s", resp.StatusCode, tail(string(got), 200))
	case !bytes.Equal(got, want):
		r.err = fmt.Errorf("got %d bytes, want %d, not byte-exact", len(got), len(want))
	}
	return r
}

func lbCreateToken(hc *http.Client, base, token string) lbRequest {
	r := lbRequest{op: "token create", start: time.Now()}
	resp, err := hc.Post(base+"/files/v1/"+token+"/tokens", "application/json", strings.NewReader(`{"accessLevel":"read"}`))
	if err != nil {
		r.err, r.end = err, time.Now()
		return r
	}
	defer resp.Body.Close()
	r.status, r.node = resp.StatusCode, resp.Header.Get("X-Cairn-Node")
	var out struct {
		Token       string `json:"token"`
		AccessLevel string `json:"accessLevel"`
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	r.end = time.Now()
	switch {
	case err != nil:
		r.err = fmt.Errorf("read body: %w", err)
	case resp.StatusCode != http.StatusOK:
		r.err = fmt.Errorf("status %d: %s", resp.StatusCode, tail(string(body), 200))
	case json.Unmarshal(body, &out) != nil || out.Token == "" || out.AccessLevel != "read":
		r.err = fmt.Errorf("bad answer %s", tail(string(body), 200))
	}
	return r
}

// haproxy is a running HAProxy on deploy/haproxy.cfg or deploy/haproxy-tls.cfg.
type haproxy struct {
	url       string      // the frontend, https:// with TLS
	clientTLS *tls.Config // for clients of the frontend: trusts its certificate (nil without TLS)
	socket    string      // the runtime API
	stop      func()      // ends it (also done at the test's cleanup)
}

// startHAProxy runs haproxy in the foreground on the shipped configuration, with the cluster's
// addresses in the environment variables the file reads: deploy/haproxy.cfg, or for a TLS cluster
// deploy/haproxy-tls.cfg with the cluster CA, the client certificate and a frontend certificate.
// Variables in env replace those startHAProxy sets.
func startHAProxy(t *testing.T, bin string, cl *agentCluster, env ...string) *haproxy {
	t.Helper()
	port := freePorts(t, []string{"127.0.0.1"}, 1)[0]
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	dir := t.TempDir()
	lb := &haproxy{url: "http://" + addr, socket: filepath.Join(dir, "haproxy.sock")}
	file := "haproxy.cfg"
	vars := []string{"CAIRN_LB_BIND=" + addr, "CAIRN_LB_STATS_SOCKET=" + lb.socket}
	if cl.tls != nil {
		file = "haproxy-tls.cfg"
		frontend, roots := issueFrontendCert(t, cl.tls, filepath.Join(dir, "frontend.pem"))
		lb.url, lb.clientTLS = "https://"+addr, &tls.Config{RootCAs: roots}
		clientCert, clientKey := cl.tls.clientFiles()
		vars = append(vars, "CAIRN_LB_CERT="+frontend, "CAIRN_LB_CA_FILE="+cl.tls.caFile(),
			"CAIRN_LB_CLIENT_CERT="+concatFiles(t, filepath.Join(dir, "client.pem"), clientCert, clientKey))
	}
	for i, s := range cl.specs {
		vars = append(vars, fmt.Sprintf("CAIRN_NODE%d=%s", i+1, s.addr(s.httpPort)))
	}
	cfg, err := filepath.Abs(filepath.Join("..", "..", "deploy", file))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Env = append(vars, env...) // of duplicate variables, the last one counts

	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	lb.stop = sync.OnceFunc(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	t.Cleanup(func() {
		lb.stop()
		if t.Failed() {
			t.Logf("--- haproxy output ---\n%s", tail(out.String(), 8<<10))
		}
	})
	testutil.WaitForNil(t, 10*time.Second, "haproxy runtime socket", func() error {
		select {
		case <-done:
			t.Fatalf("haproxy exited: %s", out.String())
		default:
		}
		_, err := lb.states()
		return err
	})
	return lb
}

// issueFrontendCert writes to file (a PEM certificate, then its key, as HAProxy's crt takes it) a
// certificate for 127.0.0.1 signed by the cluster CA, good for server authentication only: what
// an operator's public certificate would be, and unlike a --server certificate of `cairn tls` not
// one that names server.cairn. It returns file and a pool that trusts it.
func issueFrontendCert(t *testing.T, x *clusterTLS, file string) (string, *x509.CertPool) {
	t.Helper()
	ca, err := pki.LoadCA(x.caFile(), x.caKeyFile())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "cairn load balancer"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(file, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return file, roots
}

// concatFiles writes the contents of parts, one after another, to file and returns file.
func concatFiles(t *testing.T, file string, parts ...string) string {
	t.Helper()
	var all []byte
	for _, p := range parts {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if err := os.WriteFile(file, all, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// states returns each cairn server's status (UP, DOWN, "UP 1/2", ...) from `show stat`.
func (h *haproxy) states() (map[string]string, error) { return h.stat("status") }

// stat returns one column of `show stat` for each cairn server.
func (h *haproxy) stat(column string) (map[string]string, error) {
	conn, err := net.DialTimeout("unix", h.socket, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("show stat\n")); err != nil {
		return nil, err
	}
	text, err := io.ReadAll(bufio.NewReader(conn))
	if err != nil {
		return nil, err
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(text), "# "))).ReadAll()
	if err != nil || len(rows) < 2 {
		return nil, fmt.Errorf("show stat: %v: %q", err, text)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) > col[column] && row[col["pxname"]] == "cairn_nodes" && row[col["svname"]] != "BACKEND" {
			out[row[col["svname"]]] = row[col[column]]
		}
	}
	return out, nil
}

// waitState polls every 20 ms until server is in state and returns when it first saw it.
func (h *haproxy) waitState(t *testing.T, server, state string, timeout time.Duration) time.Time {
	t.Helper()
	var at time.Time
	var last map[string]string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := h.states()
		if err == nil && st[server] == state {
			at = time.Now()
			return at
		}
		last = st
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("haproxy never showed %s %s within %s; last states %v", server, state, timeout, last)
	return at
}

// waitAll waits until every server is in state.
func (h *haproxy) waitAll(t *testing.T, state string, timeout time.Duration) {
	t.Helper()
	testutil.WaitForNil(t, timeout, "haproxy: every node "+state, func() error {
		st, err := h.states()
		if err != nil {
			return err
		}
		for name, s := range st {
			if s != state {
				return fmt.Errorf("%s is %s (%v)", name, s, st)
			}
		}
		if len(st) != 3 {
			return fmt.Errorf("states %v", st)
		}
		return nil
	})
}
