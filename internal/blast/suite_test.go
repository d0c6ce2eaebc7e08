package blast

import (
	"bytes"
	"context"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
)

// windows builds a timeline of n one-second windows with f filling each.
func windows(n int, f func(t float64, w *Window)) []Window {
	ws := make([]Window, n)
	for i := range ws {
		ws[i] = Window{T: float64(i + 1), Classes: map[string]WindowClass{}}
		f(ws[i].T, &ws[i])
	}
	return ws
}

func TestFigures(t *testing.T) {
	// Overload 10–20 s: ingest's p99 and backlog jump, and come back at
	// t = 24 (recovery 4 s after the window ending at 21 starts… measured
	// from the end of the overload to the start of the first good window).
	ws := windows(40, func(ts float64, w *Window) {
		ing := WindowClass{Delivered: 100, P99: 50, Backlog: 10}
		rep := WindowClass{Delivered: 100, P99: 500, Backlog: 0}
		w.Attempts, w.FirstSends = 10, 10
		if ts > 10 && ts <= 24 {
			ing.P99, ing.Backlog = 900, 5000
			rep.Backlog = 20_000
		}
		if ts > 10 && ts <= 20 {
			w.Attempts = 25
			w.Level = 2
		}
		if ts > 24 && ts <= 30 {
			rep.Backlog = 100
		}
		w.Classes["ingest"], w.Classes["replication"] = ing, rep
	})
	r := SuiteResult{
		Spec: SuiteScenario{Overload: [2]time.Duration{10 * time.Second, 20 * time.Second}},
		Runs: map[Mode]*Outcome{ModeSluice: {Windows: ws, Drained: true,
			P99:          map[string]float64{"ingest": 800, "replication": 600},
			Offered:      map[string]uint64{"ingest": 4000, "replication": 4000},
			Acknowledged: map[string]uint64{"ingest": 4000, "replication": 4000},
			Delivered:    map[string]uint64{"ingest": 4000, "replication": 3990},
			Duplicates:   map[string]uint64{"replication": 1}}},
	}
	f := r.Figures(ModeSluice)
	if f.Recovery != 4 {
		t.Errorf("recovery = %v, want 4", f.Recovery)
	}
	if f.BulkDrained != 10 {
		t.Errorf("bulk drained = %v, want 10", f.BulkDrained)
	}
	if f.BaseP99["ingest"] != 50 || f.WorstP99["ingest"] != 900 {
		t.Errorf("ingest p99 before %v, worst %v", f.BaseP99["ingest"], f.WorstP99["ingest"])
	}
	if f.MaxLevel != 2 || f.Amplification != 2.5 {
		t.Errorf("max level %d, amplification %v", f.MaxLevel, f.Amplification)
	}
	if f.Lost != 10 || f.Duplicates != 1 || !strings.HasPrefix(f.Verdict(), "FAILED") {
		t.Errorf("lost %d, duplicates %d, verdict %q", f.Lost, f.Duplicates, f.Verdict())
	}
	// A run that ended with events still spooled: not lost.
	o := r.Runs[ModeSluice]
	o.Drained, o.Duplicates = false, nil
	o.Final = aggregator.Stats{Classes: map[string]aggregator.ClassStats{"replication": {Depth: 10}}}
	if f := r.Figures(ModeSluice); f.Lost != 0 || strings.HasPrefix(f.Verdict(), "FAILED") {
		t.Errorf("spooled counted as lost: %d, %q", f.Lost, f.Verdict())
	}
	// Never recovering, and no overload at all.
	never := windows(30, func(ts float64, w *Window) {
		w.Classes["ingest"] = WindowClass{Delivered: 1, P99: 50 + 100*ts}
	})
	r.Runs[ModeSluice] = &Outcome{Windows: never}
	if f := r.Figures(ModeSluice); f.Recovery != -1 || !math.IsNaN(f.BulkDrained) {
		t.Errorf("never: recovery %v, bulk %v", f.Recovery, f.BulkDrained)
	}
	r.Spec.Overload = [2]time.Duration{}
	if f := r.Figures(ModeSluice); !math.IsNaN(f.Recovery) || !math.IsNaN(f.Amplification) {
		t.Errorf("no overload: recovery %v, amplification %v", f.Recovery, f.Amplification)
	}
}

