package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// printedSetting finds `key = value  # source` in --print-config output.
func printedSetting(t *testing.T, out, key string) (value, source string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + ` = (.*?)\s+# (\w+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("--print-config shows no %s:\n%s", key, out)
	}
	return m[1], m[2]
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfigPrecedence: flag over env over file over default, for HCL and JSON files alike, and
// each setting's source is what --print-config says.
func TestConfigPrecedence(t *testing.T) {
	files := map[string]string{
		"cairn.hcl": `
node_id      = "from-file"
data_dir     = "/var/lib/cairn"
http_addr    = "127.0.0.1:18080"  # file only
cluster_addr = "127.0.0.1:17000"  # env wins
zone         = "file-zone"        # flag wins
join         = ["127.0.0.1:1", "127.0.0.1:2"]
bootstrap_expect = 3
max_file_size    = "16MiB"
enable_debug     = true
root_key         = "file-root-key-0123456789"
`,
		"cairn.json": `{
  "node_id": "from-file",
  "data_dir": "/var/lib/cairn",
  "http_addr": "127.0.0.1:18080",
  "cluster_addr": "127.0.0.1:17000",
  "zone": "file-zone",
  "join": ["127.0.0.1:1", "127.0.0.1:2"],
  "bootstrap_expect": 3,
  "max_file_size": "16MiB",
  "enable_debug": true,
  "root_key": "file-root-key-0123456789"
}`,
	}
	for name, content := range files {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, name, content)
			t.Setenv("CAIRN_CLUSTER_ADDR", "127.0.0.1:27000")
			t.Setenv("CAIRN_ZONE", "env-zone")
			r := runCLI(t, "agent", "--config-file", path, "--print-config", "--zone", "flag-zone")
			if r.code != 0 {
				t.Fatalf("exit %d: %v\n%s", r.code, r.err, r.stderr)
			}
			for _, want := range []struct{ key, value, source string }{
				{"node_id", `"from-file"`, sourceFile},
				{"http_addr", `"127.0.0.1:18080"`, sourceFile},
				{"cluster_addr", `"127.0.0.1:27000"`, sourceEnv},
				{"zone", `"flag-zone"`, sourceFlag},
				{"gossip_addr", `"127.0.0.1:7946"`, sourceDefault},
				{"join", `["127.0.0.1:1", "127.0.0.1:2"]`, sourceFile},
				{"bootstrap_expect", "3", sourceFile},
				{"max_file_size", `"16MiB"`, sourceFile},
				{"enable_debug", "true", sourceFile},
				{"repair_delay", `"10m0s"`, sourceDefault},
			} {
				if v, s := printedSetting(t, r.stdout, want.key); v != want.value || s != want.source {
					t.Errorf("%s = %s (%s), want %s (%s)", want.key, v, s, want.value, want.source)
				}
			}
			// The printed configuration is itself a valid config file that says the same.
			again := writeFile(t, "printed.hcl", r.stdout)
			t.Setenv("CAIRN_CLUSTER_ADDR", "")
			os.Unsetenv("CAIRN_CLUSTER_ADDR")
			os.Unsetenv("CAIRN_ZONE")
			r2 := runCLI(t, "agent", "--config-file", again, "--print-config", "--root-key", "flag-root-key-0123456789")
			if r2.code != 0 {
				t.Fatalf("re-reading the printed configuration: exit %d: %v", r2.code, r2.err)
			}
			if v, _ := printedSetting(t, r2.stdout, "zone"); v != `"flag-zone"` {
				t.Errorf("zone from the printed file = %s", v)
			}
		})
	}
}

// TestConfigFileErrorsNameKeyAndLine: an unknown key, a key spelt with '-', a block, a value of the
// wrong type and a bad value each fail with the file, the line and the key.
func TestConfigFileErrorsNameKeyAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                []string
	}{
		{"unknown key", "c.hcl", "node_id = \"n1\"\n\ncolour = \"red\"\n", []string{"c.hcl:3", `unknown key "colour"`}},
		{"unknown key in JSON", "c.json", "{\n  \"node_id\": \"n1\",\n  \"colour\": \"red\"\n}\n", []string{"c.json:3", `unknown key "colour"`}},
		{"flag spelling", "c.hcl", "node-id = \"n1\"\n", []string{"c.hcl:1", `unknown key "node-id"`}},
		{"not settable from a file", "c.hcl", "config_file = \"other.hcl\"\n", []string{"c.hcl:1", `unknown key "config_file"`}},
		{"block", "c.hcl", "node_id = \"n1\"\nraft {\n}\n", []string{"c.hcl:2", `"raft" block`}},
		{"wrong type", "c.hcl", "node_id = \"n1\"\nenable_debug = \"maybe\"\n", []string{"c.hcl:2", "enable_debug", "bool"}},
		{"bad size", "c.hcl", "\n\nmax_file_size = \"12XB\"\n", []string{"c.hcl:3", "max_file_size", "--max-file-size"}},
		{"bad erasure", "c.json", "{\"erasure\": \"3\"}", []string{"c.json:1", "erasure"}},
		{"list of numbers", "c.hcl", "join = [1, {}]\n", []string{"c.hcl:1", "join"}},
		{"duplicate", "c.hcl", "zone = \"a\"\nzone = \"b\"\n", []string{"c.hcl:2", "zone"}},
		{"syntax", "c.hcl", "zone = \n", []string{"c.hcl:1"}},
		{"missing file", "", "", []string{"--config-file", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "absent.hcl")
			if tc.file != "" {
				path = writeFile(t, tc.file, tc.content)
			}
			r := runCLI(t, "agent", "--config-file", path, "--print-config")
			if r.code == 0 {
				t.Fatalf("exit 0, want an error:\n%s", r.stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.err.Error(), w) {
					t.Errorf("error %q does not name %q", r.err, w)
				}
			}
			if strings.Contains(r.stdout, "Effective configuration") {
				t.Errorf("a bad file still printed a configuration")
			}
		})
	}
}

// TestPrintConfigRedactsSecrets: the root key and cluster secret never appear, wherever they come
// from, but --print-config says that they are set.
func TestPrintConfigRedactsSecrets(t *testing.T) {
	const rootKey, secret = "root-key-from-the-file-0123456789", "cluster-secret-from-env-0123456789"
	path := writeFile(t, "c.hcl", "node_id = \"n1\"\ndata_dir = \"/tmp/x\"\nroot_key = \""+rootKey+"\"\n")
	t.Setenv("CAIRN_CLUSTER_SECRET", secret)
	r := runCLI(t, "agent", "--config-file", path, "--print-config")
	if r.code != 0 {
		t.Fatalf("exit %d: %v", r.code, r.err)
	}
	if strings.Contains(r.stdout+r.stderr, rootKey) || strings.Contains(r.stdout+r.stderr, secret) {
		t.Fatalf("a secret was printed:\n%s", r.stdout)
	}
	for key, source := range map[string]string{"root_key": sourceFile, "cluster_secret": sourceEnv} {
		if v, s := printedSetting(t, r.stdout, key); v != `"<redacted>"` || s != source {
			t.Errorf("%s = %s (%s), want \"<redacted>\" (%s)", key, v, s, source)
		}
	}
	// A secret that is not set shows as empty, so an operator sees it is missing.
	os.Unsetenv("CAIRN_CLUSTER_SECRET")
	r = runCLI(t, "agent", "--config-file", path, "--print-config")
	if v, _ := printedSetting(t, r.stdout, "cluster_secret"); v != `""` {
		t.Errorf("unset cluster_secret printed as %s", v)
	}
	for _, name := range []string{"root-key", "cluster-secret", "gossip-key"} {
		if !isSecretFlag(name) {
			t.Errorf("%s is not treated as a secret", name)
		}
	}
	for _, name := range []string{"tls-key-file", "node-id", "data-dir"} {
		if isSecretFlag(name) {
			t.Errorf("%s is treated as a secret", name)
		}
	}
}

// TestShippedConfigFile: deploy/cairn.hcl is a valid configuration.
func TestShippedConfigFile(t *testing.T) {
	t.Setenv("CAIRN_ROOT_KEY", "a-root-key-from-the-environment-0123")
	r := runCLI(t, "agent", "--config-file", "../../deploy/cairn.hcl", "--print-config")
	if r.code != 0 {
		t.Fatalf("deploy/cairn.hcl: exit %d: %v", r.code, r.err)
	}
	if v, s := printedSetting(t, r.stdout, "bootstrap_expect"); v != "3" || s != sourceFile {
		t.Errorf("bootstrap_expect = %s (%s)", v, s)
	}
}

// TestValidateReportsEveryProblemInOrder: every problem, one per line, always in the same order.
func TestValidateReportsEveryProblemInOrder(t *testing.T) {
	args := []string{"agent", "--print-config", "--http-addr", "nope", "--gossip-addr", "bad", "--cluster-addr", "worse",
		"--root-key", "short", "--write-quorum", "9"}
	first := runCLI(t, args...)
	if first.code == 0 {
		t.Fatal("an invalid configuration passed")
	}
	lines := strings.Split(first.err.Error(), "\n")
	wantOrder := []string{"--node-id", "--data-dir", "--http-addr", "--cluster-addr", "--gossip-addr", "--root-key", "--write-quorum"}
	at := 0
	for _, w := range wantOrder {
		for at < len(lines) && !strings.Contains(lines[at], w) {
			at++
		}
		if at == len(lines) {
			t.Fatalf("problem %s missing or out of order in:\n%s", w, first.err)
		}
	}
	for range 10 {
		if again := runCLI(t, args...); again.err.Error() != first.err.Error() {
			t.Fatalf("the order changed:\n%s\nthen\n%s", first.err, again.err)
		}
	}
}
