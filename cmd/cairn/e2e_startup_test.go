package main

// Start-up failures of `cairn agent` with real processes: a busy HTTP port, a busy gossip port and
// an unwritable data dir each end in one line naming the flag and the value at fault, exit 1.

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestE2EAgentStartupErrors(t *testing.T) {
	skipShort(t)
	ip := "127.0.0.1"
	ports := freePorts(t, []string{ip}, 3)
	addr := func(p int) string { return net.JoinHostPort(ip, strconv.Itoa(p)) }

	// A busy HTTP port.
	httpBusy, err := net.Listen("tcp", addr(ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer httpBusy.Close()
	// A busy gossip port: TCP taken, so memberlist's transport cannot bind it (UDP stays free, so
	// the failure comes late, after Raft has opened the data dir: that is what must be released).
	gossipBusy, err := net.Listen("tcp", addr(ports[2]))
	if err != nil {
		t.Fatal(err)
	}
	defer gossipBusy.Close()

	unwritable := unwritableDir(t)

	tests := []struct {
		name             string
		dataDir          string
		http, gossip     string
		wantFlag, wantIn string
	}{
		{"busy http port", t.TempDir(), addr(ports[0]), "127.0.0.1:0", "--http-addr", addr(ports[0])},
		{"busy gossip port", t.TempDir(), "127.0.0.1:0", addr(ports[2]), "--gossip-addr", addr(ports[2])},
		{"unwritable data dir", unwritable, "127.0.0.1:0", "127.0.0.1:0", "--data-dir", unwritable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startCairn(t, "cairn agent", nil, "agent", "--node-id", "s1", "--data-dir", tc.dataDir,
				"--http-addr", tc.http, "--cluster-addr", "127.0.0.1:0", "--gossip-addr", tc.gossip,
				"--bootstrap-expect", "1", "--root-key", "e2e-root-key-0123456789abcdef")
			code := p.waitExit(t, 20*time.Second)
			stderr := p.stderr.String()
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("start-up failure panicked:\n%s", stderr)
			}
			var errLines []string
			for line := range strings.Lines(stderr) {
				if strings.HasPrefix(line, "cairn: ") {
					errLines = append(errLines, strings.TrimSpace(line))
				}
			}
			if len(errLines) != 1 {
				t.Fatalf("want exactly one error line, got %d:\n%s", len(errLines), stderr)
			}
			if !strings.Contains(errLines[0], tc.wantFlag+" "+tc.wantIn) {
				t.Errorf("error line %q does not name %s %s", errLines[0], tc.wantFlag, tc.wantIn)
			}
			t.Logf("%s: %s", tc.name, errLines[0])
		})
	}
	// Everything the failed starts opened was released: the ports they bound are free again (the
	// data dirs' Raft stores were closed, or a second start on the same dir would time out).
	p := startCairn(t, "cairn agent (after)", nil, "agent", "--node-id", "s1", "--data-dir", tests[1].dataDir,
		"--http-addr", "127.0.0.1:0", "--cluster-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--bootstrap-expect", "1", "--root-key", "e2e-root-key-0123456789abcdef", "--drain-delay", "0")
	waitFor(t, 20*time.Second, "agent on the data dir of the failed start", func() error {
		if p.exited() {
			t.Fatalf("agent on the reused data dir exited %d", p.cmd.ProcessState.ExitCode())
		}
		if !strings.Contains(p.stderr.String(), "node started") {
			return errNotYet
		}
		return nil
	})
}

// unwritableDir returns a directory this process cannot create files in. As root, permissions do
// not stop writes, so the directory is a read-only tmpfs mount the test creates and removes.
func unwritableDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "readonly")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return dir
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		skipOrFailWithoutPrivilege(t, "mount a read-only tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
