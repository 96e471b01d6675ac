package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// promtool finds promtool (Debian's prometheus package); .ci/run installs it, so on CI a missing
// tool fails the test rather than skipping it.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (install Debian's prometheus package): %v", err)
		}
		t.Skipf("promtool not found (apt-get install prometheus); skipped outside CI: %v", err)
	}
	return path
}

func runTool(t *testing.T, dir, tool string, args ...string) {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s:\n%s", tool, strings.Join(args, " "), out)
}

// TestPrometheusRules checks the rule files and the example configuration, and runs the alerts'
// unit tests.
func TestPrometheusRules(t *testing.T) {
	pt := promtool(t)
	runTool(t, "prometheus", pt, "check", "rules", "recording.yml", "alerts.yml")
	runTool(t, "prometheus", pt, "check", "config", "prometheus.yml")
	runTool(t, "prometheus", pt, "test", "rules", "alerts_test.yml")
}

// TestEveryAlertIsUnitTested: each alert in alerts.yml has a case in alerts_test.yml that expects
// it to fire.
func TestEveryAlertIsUnitTested(t *testing.T) {
	rules, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	alerts := regexp.MustCompile(`(?m)^\s+- alert: (\S+)$`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) < 10 {
		t.Fatalf("found %d alerts in alerts.yml, want every one of the ten documented kinds", len(alerts))
	}
	// An alertname followed by a non-empty exp_alerts list is a case where the alert fires.
	firing := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)alertname: (\S+)\n\s+exp_alerts:\n\s+- exp_labels`).FindAllStringSubmatch(string(tests), -1) {
		firing[m[1]] = true
	}
	for _, a := range alerts {
		if !firing[a[1]] {
			t.Errorf("alert %s has no unit test in which it fires", a[1])
		}
	}
}

// TestGrafanaDashboard checks the dashboard's shape: it parses, every panel queries through the
// templated data source, and it covers the areas an operator looks at.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana/cairn.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type       string `json:"type"`
			Title      string `json:"title"`
			ID         int    `json:"id"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if d.UID == "" {
		t.Error("dashboard has no uid")
	}
	ids := map[int]bool{}
	var rows []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the templated data source", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `job=~"$job"`) {
				t.Errorf("panel %q query %q is not filtered by the job variable", p.Title, tg.Expr)
			}
		}
	}
	want := []string{"Requests", "Raft", "Segments and repair", "Disk", "Members"}
	if strings.Join(rows, ",") != strings.Join(want, ",") {
		t.Errorf("rows %v, want %v", rows, want)
	}
}
