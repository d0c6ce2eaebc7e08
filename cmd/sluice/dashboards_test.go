package main

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/internal/natstest"
)

const (
	dashboardFile = "../../docs/deploy/grafana-dashboard.json"
	alertsFile    = "../../docs/deploy/prometheus-alerts.yaml"
)

// metricRef finds the metric names a PromQL expression uses: the node's
// own families and the Go client's process and runtime ones.
var metricRef = regexp.MustCompile(`\b(?:sluice|process|go)_[a-z0-9_]+\b`)

// TestDashboardsUseRealMetrics loads the Grafana dashboard and the
// Prometheus alert rules and checks every metric they name against the
// /metrics of a running node (with the default config's classes), so a
// renamed or removed metric cannot leave a panel or an alert silently
// empty.
func TestDashboardsUseRealMetrics(t *testing.T) {
	var dash struct {
		UID           string `json:"uid"`
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Panels        []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion == 0 || len(dash.Panels) == 0 {
		t.Fatalf("%s: want a uid, a title, a schemaVersion and panels", dashboardFile)
	}
	exprs := map[string]string{} // expression → where
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] || p.Type == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q: want a unique id, a type and targets", p.Title)
		}
		ids[p.ID] = true
		for _, tg := range p.Targets {
			exprs[tg.Expr] = "panel " + p.Title + " " + tg.RefID
		}
	}

	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err = os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: want alert, labels.severity and annotations.summary", r.Alert)
			}
			if _, err := model.ParseDuration(r.For); r.For != "" && err != nil {
				t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
			}
			exprs[r.Expr] = "alert " + r.Alert
		}
	}
	// What the issue asks the rules to cover.
	for _, want := range []string{"SluiceSpoolFilling", "SluiceCriticalOldestOverBudget", "SluiceDegraded", "SluicePublishErrors", "SluiceDiskNearlyFull"} {
		if !strings.Contains(strings.Join(alerts, " "), want) {
			t.Errorf("no alert %s", want)
		}
	}

	families := nodeMetricFamilies(t)
	for expr, where := range exprs {
		if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
			t.Errorf("%s: unbalanced expression %q", where, expr)
		}
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: names no sluice metric: %q", where, expr)
		}
		for _, name := range refs {
			if _, ok := families[name]; ok {
				continue
			}
			base, suffix := name, ""
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, s); ok {
					base, suffix = b, s
				}
			}
			if typ, ok := families[base]; !ok || suffix == "" || (typ != dto.MetricType_HISTOGRAM && typ != dto.MetricType_SUMMARY) {
				t.Errorf("%s uses %s, which a running node does not export", where, name)
			}
		}
		for _, class := range regexp.MustCompile(`class!?="([^"]*)"`).FindAllStringSubmatch(expr, -1) {
			if !strings.Contains(string(defaultConfig), "  - name: "+class[1]+"\n") {
				t.Errorf("%s: class %q is not a class of the default config", where, class[1])
			}
		}
	}
}

// nodeMetricFamilies starts `sluice run` on its default config and returns
// the metric families of its /metrics by type.
func nodeMetricFamilies(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	addr, _ := startNode(t, "--upstream", natstest.Start(t).ClientURL(), "--data-dir", t.TempDir())
	// One event, so that every per-class series exists.
	res, err := http.Post("http://"+addr+"/v1/events?class=ingest", "application/x-ndjson", strings.NewReader(`{"id":"a"}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	client := &http.Client{Timeout: 10 * time.Second}
	res, err = client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]dto.MetricType{}
	for name, f := range fams {
		out[name] = f.GetType()
	}
	for _, want := range []string{"sluice_spool_max_bytes", "sluice_data_dir_free_bytes", "sluice_build_info"} {
		if _, ok := out[want]; !ok {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	return out
}
