package main

// End-to-end test of what an SRE installs: three real agents, their /metrics checked by promtool,
// the shipped dashboard and rules checked against the live metric names, and a real Prometheus
// (Debian's package) on loopback that scrapes them, evaluates deploy/prometheus's rules and fires
// CairnNodeDown after a SIGKILL.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cairn-dev/cairn/internal/testutil"
)

// scrape returns a node's /metrics text.
func scrape(c *http.Client, base string) (string, error) {
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s/metrics: %s", base, resp.Status)
	}
	return string(body), nil
}

// seriesNames is every name a PromQL selector can use on an exposition: the family names, plus
// _bucket/_sum/_count of histograms and _sum/_count of summaries.
func seriesNames(t *testing.T, text string) map[string]bool {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	names := map[string]bool{}
	for name, f := range families {
		names[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

// identifier is a PromQL metric or recording-rule name; names with a colon are recording rules,
// which promtool checks.
var identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

// namedMetrics lists the cairn_ metric names a file mentions (queries, annotations, descriptions).
func namedMetrics(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, id := range identifier.FindAllString(string(raw), -1) {
		if strings.HasPrefix(id, "cairn_") && !strings.Contains(id, ":") && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func TestE2EPrometheus(t *testing.T) {
	skipShort(t)
	promtool := requireTool(t, "promtool", "prometheus")
	prometheusBin := requireTool(t, "prometheus", "prometheus")
	const ip = "127.0.0.1"
	ports := freePorts(t, []string{ip}, 10)
	var specs []agentSpec
	for i := range 3 {
		specs = append(specs, agentSpec{id: "p" + strconv.Itoa(i+1), ip: ip,
			httpPort: ports[3*i], clusterPort: ports[3*i+1], gossipPort: ports[3*i+2]})
	}
	promAddr := net.JoinHostPort(ip, strconv.Itoa(ports[9]))
	cl := newAgentCluster(t, specs, "1MiB")
	c := newClient()
	start := time.Now()
	cl.startAll()
	urls := cl.urls(0, 1, 2)
	waitReady(t, c, 20*time.Second, urls...)
	t.Logf("3 agents ready after %s", time.Since(start).Round(time.Millisecond))

	leader := waitLeader(t, c, 10*time.Second, urls)
	// Traffic, so that the request, upload and download series exist.
	data := randomBytes(t, 100<<10)
	token := upload(t, c, urls[0], cl.rootKey, "metrics.bin", data)
	expectFile(t, c, 10*time.Second, token, data, urls...)
	// The leader-only series appear once autopilot has looked at the servers.
	testutil.WaitForNil(t, 30*time.Second, "the leader reports autopilot's view", func() error {
		_, err := metricValue(c, urls[leader], "cairn_autopilot_failure_tolerance")
		return err
	})

	// Every node's exposition, the leader's included, passes promtool and has no NaN.
	live := map[string]bool{}
	t.Run("promtool check metrics", func(t *testing.T) {
		for i, u := range urls {
			role := "follower"
			if i == leader {
				role = "leader"
			}
			text, err := scrape(c, u)
			if err != nil {
				t.Fatal(err)
			}
			for name := range seriesNames(t, text) {
				live[name] = true
			}
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = strings.NewReader(text)
			out, err := cmd.CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("promtool check metrics on %s (%s): %v\n%s", specs[i].id, role, err, out)
			}
			for line := range strings.Lines(text) {
				if !strings.HasPrefix(line, "#") && strings.Contains(line, "NaN") {
					t.Errorf("%s (%s) exposes a NaN: %s", specs[i].id, role, strings.TrimSpace(line))
				}
			}
			t.Logf("%s (%s): %d lines, promtool clean", specs[i].id, role, strings.Count(text, "\n"))
		}
	})

	t.Run("dashboard and rules name live metrics", func(t *testing.T) {
		for _, path := range []string{"../../deploy/prometheus/recording.yml", "../../deploy/prometheus/alerts.yml",
			"../../deploy/grafana/cairn.json"} {
			names := namedMetrics(t, path)
			if len(names) == 0 {
				t.Errorf("%s names no cairn_ metric", path)
			}
			for _, name := range names {
				if !live[name] {
					t.Errorf("%s names %s, which no node exposes", filepath.Base(path), name)
				}
			}
		}
	})

	t.Run("metrics reference lists every live metric", func(t *testing.T) {
		doc, err := os.ReadFile("../../docs/operations.md")
		if err != nil {
			t.Fatal(err)
		}
		_, ref, ok := strings.Cut(string(doc), "## Metrics reference")
		if !ok {
			t.Fatal("docs/operations.md has no \"Metrics reference\" section")
		}
		for name := range live {
			if !strings.HasPrefix(name, "cairn_") {
				continue
			}
			family := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := strings.CutSuffix(name, suffix); ok && live[f] {
					family = f
				}
			}
			// A row names the family in backticks, with its labels in braces if it has any.
			if !strings.Contains(ref, "`"+family+"`") && !strings.Contains(ref, "`"+family+"{") {
				t.Errorf("docs/operations.md's metrics reference does not list %s", family)
			}
		}
	})

	t.Run("node-down alert fires after SIGKILL", func(t *testing.T) {
		dir := t.TempDir()
		// The shipped rules as they are, but every alert's hold time cut to 2 s, so that the test
		// takes seconds; promtool's unit tests check the real hold times.
		holdTime := regexp.MustCompile(`(?m)^(\s+)for: \S+$`)
		for _, name := range []string{"recording.yml", "alerts.yml"} {
			raw, err := os.ReadFile("../../deploy/prometheus/" + name)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), holdTime.ReplaceAll(raw, []byte("${1}for: 2s")), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var targets []string
		for _, s := range specs {
			targets = append(targets, strconv.Quote(s.addr(s.httpPort)))
		}
		config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [recording.yml, alerts.yml]
scrape_configs:
  - job_name: cairn
    static_configs:
      - targets: [%s]
`, strings.Join(targets, ", "))
		if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		startPrometheus(t, prometheusBin, dir, promAddr)
		prom := "http://" + promAddr

		testutil.WaitForNil(t, 30*time.Second, "Prometheus scrapes all three agents and records one leader", func() error {
			up, err := promQuery(c, prom, `up{job="cairn"} == 1`)
			if err != nil {
				return err
			}
			if len(up) != 3 {
				return fmt.Errorf("%d targets up: %v", len(up), up)
			}
			leaders, err := promQuery(c, prom, `job:cairn_raft_leaders:sum`)
			if err != nil {
				return err
			}
			if len(leaders) != 1 || leaders[0].Value != "1" {
				return fmt.Errorf("job:cairn_raft_leaders:sum = %v, want 1", leaders)
			}
			return nil
		})
		if firing, err := promAlerts(c, prom, "CairnNodeDown"); err != nil || len(firing) > 0 {
			t.Fatalf("CairnNodeDown before any kill: %v, %v", firing, err)
		}

		victim := (leader + 1) % 3
		victimAddr := specs[victim].addr(specs[victim].httpPort)
		t.Logf("SIGKILL %s (%s, a follower)", specs[victim].id, victimAddr)
		cl.procs[victim].signal(t, syscall.SIGKILL)
		cl.procs[victim].waitExit(t, 10*time.Second)
		killedAt := time.Now()
		waitForOrFail(t, 30*time.Second, "CairnNodeDown fires for the killed agent", func() error {
			firing, err := promAlerts(c, prom, "CairnNodeDown")
			if err != nil {
				return err
			}
			if len(firing) == 0 {
				return fmt.Errorf("not firing yet")
			}
			for _, a := range firing {
				if a["instance"] != victimAddr {
					return fmt.Errorf("%w: CairnNodeDown fires for %s, which is alive", errPermanent, a["instance"])
				}
				if a["severity"] != "critical" {
					return fmt.Errorf("%w: severity %q, want critical", errPermanent, a["severity"])
				}
			}
			return nil
		})
		t.Logf("CairnNodeDown fired %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	})
}

// startPrometheus runs Prometheus on addr with the configuration in dir; cleanup kills it, and
// prints its log if the test failed.
func startPrometheus(t *testing.T, bin, dir, addr string) {
	t.Helper()
	var log testutil.SyncBuffer
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("--- prometheus log ---\n%s", tail(log.String(), 8<<10))
		}
	})
	c := newClient()
	waitForOrFail(t, 30*time.Second, "Prometheus ready", func() error {
		select {
		case <-done:
			return fmt.Errorf("%w: prometheus exited: %s", errPermanent, tail(log.String(), 2<<10))
		default:
		}
		resp, err := c.Get("http://" + addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready: %s", resp.Status)
		}
		return nil
	})
}

// promSample is one element of an instant query's vector.
type promSample struct {
	Metric map[string]string
	Value  string
}

// promQuery runs an instant query against Prometheus's HTTP API.
func promQuery(c *http.Client, prom, query string) ([]promSample, error) {
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := getJSON(c, prom+"/api/v1/query?query="+url.QueryEscape(query), &answer); err != nil {
		return nil, err
	}
	if answer.Status != "success" {
		return nil, fmt.Errorf("%w: query %q: %s", errPermanent, query, answer.Error)
	}
	var out []promSample
	for _, r := range answer.Data.Result {
		s := promSample{Metric: r.Metric}
		if len(r.Value) == 2 {
			s.Value, _ = r.Value[1].(string)
		}
		out = append(out, s)
	}
	return out, nil
}

// promAlerts returns the labels of every firing alert with the given name.
func promAlerts(c *http.Client, prom, name string) ([]map[string]string, error) {
	var answer struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := getJSON(c, prom+"/api/v1/alerts", &answer); err != nil {
		return nil, err
	}
	var out []map[string]string
	for _, a := range answer.Data.Alerts {
		if a.Labels["alertname"] == name && a.State == "firing" {
			out = append(out, a.Labels)
		}
	}
	return out, nil
}

func getJSON(c *http.Client, u string, v any) error {
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
