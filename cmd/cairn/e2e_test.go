package main

// End-to-end tests: the real cairn binary in child processes, driven over HTTP, TCP and signals.
// Run them with `go test -race -count=1 -run E2E ./cmd/cairn/`; -short skips them.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// randomBytes draws n bytes from a seeded generator; the seed is logged so that a failure can be
// replayed with the same content.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("random content: %d bytes, seed %d", n, seed)
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// devBasePort finds a base port for `cairn dev`: it takes base, base+1, base+2, and the same at
// +100 (cluster) and +200 (gossip).
func devBasePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		base := freePorts(t, []string{"127.0.0.1"}, 1)[0]
		if base+200+3 > 65535 {
			continue
		}
		ok := true
		for _, off := range []int{0, 1, 2, 100, 101, 102, 200, 201, 202} {
			ok = ok && portFree("127.0.0.1", base+off)
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port block for cairn dev")
	return 0
}

var (
	devRootKeyLine  = regexp.MustCompile(`(?m)^Root API key: (\S+)$`)
	devEndpointLine = regexp.MustCompile(`(?m)^\s+(dev\d)\s+(http://\S+)$`)
	devDataDirLine  = regexp.MustCompile(`(?m)data in (\S+)$`)
)

func TestE2EDev(t *testing.T) {
	skipShort(t)
	base := devBasePort(t)
	tmp := t.TempDir()
	start := time.Now()
	// TMPDIR keeps the dev cluster's temporary data inside the test's own directory.
	p := startCairn(t, "cairn dev", []string{"TMPDIR=" + tmp}, "dev", "--base-port", strconv.Itoa(base))

	var out string
	testutil.WaitForNil(t, 15*time.Second, "cairn dev prints its root key", func() error {
		if p.exited() {
			return fmt.Errorf("%w: cairn dev exited early", errPermanent)
		}
		out = p.stdout.String()
		if !devRootKeyLine.MatchString(out) {
			return errors.New("no root key printed yet")
		}
		return nil
	})
	rootKey := devRootKeyLine.FindStringSubmatch(out)[1]
	var urls []string
	for i, m := range devEndpointLine.FindAllStringSubmatch(out, -1) {
		want := fmt.Sprintf("http://127.0.0.1:%d", base+i)
		if m[1] != "dev"+strconv.Itoa(i+1) || m[2] != want {
			t.Errorf("endpoint line %d: got %s %s, want dev%d %s", i, m[1], m[2], i+1, want)
		}
		urls = append(urls, m[2])
	}
	if len(urls) != 3 {
		t.Fatalf("cairn dev printed %d endpoints, want 3:\n%s", len(urls), out)
	}
	if !strings.Contains(out, "export CAIRN_KEY="+rootKey) {
		t.Errorf("the printed example does not use the printed root key:\n%s", out)
	}
	c := newClient()
	waitReady(t, c, 15*time.Second-time.Since(start), urls...)
	t.Logf("dev cluster ready after %s", time.Since(start).Round(time.Millisecond))

	// `cairn status` reads the same cluster through another node.
	st := startCairn(t, "cairn status", nil, "status", "--addr", urls[1])
	if code := st.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("cairn status exited %d", code)
	}
	for _, want := range []string{"node", "dev2", "leader", "erasure", "2+1", "MEMBER", "dev1", "dev3"} {
		if !strings.Contains(st.stdout.String(), want) {
			t.Errorf("cairn status output lacks %q:\n%s", want, st.stdout.String())
		}
	}

	// Anonymous upload is off by default: the key matters.
	status, body, err := postFile(c, urls[0], "", "anon.bin", []byte("x"))
	if err != nil || status != http.StatusUnauthorized || !bytes.Contains(body, []byte(`"code":104`)) {
		t.Errorf("upload without a key: status %d, body %s, err %v; want 401 code 104", status, body, err)
	}

	data := randomBytes(t, 1<<20+12345) // two erasure blocks, the second partial
	token := upload(t, c, urls[0], rootKey, "dev.bin", data)
	expectFile(t, c, 10*time.Second, token, data, urls[1], urls[2])

	// The file commands of the real binary, as the printed example runs them.
	file := filepath.Join(tmp, "put.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	put := startCairn(t, "cairn put", []string{"CAIRN_KEY=" + rootKey, "CAIRN_ADDR=" + urls[0]}, "put", file, "--tag", "e2e")
	if code := put.waitExit(t, 30*time.Second); code != 0 {
		t.Fatalf("cairn put exited %d: %s", code, put.stderr.String())
	}
	putToken := strings.TrimSpace(put.stdout.String())
	expectFile(t, c, 10*time.Second, putToken, data, urls[2])
	get := startCairn(t, "cairn get", nil, "get", putToken, "-o", "-", "--addr", strings.TrimPrefix(urls[1], "http://"))
	if code := get.waitExit(t, 30*time.Second); code != 0 || get.stdout.String() != string(data) {
		t.Fatalf("cairn get exited %d with %d bytes: %s", code, len(get.stdout.String()), get.stderr.String())
	}
	if put.stderr.String() != "" || get.stderr.String() != "" {
		t.Errorf("put or get wrote to a stderr that is not a terminal: %q %q", put.stderr.String(), get.stderr.String())
	}

	stopAt := time.Now()
	p.signal(t, syscall.SIGINT)
	if code := p.waitExit(t, 25*time.Second); code != 0 {
		t.Errorf("cairn dev exited %d after SIGINT, want 0", code)
	}
	t.Logf("cairn dev stopped %s after SIGINT", time.Since(stopAt).Round(time.Millisecond))
	if !strings.Contains(p.stdout.String(), "cairn dev: stopping") {
		t.Errorf("cairn dev did not say it was stopping:\n%s", p.stdout.String())
	}
	if m := devDataDirLine.FindStringSubmatch(out); m == nil {
		t.Errorf("cairn dev did not print its data dir:\n%s", out)
	} else if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir %s still there after exit without --keep-data (stat: %v)", m[1], err)
	}
}

