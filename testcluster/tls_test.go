package testcluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/cluster"
	"github.com/cairn-dev/cairn/cluster/clusterapi"
	"github.com/cairn-dev/cairn/node"
	"github.com/cairn-dev/cairn/pki"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// testPKI is a cluster CA with one server certificate per node and a client certificate, as
// files, made in the test.
type testPKI struct {
	ca          *pki.CA
	dir, caFile string
	certs, keys []string
	client      tls.Certificate
	pool        *x509.CertPool
}

func newTestPKI(t *testing.T, nodes int) *testPKI {
	t.Helper()
	ca, caKey, err := pki.NewCA("testcluster CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca, dir: t.TempDir(), pool: x509.NewCertPool()}
	p.pool.AddCert(ca.Cert)
	p.caFile = filepath.Join(p.dir, "ca.pem")
	if err := pki.WriteFiles(p.caFile, ca.CertPEM, filepath.Join(p.dir, "ca-key.pem"), caKey); err != nil {
		t.Fatal(err)
	}
	for i := range nodes {
		c, k := filepath.Join(p.dir, fmt.Sprintf("node%d.pem", i)), filepath.Join(p.dir, fmt.Sprintf("node%d-key.pem", i))
		p.certs, p.keys = append(p.certs, c), append(p.keys, k)
		p.replace(t, i, pki.CertOptions{Server: true, NodeID: fmt.Sprintf("node%d", i)})
	}
	certPEM, keyPEM, err := ca.Issue(pki.CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.client, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

// replace issues a new pair for node i and puts it in place as an operator would: each file
// written aside, then renamed over the old one (key first, then certificate).
func (p *testPKI) replace(t *testing.T, i int, o pki.CertOptions) *big.Int {
	t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{p.keys[i], keyPEM}, {p.certs[i], certPEM}} {
		if err := os.WriteFile(f.path+".new", f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.path+".new", f.path); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// clientTLS trusts the CA and presents the client certificate.
func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, MinVersion: tls.VersionTLS12}
}

// configure turns on HTTPS with client authentication and mutual TLS on the cluster port.
func (p *testPKI) configure(i int, cfg *node.Config) {
	cfg.TLS = node.TLSConfig{CAFile: p.caFile, CertFile: p.certs[i], KeyFile: p.keys[i], HTTPClientAuth: true,
		ReloadInterval: 50 * time.Millisecond}
}

// servedSerial is the serial of the certificate node i's HTTPS port presents now.
func servedSerial(p *testPKI, addr string) (*big.Int, error) {
	conn, err := tls.Dial("tcp", addr, p.clientTLS())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// load runs a bounded concurrent load: workers read a file through every node in turn and
// create read tokens, until stop. Every failed request is recorded.
type load struct {
	stopCh   chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	retried  atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startLoad(t *testing.T, c *Cluster, workers int, token string, data []byte) *load {
	l := &load{stopCh: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; ; i++ {
				select {
				case <-l.stopCh:
					return
				default:
				}
				cl := c.Client(i % c.Size())
				// A 503 is the documented "electing a leader, retry" answer (the machine running the
				// tests is loaded): the request is retried like a client honouring Retry-After, and
				// fails only if it never succeeds. Anything else fails at once.
				var err error
				for deadline := time.Now().Add(15 * time.Second); ; {
					var retry bool
					retry, err = l.request(cl, i, token, data)
					if !retry || time.Now().After(deadline) {
						break
					}
					l.retried.Add(1)
					time.Sleep(50 * time.Millisecond) // a client's back-off, not synchronisation
				}
				if err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, err.Error())
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

// request makes request number i through cl: every fourth creates a read token, the others
// download the file and compare it. retry reports a 503.
func (l *load) request(cl *Client, i int, token string, data []byte) (retry bool, err error) {
	var resp Response
	if i%4 == 0 {
		_, resp, err = cl.CreateToken(token, "read")
	} else {
		resp, err = cl.Download(token)
	}
	switch {
	case err != nil:
		return false, err
	case resp.Status == http.StatusServiceUnavailable:
		return true, fmt.Errorf("%s: 503 until the deadline: %.200s", cl.Base, resp.Body)
	case resp.Status != http.StatusOK:
		return false, fmt.Errorf("%s: status %d: %.200s", cl.Base, resp.Status, resp.Body)
	case i%4 != 0 && !bytes.Equal(resp.Body, data):
		return false, fmt.Errorf("%s: download is %d bytes, not the file", cl.Base, len(resp.Body))
	}
	return false, nil
}

// stopAndCheck stops the load and fails the test on any failed request.
func (l *load) stopAndCheck(t *testing.T) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("load: %d requests succeeded, %d failed, %d 503 answers retried", l.ok.Load(), len(l.failures), l.retried.Load())
	if len(l.failures) > 0 {
		t.Fatalf("%d requests failed under load, first: %s", len(l.failures), l.failures[0])
	}
	if l.ok.Load() == 0 {
		t.Fatal("the load made no request")
	}
}

func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

// waitRequests waits until the load has made n more successful requests, so that each step of a
// test happens while requests are in flight.
func (l *load) waitRequests(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("%d more requests under load", n), func() bool { return l.ok.Load() >= target })
}

// metric reads one sample (name with its labels, as printed) from a node's /metrics.
func metric(t *testing.T, cl *Client, name string) float64 {
	t.Helper()
	resp, err := cl.Do(http.MethodGet, "/metrics", nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("GET /metrics on %s: %v %d", cl.Base, err, resp.Status)
	}
	for line := range strings.Lines(string(resp.Body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not on %s", name, cl.Base)
	return 0
}

// TestTLSCertificateRotationUnderLoad: a 3-node cluster with HTTPS (client certificates required)
// and mutual TLS between the nodes gets every node's certificate replaced on disk while clients
// read and write through every node. No request fails, every node serves its new certificate,
// and a broken replacement is refused, counted, and leaves the good certificate in use.
func TestTLSCertificateRotationUnderLoad(t *testing.T) {
	p := newTestPKI(t, 3)
	c := New(t, Options{Configure: p.configure, ClientTLS: p.clientTLS()})
	data := randomData(1, 40<<10)
	token, _ := mustUpload(t, c, 0, "rotate.bin", data)

	// Without a client certificate, or in plain HTTP, the public port refuses.
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool}}}
	if resp, err := noCert.Get(c.Client(1).Base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("HTTPS without a client certificate was served")
	}
	if resp, err := http.Get("http://" + c.Config(1).HTTPAddr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served on the HTTPS port")
		}
	}

	l := startLoad(t, c, 4, token, data)
	l.waitRequests(t, 20)
	for i := range 3 {
		serial := p.replace(t, i, pki.CertOptions{Server: true, NodeID: fmt.Sprintf("node%d", i)})
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("node%d serves its new certificate", i), func() bool {
			got, err := servedSerial(p, c.Config(i).HTTPAddr)
			return err == nil && got.Cmp(serial) == 0
		})
		l.waitRequests(t, 10)
	}
	// New connections between the nodes use the new certificates: uploads through every node
	// forward to the leader and put shards on the others.
	for i := range 3 {
		tok, _ := mustUpload(t, c, i, fmt.Sprintf("after-%d.bin", i), data[:1000+i])
		mustDownload(t, c, (i+1)%3, tok, data[:1000+i])
	}

	// A broken replacement (expired) is refused at reload: counted, logged, the previous
	// certificate stays in use, and requests go on.
	good, err := servedSerial(p, c.Config(0).HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	p.replace(t, 0, pki.CertOptions{Server: true, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	testutil.WaitFor(t, 10*time.Second, "the failed reload counted", func() bool {
		return metric(t, c.Client(0), "cairn_tls_cert_reload_failures_total") == 1
	})
	if err := c.Node(0).ReloadTLS(); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("ReloadTLS of an expired certificate: %v, want an expiry error", err)
	}
	if got, err := servedSerial(p, c.Config(0).HTTPAddr); err != nil || got.Cmp(good) != 0 {
		t.Fatalf("after a failed reload node0 serves %v (%v), want the previous certificate %v", got, err, good)
	}
	l.waitRequests(t, 20)
	l.stopAndCheck(t)

	for i := range 3 {
		if got := metric(t, c.Client(i), "cairn_tls_cert_reloads_total"); got != 1 {
			t.Errorf("node%d: cairn_tls_cert_reloads_total = %v, want 1", i, got)
		}
		for _, r := range []string{cluster.RejectPlaintext, cluster.RejectUnknownCA, cluster.RejectExpired, cluster.RejectWrongRole} {
			if got := metric(t, c.Client(i), `cairn_cluster_port_refused_connections_total{reason="`+r+`"}`); got != 0 {
				t.Errorf("node%d refused %v cluster connections for %s", i, got, r)
			}
		}
	}
}

// TestGossipKeyRotationUnderLoad rotates the gossip key with the documented procedure (install,
// use, remove) through different nodes while clients read and write. No request fails, every
// member ends with only the new key, the refused steps are refused, and a node restarted
// afterwards rejoins with the persisted keyring.
func TestGossipKeyRotationUnderLoad(t *testing.T) {
	c := New(t, Options{})
	data := randomData(2, 30<<10)
	token, _ := mustUpload(t, c, 0, "gossip.bin", data)
	keyring := func(i int, op, key string) (int, []clusterapi.MemberKeys) {
		t.Helper()
		method, path, body := http.MethodGet, "/v1/keyring", ""
		if op != "list" {
			method, path, body = http.MethodPost, "/v1/keyring/"+op, fmt.Sprintf(`{"key":%q}`, key)
		}
		resp, err := c.Client(i).Do(method, path, strings.NewReader(body), http.Header{
			"Authorization": {"Bearer " + c.RootKey}, "Content-Type": {"application/json"}})
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Data []clusterapi.MemberKeys `json:"data"`
		}
		if resp.Status == http.StatusOK {
			if err := json.Unmarshal(resp.Body, &out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.Status, out.Data
	}
	_, before := keyring(0, "list", "")
	if len(before) != 3 {
		t.Fatalf("keyring list shows %d members, want 3: %+v", len(before), before)
	}
	oldFP := before[0].Primary
	newKey := "aGVsbG8tY2Fpcm4tZ29zc2lwLWtleS0zMi1ieXRlcyE=" // 32 bytes
	newFP := cluster.KeyFingerprint([]byte("hello-cairn-gossip-key-32-bytes!"))

	// A read-only principal may not touch the keyring.
	if resp, _ := c.Client(1).Do(http.MethodGet, "/v1/keyring", nil, nil); resp.Status != http.StatusUnauthorized {
		t.Fatalf("keyring list without a key: status %d, want 401", resp.Status)
	}

	l := startLoad(t, c, 4, token, data)
	l.waitRequests(t, 20)
	if st, _ := keyring(1, "use", newKey); st != http.StatusConflict {
		t.Fatalf("use before install: status %d, want 409", st)
	}
	if st, _ := keyring(1, "install", newKey); st != http.StatusOK {
		t.Fatalf("install: status %d", st)
	}
	l.waitRequests(t, 20)
	if st, _ := keyring(2, "remove", oldFP); st != http.StatusConflict {
		t.Fatalf("remove of the primary key in use: status %d, want 409", st)
	}
	if st, _ := keyring(2, "use", newFP); st != http.StatusOK {
		t.Fatalf("use: status %d", st)
	}
	l.waitRequests(t, 20)
	if st, _ := keyring(0, "remove", oldFP); st != http.StatusOK {
		t.Fatalf("remove: status %d", st)
	}
	l.waitRequests(t, 20)
	// Gossip still works with the new key only: a member's metadata change still spreads (free
	// space is re-announced by every node) and nobody was declared dead.
	c.WaitAlive(3, 10*time.Second)
	l.stopAndCheck(t)

	_, after := keyring(1, "list", "")
	for _, mk := range after {
		if mk.Error != "" || mk.Primary != newFP || len(mk.Keys) != 1 || mk.Keys[0] != newFP {
			t.Fatalf("after rotation %s has primary %s keys %v (%s), want only %s", mk.Node, mk.Primary, mk.Keys, mk.Error, newFP)
		}
	}
	// The keyring survives a restart: node2 comes back knowing only the new key, rejoins, and
	// serves.
	if err := c.Stop(2); err != nil {
		t.Fatal(err)
	}
	c.Restart(2)
	c.WaitAlive(3, 20*time.Second)
	c.WaitReady(20 * time.Second)
	mustDownload(t, c, 2, token, data)
	if b, err := os.ReadFile(filepath.Join(c.Config(2).DataDir, "gossip-keyring.json")); err != nil || bytes.Contains(b, []byte(oldFP)) {
		t.Fatalf("persisted keyring: %v", err)
	}
}
