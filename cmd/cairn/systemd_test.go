package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const unitPath = "../../deploy/systemd/cairn.service"

// unitDirectives reads a unit file into directive -> values (a directive may repeat).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", path, line)
		}
		out[k] = append(out[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSystemdUnit: deploy/systemd/cairn.service passes systemd-analyze verify, is hardened as
// docs/operations.md says, scores "OK" in systemd-analyze security, and agrees with
// deploy/cairn.hcl on the data dir.
func TestSystemdUnit(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "systemd")
	d := unitDirectives(t, unitPath)
	for directive, want := range map[string]string{
		"User":            "cairn",
		"Group":           "cairn",
		"ProtectSystem":   "strict",
		"NoNewPrivileges": "true",
		"LimitNOFILE":     "65536",
		"ReadWritePaths":  "/var/lib/cairn",
		"StateDirectory":  "cairn",
		"EnvironmentFile": "/etc/cairn/cairn.env",
		"ExecStart":       "/usr/local/bin/cairn agent --config-file /etc/cairn/cairn.hcl",
		"KillSignal":      "SIGTERM",
		"ProtectHome":     "true",
		"PrivateTmp":      "true",
	} {
		if got := strings.Join(d[directive], " | "); got != want {
			t.Errorf("%s=%q, want %q", directive, got, want)
		}
	}
	// The data dir the shipped config names is the one the unit lets the agent write.
	hcl, err := os.ReadFile("../../deploy/cairn.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^data_dir\s*=\s*"([^"]+)"`).FindSubmatch(hcl); m == nil || string(m[1]) != d["ReadWritePaths"][0] {
		t.Errorf("deploy/cairn.hcl's data_dir %q is not the unit's ReadWritePaths %q", m, d["ReadWritePaths"])
	}

	// verify checks that ExecStart's program exists, so the copy runs this test binary instead.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "cairn.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(src), "/usr/local/bin/cairn", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || strings.Contains(string(out), "cairn.service") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for cairn\.service: ([0-9.]+) (\w+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %s %s", m[1], m[2])
	if string(m[2]) != "OK" || score > 2.0 {
		t.Errorf("exposure %s %s, want OK at most 2.0 (a hardening directive was dropped?)", m[1], m[2])
	}
}
