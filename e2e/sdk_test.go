package e2e

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// maxFileBytes is the upload limit the test gives the cluster and tells the EXH flow, whose
// FileTooLargeError step uploads one byte more.
const maxFileBytes = 8 << 20

var (
	rootKeyLine  = regexp.MustCompile(`^Root API key: (\S+)$`)
	endpointLine = regexp.MustCompile(`^\s+dev\d\s+(http://\S+)$`)
)

// TestSDKFlows runs the official SDKs' file and token flows (e2e/sdk/exh.mjs, e2e/sdk/nmshd.mjs)
// against a fresh `cairn dev` cluster. Each flow prints one line per passed step and fails on the
// first mismatch, or at its end for a recorded incompatibility ("GAP"); its output is the report.
func TestSDKFlows(t *testing.T) {
	if os.Getenv("CAIRN_SDK_TEST") != "1" {
		t.Skip("needs node, npm and the npm registry; run with CAIRN_SDK_TEST=1 (make sdk-test)")
	}
	node := lookPath(t, "node")
	npm := lookPath(t, "npm")
	sdkDir, err := filepath.Abs("sdk")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	bin := filepath.Join(t.TempDir(), "cairn")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cairn-dev/cairn/cmd/cairn").CombinedOutput(); err != nil {
		t.Fatalf("go build cairn: %v\n%s", err, out)
	}
	t.Logf("built cairn in %s", time.Since(start).Round(time.Millisecond))

	dev := startDev(t, bin)
	// npm ci runs while the cluster elects a leader; both take seconds.
	install := time.Now()
	npmCI := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	npmCI.Dir = sdkDir
	if out, err := npmCI.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", sdkDir, err, out)
	}
	t.Logf("npm ci took %s", time.Since(install).Round(time.Millisecond))
	key, urls := dev.waitReady(t, 60*time.Second)
	t.Logf("cairn dev ready after %s: %v", time.Since(start).Round(time.Millisecond), urls)

	// The flows talk to different nodes, so that requests reaching a follower are part of the proof.
	for i, flow := range []string{"exh", "nmshd"} {
		t.Run(flow, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, flow+".mjs")
			cmd.Dir = sdkDir
			cmd.Env = append(environWithout("CAIRN_"),
				"CAIRN_URL="+urls[i%len(urls)],
				"CAIRN_API_KEY="+key,
				"CAIRN_SDK_MAX_FILE_BYTES="+strconv.Itoa(maxFileBytes),
			)
			began := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("node %s.mjs against %s: %v after %s\n%s", flow, urls[i%len(urls)], err,
					time.Since(began).Round(time.Millisecond), out)
			}
			t.Logf("node %s.mjs against %s passed in %s:\n%s", flow, urls[i%len(urls)],
				time.Since(began).Round(time.Millisecond), out)
		})
	}
}

// devCluster is a running `cairn dev` child process.
type devCluster struct {
	cmd *exec.Cmd
	out testutil.SyncBuffer // stdout and stderr, for failure reports

	// key and urls are written before ready is closed, result before exited is closed; the
	// channel close orders those writes before every read.
	ready  chan struct{} // closed once the root key is printed, after the endpoints
	exited chan struct{} // closed once the process has exited and its output is read
	key    string
	urls   []string
	result error
}

// startDev runs `cairn dev` on a free block of ports. Cleanup stops it: SIGINT first, so that it
// removes its data, then a kill if it has not exited within the deadline.
func startDev(t *testing.T, bin string) *devCluster {
	t.Helper()
	tmp := t.TempDir() // registered before the stop below, so it is removed after the process is gone
	d := &devCluster{ready: make(chan struct{}), exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "dev", "--base-port", strconv.Itoa(freeBasePort(t)),
		"--max-file-size", strconv.Itoa(maxFileBytes))
	// The child does not inherit CAIRN_* variables (every flag reads one), and keeps its data under
	// the test's directory.
	d.cmd.Env = append(environWithout("CAIRN_"), "TMPDIR="+tmp)
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = &d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start cairn dev: %v", err)
	}
	go d.read(stdout)
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Signal(os.Interrupt)
			select {
			case <-d.exited:
			case <-time.After(25 * time.Second):
				_ = d.cmd.Process.Kill()
				<-d.exited
				t.Errorf("cairn dev did not stop within 25 s of SIGINT; killed")
			}
		}
		if t.Failed() {
			t.Logf("cairn dev output:\n%s", d.out.String())
		}
	})
	return d
}

// read copies the child's stdout line by line, noting the root key and the endpoints; it returns
// when the child closes its stdout, that is, when it exits.
func (d *devCluster) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		_, _ = d.out.Write([]byte(line + "\n"))
		if d.key != "" {
			continue
		}
		if m := endpointLine.FindStringSubmatch(line); m != nil {
			d.urls = append(d.urls, m[1])
		}
		if m := rootKeyLine.FindStringSubmatch(line); m != nil {
			d.key = m[1] // printed once every node reports ready
			close(d.ready)
		}
	}
	d.result = d.cmd.Wait()
	close(d.exited)
}

// waitReady blocks until cairn dev has printed its root key, and returns it with the node URLs.
func (d *devCluster) waitReady(t *testing.T, timeout time.Duration) (key string, urls []string) {
	t.Helper()
	select {
	case <-d.ready:
	case <-d.exited:
		t.Fatalf("cairn dev exited before it was ready (%v):\n%s", d.result, d.out.String())
	case <-time.After(timeout):
		t.Fatalf("cairn dev not ready after %s:\n%s", timeout, d.out.String())
	}
	if len(d.urls) == 0 {
		t.Fatalf("cairn dev printed no endpoints:\n%s", d.out.String())
	}
	return d.key, d.urls
}

// freeBasePort finds a port p such that p..p+2, p+100..p+102 and p+200..p+202 (the HTTP, cluster
// and gossip ports of cairn dev's three nodes) are all free on 127.0.0.1, TCP and UDP (gossip).
func freeBasePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if base+202 > 65535 {
			continue
		}
		free := true
		for _, off := range []int{0, 1, 2, 100, 101, 102, 200, 201, 202} {
			free = free && portFree(base+off)
		}
		if free {
			return base
		}
	}
	t.Fatal("no free block of ports for cairn dev")
	return 0
}

func portFree(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return u.Close() == nil
}

// environWithout is this process's environment minus the variables with the given prefix.
func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("CAIRN_SDK_TEST=1 needs %s on PATH: %v", name, err)
	}
	return p
}