func TestE2EAgentCrashRestartAndGracefulStop(t *testing.T) {
	skipShort(t)
	specs := loopbackSpecs(t, "node", 3, 2) // 127.0.0.2-4
	const maxSize = 1 << 20
	cl := newAgentCluster(t, specs, "1MiB")
	c := newClient()
	start := time.Now()
	cl.startAll()
	waitReady(t, c, 15*time.Second, cl.urls(0, 1, 2)...)
	t.Logf("3 agents ready after %s", time.Since(start).Round(time.Millisecond))

	// The environment was read (root key, bootstrap size, join list, size limit) and the
	// --erasure flag beat the invalid CAIRN_ERASURE.
	var leader int
	testutil.WaitForNil(t, 10*time.Second, "status shows the cluster", func() error {
		leader = -1
		for i, u := range cl.urls(0, 1, 2) {
			st, err := getStatus(c, u)
			if err != nil {
				return err
			}
			if st.Erasure != "2+1" {
				return fmt.Errorf("%w: %s reports erasure %q, want 2+1 from --erasure", errPermanent, u, st.Erasure)
			}
			if len(st.Members) != 3 {
				return fmt.Errorf("%s sees %d members", u, len(st.Members))
			}
			if st.LeaderID == st.NodeID {
				leader = i
			}
		}
		if leader < 0 {
			return errors.New("no node says it leads")
		}
		return nil
	})

	file1 := randomBytes(t, maxSize) // exactly CAIRN_MAX_FILE_SIZE: accepted
	token1 := upload(t, c, cl.urls(0)[0], cl.rootKey, "one.bin", file1)
	status, body, err := postFile(c, cl.urls(1)[0], cl.rootKey, "big.bin", make([]byte, maxSize+1))
	if err != nil || status != http.StatusBadRequest || !bytes.Contains(body, []byte(`"code":2610`)) {
		t.Errorf("upload over CAIRN_MAX_FILE_SIZE: status %d, body %s, err %v; want 400 code 2610", status, body, err)
	}
	expectFile(t, c, 10*time.Second, token1, file1, cl.urls(0, 1, 2)...)

	// Crash the leader: the others elect a new one and still read the file (one shard of three
	// is gone, k=2 remain).
	victim := leader
	others := []int{(victim + 1) % 3, (victim + 2) % 3}
	t.Logf("SIGKILL %s (the leader)", specs[victim].id)
	cl.procs[victim].signal(t, syscall.SIGKILL)
	if code := cl.procs[victim].waitExit(t, 10*time.Second); code != -1 {
		t.Fatalf("%s exited %d after SIGKILL, want death by signal", specs[victim].id, code)
	}
	killedAt := time.Now()
	expectFile(t, c, 15*time.Second, token1, file1, cl.urls(others...)...)
	t.Logf("file read through the survivors %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	// Restart it exactly as before: it rejoins from its data dir and serves again.
	restartAt := time.Now()
	cl.start(victim)
	waitReady(t, c, 15*time.Second, cl.urls(victim)...)
	t.Logf("%s ready %s after restart", specs[victim].id, time.Since(restartAt).Round(time.Millisecond))
	expectFile(t, c, 10*time.Second, token1, file1, cl.urls(victim)...)
	file2 := randomBytes(t, 300<<10+7)
	token2 := upload(t, c, cl.urls(victim)[0], cl.rootKey, "two.bin", file2)
	expectFile(t, c, 10*time.Second, token2, file2, cl.urls(0, 1, 2)...)

	cl.stopAll(syscall.SIGTERM, 20*time.Second)
}

func TestE2EAgentBadFlags(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	// valid is a complete, valid command line without the flag named drop.
	valid := func(drop string) []string {
		args := []string{"agent"}
		for _, f := range [][2]string{
			{"--node-id", "n1"}, {"--data-dir", dir}, {"--http-addr", "127.0.0.1:0"},
			{"--cluster-addr", "127.0.0.1:0"}, {"--gossip-addr", "127.0.0.1:0"},
			{"--bootstrap-expect", "1"}, {"--root-key", "e2e-root-key-0123456789abcdef"},
		} {
			if f[0] != drop {
				args = append(args, f[0], f[1])
			}
		}
		return args
	}
	tests := []struct {
		name string
		args []string
		env  []string
		want string // the flag the message must name
	}{
		{"missing node id", valid("--node-id"), nil, "--node-id"},
		{"erasure without data shards", append(valid(""), "--erasure", "0+1"), nil, "--erasure"},
		{"erasure not K+M", append(valid(""), "--erasure", "3"), nil, "--erasure"},
		{"unknown size unit", append(valid(""), "--max-file-size", "12XB"), nil, "--max-file-size"},
		{"bad size from the environment", valid(""), []string{"CAIRN_MAX_FILE_SIZE=12XB"}, "--max-file-size"},
		{"bad number from the environment", valid("--bootstrap-expect"), []string{"CAIRN_BOOTSTRAP_EXPECT=x"}, "CAIRN_BOOTSTRAP_EXPECT"},
		{"short root key", append(valid("--root-key"), "--root-key", "short"), nil, "--root-key"},
		{"unknown flag", append(valid(""), "--bogus", "1"), nil, "-bogus"},
		{"stray argument", append(valid(""), "extra"), nil, "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startCairn(t, "cairn agent", tc.env, tc.args...)
			code := p.waitExit(t, 10*time.Second)
			stderr := p.stderr.String()
			if code == 0 || code == -1 {
				t.Errorf("exit code %d, want a non-zero exit of its own", code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr does not name %s:\n%s", tc.want, stderr)
			}
			if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "node started") {
				t.Errorf("a bad configuration must fail before the node starts, without a panic:\n%s", stderr)
			}
		})
	}
}