// TestReport checks the report's outputs on a fabricated result: every
// SVG parses as XML, each scenario and mode is in the HTML and the
// Markdown, and UpdateResults replaces only its section.
func TestReport(t *testing.T) {
	ws := windows(20, func(ts float64, w *Window) {
		w.Level, w.Target = int(ts)%4, 2_000_000
		w.Classes["critical"] = WindowClass{Delivered: 100, P99: 40 + ts}
		// Nothing delivered in some windows: the p99 line breaks there.
		d := uint64(1000)
		if int(ts)%5 == 0 {
			d = 0
		}
		w.Classes["ingest"] = WindowClass{Delivered: d, P99: 100 * ts, Backlog: uint64(ts) * 10}
	})
	out := func(m Mode) *Outcome {
		return &Outcome{Mode: m, Windows: ws, Drained: true, P99: map[string]float64{"critical": 60, "ingest": 2000},
			Acknowledged: map[string]uint64{"critical": 2000, "ingest": 18000},
			Delivered:    map[string]uint64{"critical": 2000, "ingest": 18000}}
	}
	res := []SuiteResult{{
		Spec: SuiteScenario{About: "a <test> & more", Overload: [2]time.Duration{5 * time.Second, 10 * time.Second},
			Scenario: Scenario{Name: "fabricated", Duration: 20 * time.Second, Loads: []Load{{Class: "critical"}, {Class: "ingest"}}}},
		Runs: map[Mode]*Outcome{ModeSluice: out(ModeSluice), ModeUnshaped: out(ModeUnshaped), ModeNaive: out(ModeNaive)},
	}}
	meta := ReportMeta{Command: "sluice bench --scale 1", Commit: "abc123", Started: time.Unix(0, 0), Machine: "test", Events: "synthetic"}
	var page bytes.Buffer
	if err := WriteHTML(&page, res, meta); err != nil {
		t.Fatal(err)
	}
	html := page.String()
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(html, -1)
	if len(svgs) != 3*3+1 { // three metrics per mode, and the sluice link plot
		t.Errorf("%d plots, want 10", len(svgs))
	}
	for _, s := range svgs {
		if err := xml.Unmarshal([]byte(s), new(struct{})); err != nil {
			t.Fatalf("plot is not well-formed: %v\n%s", err, s)
		}
	}
	for _, want := range []string{`id="fabricated"`, "a &lt;test&gt; &amp; more", ">sluice<", ">unshaped<", ">naive<", "sluice bench --scale 1", "abc123"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if n := strings.Count(html, "<polyline"); n < 3*3*2+2 {
		t.Errorf("%d lines drawn", n)
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, res, meta); err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile(`(?m)^\| fabricated \| (sluice|unshaped|naive) \| .*exactly once \(20,000\) \|$`).FindAllString(md.String(), -1)
	if len(rows) != 3 {
		t.Errorf("summary rows %q in\n%s", rows, md.String())
	}

	path := filepath.Join(t.TempDir(), "RESULTS.md")
	os.WriteFile(path, []byte("# head\n<!-- suite:begin -->\nold\n<!-- suite:end -->\ntail\n"), 0o644)
	if err := UpdateResults(path, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "# head\n<!-- suite:begin -->\nnew\n<!-- suite:end -->\ntail\n" {
		t.Errorf("updated:\n%s", got)
	}
	os.WriteFile(path, []byte("no markers\n"), 0o644)
	if err := UpdateResults(path, []byte("new\n")); err == nil || !strings.Contains(err.Error(), "suite:begin") {
		t.Errorf("no markers: %v", err)
	}
}

// TestSuiteSmoke runs the outage scenario at a tenth of its length in
// every mode, through RunSuite: the harness's machinery end to end.
func TestSuiteSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a link emulator and a NATS server three times")
	}
	var lines []string
	res, err := RunSuite(context.Background(), SuiteOptions{Dir: t.TempDir(), Scenarios: []string{"outage"}, Scale: 0.1,
		Progress: func(l string) { lines = append(lines, l) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || len(res[0].Runs) != 3 {
		t.Fatalf("results %+v", res)
	}
	for _, m := range Modes {
		f := res[0].Figures(m)
		t.Logf("%s: %s; critical p99 %s, ingest p99 %s, recovery %v", m, f.Verdict(), fmtMs(f.P99["critical"]), fmtMs(f.P99["ingest"]), f.Recovery)
		if f.Lost != 0 || f.Duplicates != 0 || f.Acked == 0 {
			t.Errorf("%s: %s", m, f.Verdict())
		}
		if len(res[0].Runs[m].Windows) < 5 {
			t.Errorf("%s: %d windows", m, len(res[0].Runs[m].Windows))
		}
	}
	if len(lines) < 6 || !strings.Contains(lines[0], "[1/3] outage/sluice") {
		t.Errorf("progress: %q", lines)
	}
	if _, err := RunSuite(context.Background(), SuiteOptions{Scenarios: []string{"nope"}}); err == nil {
		t.Error("unknown scenario ran")
	}
}

// The estimate figure judges the windows wholly inside the steady
// intervals against the link's rate at each, and the level figures count
// seconds above 0 and the node's deferrals.
func TestFiguresEstimate(t *testing.T) {
	link := func(mbit int64) linkemu.Settings {
		return linkemu.Symmetric(linkemu.Shape{Bandwidth: linkemu.Rate(mbit) * linkemu.Mbit})
	}
	spec := SuiteScenario{
		Steady: [][2]time.Duration{{2 * time.Second, 4 * time.Second}, {6 * time.Second, 8 * time.Second}},
		Scenario: Scenario{Link: link(8), Schedule: linkemu.Schedule{{At: 5 * time.Second, Settings: link(16)},
			{At: 7 * time.Second, Settings: linkemu.Settings{Outage: linkemu.OutageBlackhole}}}},
	}
	// capacity per window ending at t = 1..9 (MB/s): the link is 1 MB/s
	// to 5 s, then 2 MB/s, down from 7 s.
	caps := []int64{5e6, 1.1e6, 0.7e6, 1e6, 9e6, 2.6e6, 2e6, 0, 3e6}
	ws := windows(len(caps), func(ts float64, w *Window) {
		w.Capacity = caps[int(ts)-1]
		if ts == 3 || ts == 4 {
			w.Level = 1
		}
	})
	r := SuiteResult{Spec: spec, Runs: map[Mode]*Outcome{ModeSluice: {Windows: ws,
		Final: aggregator.Stats{Classes: map[string]aggregator.ClassStats{"a": {Deferrals: 2}, "b": {Deferrals: 3}}}}}}
	f := r.Figures(ModeSluice)
	// judged: t=3 (0.7 of 1 MB/s), t=4 (1.0), t=7 (2.0 of 2 MB/s); t=8 is
	// down, t=2 and t=6 straddle an interval's start.
	if f.EstimateSeconds != 3 || f.EstimateOff != 1 || math.Abs(f.EstimateLow+0.3) > 1e-9 || f.EstimateHigh != 0 {
		t.Errorf("estimate: %d seconds, %d off, %v .. %v; want 3, 1, -0.3 .. 0", f.EstimateSeconds, f.EstimateOff, f.EstimateLow, f.EstimateHigh)
	}
	if f.LevelSeconds != 2 || f.Deferrals != 5 {
		t.Errorf("level seconds %d, deferrals %d; want 2, 5", f.LevelSeconds, f.Deferrals)
	}
	r.Spec.Steady = nil
	if f := r.Figures(ModeSluice); f.EstimateSeconds != 0 || !math.IsNaN(f.EstimateLow) {
		t.Errorf("no steady interval: %d seconds, low %v", f.EstimateSeconds, f.EstimateLow)
	}
}

// A burner child starts, spins, and stops when told.
func TestBurner(t *testing.T) {
	b, err := StartBurner(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Stop(); err != nil {
		t.Fatalf("burner did not exit cleanly: %v", err)
	}
}
