package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// TestE2EAgentConfigFile: a real agent started from a config file runs with the file's settings,
// with a CAIRN_* variable and a flag overriding the file, as its own /v1/config reports.
func TestE2EAgentConfigFile(t *testing.T) {
	skipShort(t)
	ports := freePorts(t, []string{"127.0.0.1"}, 3)
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	const rootKey = "e2e-config-root-key-0123456789"
	path := writeFile(t, "cairn.hcl", fmt.Sprintf(`
node_id          = "from-file"
data_dir         = %q
http_addr        = %q
cluster_addr     = %q
gossip_addr      = %q
bootstrap_expect = 1
zone             = "file-zone"     # CAIRN_ZONE wins
max_file_size    = "3MiB"          # the flag wins
min_free         = "1MiB"
enable_debug     = true
`, filepath.Join(t.TempDir(), "data"), addr(ports[0]), addr(ports[1]), addr(ports[2])))
	p := startCairn(t, "cairn agent", []string{"CAIRN_ROOT_KEY=" + rootKey, "CAIRN_ZONE=env-zone"},
		"agent", "--config-file", path, "--max-file-size", "5MiB")
	base := "http://" + addr(ports[0])
	c := newClient()
	// One node of 2+1 never becomes ready (it cannot place an upload), but it serves its
	// configuration once the cluster is initialised and the root key is known.
	var cfg map[string]any
	testutil.WaitForNil(t, 60*time.Second, "/v1/config answers", func() error {
		if p.exited() {
			return fmt.Errorf("%w: the agent exited", errPermanent)
		}
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/config", nil)
		req.Header.Set("Authorization", "Bearer "+rootKey)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return json.Unmarshal(body, &cfg)
	})
	for key, want := range map[string]any{
		"NodeID": "from-file", "Zone": "env-zone", "MaxFileSize": float64(5 << 20), "MinFree": float64(1 << 20),
		"EnableDebug": true, "BootstrapExpect": float64(1), "RootKey": "<redacted>",
	} {
		if cfg[key] != want {
			t.Errorf("%s = %v, want %v", key, cfg[key], want)
		}
	}
	// enable_debug from the file mounted pprof.
	req, _ := http.NewRequest(http.MethodGet, base+"/debug/pprof/cmdline", nil)
	req.Header.Set("Authorization", "Bearer "+rootKey)
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pprof on an agent with enable_debug = true: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.waitExit(t, 60*time.Second); code != 0 {
		t.Errorf("agent exited %d", code)
	}
}
