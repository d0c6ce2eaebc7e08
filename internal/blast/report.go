package blast

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// ReportMeta says where and how a suite ran, for the report's header.
type ReportMeta struct {
	Command string    // the command that reproduces the report
	Commit  string    // the tree's commit, "+dirty" if modified
	Started time.Time // when the suite started
	Took    time.Duration
	Machine string // e.g. "2 cores, linux/amd64, go1.26.8"
	Events  string // where the ingest events came from
}

// classColors are the plots' colours per default class.
var classColors = map[string]string{
	priority.ClassCritical:    "#d62728",
	priority.ClassIngest:      "#1f77b4",
	priority.ClassReplication: "#2ca02c",
	priority.ClassBackfill:    "#ff7f0e",
}

// classOrder is the order classes are listed in.
func classOrder(names []string) []string {
	rank := map[string]int{priority.ClassCritical: 0, priority.ClassIngest: 1, priority.ClassReplication: 2, priority.ClassBackfill: 3}
	slices.SortFunc(names, func(a, b string) int {
		ra, oka := rank[a]
		rb, okb := rank[b]
		switch {
		case oka && okb:
			return ra - rb
		case oka:
			return -1
		case okb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return names
}

func resultClasses(r SuiteResult) []string {
	var names []string
	for _, ld := range r.Spec.Loads {
		if !slices.Contains(names, ld.Class) {
			names = append(names, ld.Class)
		}
	}
	return classOrder(names)
}

// WriteTimelines writes each run's timeline (its Outcome, windows per
// second per class) as DIR/SCENARIO-MODE.json.
func WriteTimelines(dir string, results []SuiteResult) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, r := range results {
		for mode, o := range r.Runs {
			data, err := json.MarshalIndent(o, "", " ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, r.Spec.Name+"-"+string(mode)+".json"), data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteMarkdown writes the suite's summary table.
func WriteMarkdown(w io.Writer, results []SuiteResult, meta ReportMeta) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Link: 20 Mbit/s and 20 ms each way (linkemu; cpu-contention's is unconstrained), a real nats-server\n"+
		"behind it; the node told a ceiling of 20 Mbit/s, default classes, headroom 0.8. Modes, each run in turn in the same suite: **sluice** (the\n"+
		"node, shaper on), **unshaped** (the node with `Link.Unshaped`: one FIFO window, no degradation) and\n"+
		"**naive** (no node: one JetStream publish per event, 256 in flight, fixed 1 s retries, a 100,000-event\n"+
		"memory queue per class). Latency is end to end, from the event's creation to a consumer reading the\n"+
		"stream beside the link. Ingest events: %s.\n\n", meta.Events)
	b.WriteString("| scenario | mode | critical p99: before → worst 1 s | ingest p99: before → worst 1 s | recovery | bulk drained | max level | attempts ÷ first sends | dropped | every acknowledged event |\n")
	b.WriteString("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, r := range results {
		end := r.Spec.Duration + r.Spec.Drain
		for _, mode := range Modes {
			f := r.Figures(mode)
			if f == nil {
				continue
			}
			amp := "—"
			if !math.IsNaN(f.Amplification) {
				amp = strconv.FormatFloat(f.Amplification, 'f', 2, 64)
			}
			level := strconv.Itoa(f.MaxLevel)
			if mode != ModeSluice {
				level = "—"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Spec.Name, mode,
				p99Pair(f, priority.ClassCritical), p99Pair(f, priority.ClassIngest),
				fmtSec(f.Recovery, end), fmtSec(f.BulkDrained, end), level, amp, fmtCount(f.Dropped), shortVerdict(f))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func p99Pair(f *Figures, class string) string {
	if _, ok := f.P99[class]; !ok {
		return "—"
	}
	if f.WorstP99[class] == 0 {
		return fmtMs(f.P99[class]) + " (run)"
	}
	return fmtMs(f.BaseP99[class]) + " → " + fmtMs(f.WorstP99[class])
}

func shortVerdict(f *Figures) string {
	switch {
	case f.Lost > 0 || f.Duplicates > 0:
		return fmt.Sprintf("**%s lost, %s duplicated**", fmtCount(f.Lost), fmtCount(f.Duplicates))
	case !f.Drained:
		return fmt.Sprintf("once (%s delivered, rest still queued at the end)", fmtCount(f.Delivered))
	}
	return fmt.Sprintf("exactly once (%s)", fmtCount(f.Delivered))
}

func fmtCount(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// UpdateResults replaces the part of the Markdown file at path between the
// lines "<!-- suite:begin -->" and "<!-- suite:end -->" with section.
func UpdateResults(path string, section []byte) error {
	const begin, end = "<!-- suite:begin -->\n", "<!-- suite:end -->"
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i := bytes.Index(data, []byte(begin))
	j := bytes.Index(data, []byte(end))
	if i < 0 || j < i {
		return fmt.Errorf("bench: %s has no %q … %q section to replace", path, strings.TrimSpace(begin), end)
	}
	var out bytes.Buffer
	out.Write(data[:i+len(begin)])
	out.Write(section)
	out.Write(data[j:])
	return os.WriteFile(path, out.Bytes(), 0o644)
}

// WriteHTML writes a self-contained report: per scenario its figures and,
// per mode, plots of delivered throughput, p99 latency and backlog per
// class over time (SVG), with the overload shaded.
func WriteHTML(w io.Writer, results []SuiteResult, meta ReportMeta) error {
	var b strings.Builder
	b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sluice bench report</title><style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-top:1px solid #ddd;padding-top:12px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:8px}
.mode{font-weight:600;text-align:center}.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}
svg text{font:10px system-ui,sans-serif;fill:#555}.note{color:#555}
</style></head><body>
`)
	fmt.Fprintf(&b, "<h1>sluice blast-radius bench</h1>\n<p class=note>%s. Commit %s, started %s, took %s. %s.</p>\n<p class=note>Reproduce: <code>%s</code></p>\n",
		html.EscapeString(meta.Machine), html.EscapeString(meta.Commit), meta.Started.UTC().Format("2006-01-02 15:04 MST"),
		meta.Took.Round(time.Second), html.EscapeString("Ingest events: "+meta.Events), html.EscapeString(meta.Command))
	b.WriteString("<p>Link: 20 Mbit/s, 20 ms each way, emulated between the node and a real nats-server. <b>sluice</b>: the node with its shaper; <b>unshaped</b>: the node with shaping off (one FIFO window); <b>naive</b>: one JetStream publish per event, no spool. Shaded: the overload.</p>\n")
	for _, r := range results {
		classes := resultClasses(r)
		fmt.Fprintf(&b, "<h2 id=%q>%s</h2>\n<p>%s</p>\n", r.Spec.Name, html.EscapeString(r.Spec.Name), html.EscapeString(r.Spec.About))
		b.WriteString("<table><tr><th>mode</th>")
		for _, c := range classes {
			fmt.Fprintf(&b, "<th>%s p99 run</th><th>before → worst 1 s</th>", html.EscapeString(c))
		}
		b.WriteString("<th>recovery</th><th>bulk drained</th><th>max level</th><th>attempts ÷ first sends</th><th>dropped</th><th>verdict</th></tr>\n")
		end := r.Spec.Duration + r.Spec.Drain
		for _, mode := range Modes {
			f := r.Figures(mode)
			if f == nil {
				continue
			}
			fmt.Fprintf(&b, "<tr><td>%s</td>", mode)
			for _, c := range classes {
				fmt.Fprintf(&b, "<td>%s</td><td>%s</td>", fmtMs(f.P99[c]), html.EscapeString(p99Pair(f, c)))
			}
			amp := "—"
			if !math.IsNaN(f.Amplification) {
				amp = strconv.FormatFloat(f.Amplification, 'f', 2, 64)
			}
			fmt.Fprintf(&b, "<td>%s</td><td>%s</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
				fmtSec(f.Recovery, end), fmtSec(f.BulkDrained, end), f.MaxLevel, amp, fmtCount(f.Dropped), html.EscapeString(f.Verdict()))
		}
		b.WriteString("</table>\n<div class=legend>")
		for _, c := range classes {
			fmt.Fprintf(&b, "<span><i style=\"background:%s\"></i>%s</span>", colorOf(c), html.EscapeString(c))
		}
		b.WriteString("<span><i style=\"background:#888\"></i>link (sluice: level ×, target)</span></div>\n")
		writeCharts(&b, r, classes)
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func colorOf(class string) string {
	if c, ok := classColors[class]; ok {
		return c
	}
	return "#9467bd"
}

// metric is one row of plots.
type metric struct {
	title string
	log   bool
	value func(w Window, class string) float64
}

func writeCharts(b *strings.Builder, r SuiteResult, classes []string) {
	metrics := []metric{
		{"delivered, events/s", false, func(w Window, c string) float64 { return float64(w.Classes[c].Delivered) }},
		{"p99 latency, ms (log)", true, func(w Window, c string) float64 {
			if w.Classes[c].Delivered == 0 {
				return math.NaN()
			}
			return w.Classes[c].P99
		}},
		{"backlog, events", false, func(w Window, c string) float64 { return float64(w.Classes[c].Backlog) }},
	}
	var modes []Mode
	for _, m := range Modes {
		if r.Runs[m] != nil {
			modes = append(modes, m)
		}
	}
	var xmax float64
	for _, m := range modes {
		if ws := r.Runs[m].Windows; len(ws) > 0 {
			xmax = max(xmax, ws[len(ws)-1].T)
		}
	}
	shade := [2]float64{r.Spec.Overload[0].Seconds(), r.Spec.Overload[1].Seconds()}
	b.WriteString("<div class=grid>")
	for _, m := range modes {
		fmt.Fprintf(b, "<div class=mode>%s</div>", m)
	}
	for _, mt := range metrics {
		// One y scale per row, so that modes compare at a glance.
		var ymax float64
		for _, m := range modes {
			for _, w := range r.Runs[m].Windows {
				for _, c := range classes {
					if v := mt.value(w, c); !math.IsNaN(v) {
						ymax = max(ymax, v)
					}
				}
			}
		}
		for _, m := range modes {
			var ss []series
			for _, c := range classes {
				s := series{color: colorOf(c)}
				for _, w := range r.Runs[m].Windows {
					s.pts = append(s.pts, [2]float64{w.T, mt.value(w, c)})
				}
				ss = append(ss, s)
			}
			b.WriteString("<div>")
			svgChart(b, mt.title, ss, xmax, ymax, mt.log, shade)
			b.WriteString("</div>")
		}
	}
	// The link as the node saw it: level and target.
	for _, m := range modes {
		b.WriteString("<div>")
		if m == ModeSluice {
			lv := series{color: "#888"}
			tg := series{color: "#bbb", dash: true}
			for _, w := range r.Runs[m].Windows {
				lv.pts = append(lv.pts, [2]float64{w.T, float64(w.Level) * 5})
				tg.pts = append(tg.pts, [2]float64{w.T, float64(w.Target) * 8 / 1e6})
			}
			svgChart(b, "level × 5 (solid), target Mbit/s (dashed)", []series{tg, lv}, xmax, 20, false, shade)
		}
		b.WriteString("</div>")
	}
	b.WriteString("</div>\n")
}

type series struct {
	color string
	dash  bool
	pts   [][2]float64
}

// svgChart writes one small line chart. log plots y on a log10 scale from
// 10 to the next power of ten above ymax.
func svgChart(b *strings.Builder, title string, ss []series, xmax, ymax float64, log bool, shade [2]float64) {
	const W, H, L, R, T, B = 380.0, 150.0, 46.0, 8.0, 16.0, 20.0
	pw, ph := W-L-R, H-T-B
	if xmax <= 0 {
		xmax = 1
	}
	lo, hi := 0.0, niceCeil(ymax)
	if log {
		lo, hi = 1, math.Max(2, math.Ceil(math.Log10(math.Max(ymax, 10))))
	}
	y := func(v float64) float64 {
		if log {
			v = math.Log10(math.Max(v, 10))
		}
		return T + ph - (v-lo)/(hi-lo)*ph
	}
	x := func(t float64) float64 { return L + t/xmax*pw }
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="100%%">`, W, H)
	fmt.Fprintf(b, `<text x="%.0f" y="11">%s</text>`, L, html.EscapeString(title))
	if shade[1] > 0 {
		fmt.Fprintf(b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="#f4e6c8"/>`, x(shade[0]), T, x(shade[1])-x(shade[0]), ph)
	}
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#ccc"/>`, L, T, pw, ph)
	// y ticks
	if log {
		for e := lo; e <= hi; e++ {
			fmt.Fprintf(b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`, L-3, y(math.Pow(10, e))+3, fmtTick(math.Pow(10, e)))
		}
	} else {
		for _, f := range []float64{0, 0.5, 1} {
			v := lo + f*(hi-lo)
			fmt.Fprintf(b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`, L-3, y(v)+3, fmtTick(v))
		}
	}
	// x ticks every 10 s (20 s past 100 s)
	step := 10.0
	if xmax > 100 {
		step = 20
	}
	for t := 0.0; t <= xmax; t += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.0fs</text>`, x(t), H-6, t)
	}
	for _, s := range ss {
		if len(s.pts) == 0 {
			continue
		}
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="4 3"`
		}
		// NaN points (nothing to measure in that second) break the line.
		var p strings.Builder
		flush := func() {
			if p.Len() > 0 {
				fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.3"%s points="%s"/>`, s.color, dash, p.String())
				p.Reset()
			}
		}
		for _, pt := range s.pts {
			if math.IsNaN(pt[1]) {
				flush()
				continue
			}
			v := math.Min(pt[1], hi)
			if log {
				v = math.Min(pt[1], math.Pow(10, hi))
			}
			if p.Len() > 0 {
				p.WriteByte(' ')
			}
			fmt.Fprintf(&p, "%.1f,%.1f", x(pt[0]), y(v))
		}
		flush()
	}
	b.WriteString("</svg>")
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtTick(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