func TestE2EGarbageOnClusterPort(t *testing.T) {
	skipShort(t)
	ip := "127.0.0.1"
	ports := freePorts(t, []string{ip}, 9)
	var specs []agentSpec
	for i := range 3 {
		specs = append(specs, agentSpec{id: "g" + strconv.Itoa(i+1), ip: ip,
			httpPort: ports[3*i], clusterPort: ports[3*i+1], gossipPort: ports[3*i+2]})
	}
	cl := newAgentCluster(t, specs, "8MiB")
	c := newClient()
	cl.startAll()
	waitReady(t, c, 15*time.Second, cl.urls(0, 1, 2)...)
	target := specs[0].addr(specs[0].clusterPort)
	rejectedBefore, err := metricValue(c, specs[0].url(), "cairn_cluster_port_rejected_connections_total")
	if err != nil {
		t.Fatal(err)
	}

	hello := func(kind byte) []byte { return append([]byte("CAIRN\x01"+string(kind)), make([]byte, 32)...) }
	garbage := []struct {
		name string
		send [][]byte // written in turn; the answer to each but the last is read in between
		// answer is how many bytes the node may send before it closes (the handshake challenge).
		answer int
	}{
		{"random bytes", [][]byte{randomBytes(t, 4<<10)}, 0},
		{"one MiB of random bytes", [][]byte{randomBytes(t, 1<<20)}, 0},
		{"HTTP request", [][]byte{[]byte("GET / HTTP/1.1\r\nHost: cairn\r\n\r\n")}, 0},
		{"magic then silence", [][]byte{[]byte("CAIRN\x01")}, 0},
		{"unknown connection kind", [][]byte{hello('X')}, 0},
		{"hello with a wrong proof", [][]byte{hello('R'), make([]byte, 32)}, 64},
	}
	t.Run("garbage", func(t *testing.T) {
		for _, g := range garbage {
			t.Run(g.name, func(t *testing.T) {
				t.Parallel()
				conn, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				// The node closes a failed handshake within its 5 s handshake timeout.
				if err := conn.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
					t.Fatal(err)
				}
				got := 0
				for i, chunk := range g.send {
					if _, err := conn.Write(chunk); err != nil {
						// The node may close while a large write is still going: that is the point.
						if isTimeout(err) {
							t.Fatalf("write timed out: the node neither read nor closed: %v", err)
						}
						break
					}
					if i < len(g.send)-1 {
						buf := make([]byte, g.answer)
						n, err := io.ReadFull(conn, buf)
						got += n
						if err != nil {
							t.Fatalf("read the challenge: %v", err)
						}
					}
				}
				n, err := io.Copy(io.Discard, conn)
				got += int(n)
				if isTimeout(err) {
					t.Fatalf("connection still open after garbage: %v", err)
				}
				if err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("read after garbage: %v", err)
				}
				if got != g.answer {
					t.Errorf("node sent %d bytes before closing, want %d", got, g.answer)
				}
			})
		}
	})
	if t.Failed() {
		return
	}

	// The node counts a rejection just after closing, so the count may trail what the client saw.
	want := rejectedBefore + float64(len(garbage))
	waitForOrFail(t, 5*time.Second, "rejected connections counted", func() error {
		v, err := metricValue(c, specs[0].url(), "cairn_cluster_port_rejected_connections_total")
		switch {
		case err != nil:
			return err
		case v > want:
			return fmt.Errorf("%w: cairn_cluster_port_rejected_connections_total is %v, want %v", errPermanent, v, want)
		case v < want:
			return fmt.Errorf("cairn_cluster_port_rejected_connections_total is %v, want %v", v, want)
		}
		return nil
	})
	for _, p := range cl.procs {
		if p.exited() {
			t.Fatalf("%s exited after garbage on a cluster port", p.name)
		}
	}
	// The attacked node still does its cluster work: it stores shards and serves reads.
	data := randomBytes(t, 200<<10+3)
	token := upload(t, c, specs[0].url(), cl.rootKey, "after-garbage.bin", data)
	expectFile(t, c, 10*time.Second, token, data, cl.urls(0, 1, 2)...)
	waitReady(t, c, 5*time.Second, cl.urls(0, 1, 2)...)
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

func TestE2EVersion(t *testing.T) {
	skipShort(t)
	p := startCairn(t, "cairn version", nil, "version")
	if code := p.waitExit(t, 10*time.Second); code != 0 || !strings.HasPrefix(p.stdout.String(), "cairn ") {
		t.Fatalf("cairn version: exit %d, output %q", code, p.stdout.String())
	}
}
