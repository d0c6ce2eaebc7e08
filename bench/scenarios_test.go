package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sluicehq/sluice/internal/blast"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/priority"
)

const (
	mbit     = 1_000_000 / 8 // bytes/s
	linkRate = 20 * mbit     // the scenarios' link: 20 Mbit/s
	rtt      = 40 * time.Millisecond
	headroom = 0.8
)

func linkAt(rate linkemu.Rate) linkemu.Settings {
	return linkemu.Symmetric(linkemu.Shape{Bandwidth: rate, Latency: rtt / 2})
}

// nodeOptions are the node's options in every scenario: the default
// classes sized for the configured 20 Mbit/s link.
func nodeOptions() aggregator.Options {
	return aggregator.Options{
		Classes: priority.Defaults(linkRate),
		Link:    aggregator.Link{Ceil: linkRate, Headroom: headroom},
	}
}

// wireRatio is the compressed/raw ratio of generated events of size and
// entropy, for sizing loads in wire bytes.
func wireRatio(size int, entropy float64) float64 {
	ld := blast.Load{Class: "x", Size: size, Entropy: entropy}
	var raw []byte
	for _, ev := range blast.SampleEvents(ld, 1000) {
		raw = append(append(raw, ev...), '\n')
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	defer enc.Close()
	return float64(len(enc.EncodeAll(raw, nil))) / float64(len(raw))
}

// eventsPerSec is the event rate whose compressed size is wireBps.
func eventsPerSec(wireBps float64, size int, entropy float64) float64 {
	return wireBps / (float64(size) * wireRatio(size, entropy))
}

// BenchmarkScenarios runs the shaper's scenarios over the link emulator
// and a real NATS server, each shaped and, in the same run, unshaped (one
// FIFO window, no degradation). Every scenario runs once per iteration:
// use -benchtime 1x. SLUICE_BENCH_OUT=DIR writes each run's timeline as
// JSON there. It takes about 12 minutes.
func BenchmarkScenarios(b *testing.B) {
	bulkSize, bulkEntropy := 1000, 0.6
	critical := blast.Load{Class: "critical", Rate: 200, Size: 300}
	bulk := eventsPerSec(3*linkRate/2, bulkSize, bulkEntropy) // each of two bulk classes: 1.5× the link
	ingestSize, ingestEntropy := 800, 0.4

	scenarios := []struct {
		sc     blast.Scenario
		report func(b *testing.B, shaped, base *blast.Outcome)
	}{
		{blast.Scenario{Name: "critical-idle", Link: linkAt(20 * linkemu.Mbit), Duration: 20 * time.Second, Drain: 10 * time.Second,
			Loads: []blast.Load{critical}}, reportIdle},
		{blast.Scenario{Name: "critical-protection", Link: linkAt(20 * linkemu.Mbit), Duration: 60 * time.Second, Drain: 5 * time.Second,
			Loads: []blast.Load{critical,
				{Class: "replication", Rate: bulk, Size: bulkSize, Entropy: bulkEntropy},
				{Class: "backfill", Rate: bulk, Size: bulkSize, Entropy: bulkEntropy}}}, reportProtection},
		{blast.Scenario{Name: "utilization", Link: linkAt(20 * linkemu.Mbit), Duration: 60 * time.Second, Drain: 5 * time.Second,
			Loads: []blast.Load{{Class: "ingest", Rate: eventsPerSec(1.3*headroom*linkRate, ingestSize, ingestEntropy), Size: ingestSize, Entropy: ingestEntropy}}},
			reportUtilization},
		{blast.Scenario{Name: "step-20-5-20", Link: linkAt(20 * linkemu.Mbit), Duration: 100 * time.Second, Drain: 60 * time.Second,
			Schedule: linkemu.Schedule{{At: 20 * time.Second, Settings: linkAt(5 * linkemu.Mbit)}, {At: 50 * time.Second, Settings: linkAt(20 * linkemu.Mbit)}},
			Loads: []blast.Load{{Class: "critical", Rate: 50, Size: 300},
				{Class: "ingest", Rate: eventsPerSec(0.5*headroom*linkRate, ingestSize, ingestEntropy), Size: ingestSize, Entropy: ingestEntropy},
				{Class: "replication", Rate: eventsPerSec(0.3*headroom*linkRate, bulkSize, bulkEntropy), Size: bulkSize, Entropy: bulkEntropy}}},
			reportStep},
		{blast.Scenario{Name: "outage-30s", Link: linkAt(20 * linkemu.Mbit), Duration: 80 * time.Second, Drain: 60 * time.Second,
			Schedule: linkemu.Schedule{
				{At: 20 * time.Second, Settings: linkemu.Settings{Upstream: linkAt(20 * linkemu.Mbit).Upstream, Downstream: linkAt(20 * linkemu.Mbit).Downstream, Outage: linkemu.OutageBlackhole}},
				{At: 50 * time.Second, Settings: linkAt(20 * linkemu.Mbit)}},
			Loads: []blast.Load{{Class: "ingest", Rate: eventsPerSec(0.5*headroom*linkRate, ingestSize, ingestEntropy), Size: ingestSize, Entropy: ingestEntropy}}},
			reportOutage},
	}
	var idleP99 float64
	for _, s := range scenarios {
		b.Run(s.sc.Name, func(b *testing.B) {
			for b.Loop() {
				s.sc.Node = nodeOptions()
				shaped := runScenario(b, s.sc, true)
				base := runScenario(b, s.sc, false)
				if s.sc.Name == "critical-idle" {
					idleP99 = shaped.P99["critical"]
				}
				if s.sc.Name == "critical-protection" {
					b.ReportMetric(shaped.P99["critical"]/idleP99, "critical-p99/idle")
					b.ReportMetric(base.P99["critical"]/idleP99, "base-critical-p99/idle")
					b.ReportMetric(shaped.P99Steady["critical"]/idleP99, "critical-steady-p99/idle")
					b.ReportMetric(base.P99Steady["critical"]/idleP99, "base-critical-steady-p99/idle")
				}
				s.report(b, shaped, base)
				checkExactlyOnce(b, shaped)
				checkExactlyOnce(b, base)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

func runScenario(b *testing.B, sc blast.Scenario, shaped bool) *blast.Outcome {
	b.Helper()
	mode := map[bool]string{true: "shaped", false: "unshaped"}[shaped]
	m := map[bool]blast.Mode{true: blast.ModeSluice, false: blast.ModeUnshaped}[shaped]
	ctx, cancel := context.WithTimeout(context.Background(), sc.Duration+sc.Drain+2*time.Minute)
	defer cancel()
	dir := os.Getenv("SLUICE_BENCH_OUT")
	if dir != "" {
		// The node's log (level changes with their signals) beside the
		// timeline: a window's signals are sampled at its end and miss
		// what raised the level between two samples.
		os.MkdirAll(dir, 0o755)
		f, err := os.Create(filepath.Join(dir, sc.Name+"-"+mode+".log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		sc.Node.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	out, err := sc.Run(ctx, b.TempDir(), m, func(w blast.Window) {
		fmt.Fprintf(os.Stderr, "%s/%s %s\n", sc.Name, mode, w)
	})
	if err != nil {
		b.Fatalf("%s %s: %v", sc.Name, mode, err)
	}
	if dir != "" {
		data, _ := json.MarshalIndent(out, "", " ")
		os.WriteFile(filepath.Join(dir, sc.Name+"-"+mode+".json"), data, 0o644)
	}
	return out
}

// checkExactlyOnce checks that no event was delivered twice, and, if the
// run drained, that every acknowledged event was delivered. (A run whose
// offered load exceeds the link for its whole length may end with a
// backlog still in the spool; that is the spool's job, not a loss.)
func checkExactlyOnce(b *testing.B, o *blast.Outcome) {
	for class, acked := range o.Acknowledged {
		if o.Duplicates[class] != 0 || o.Delivered[class] > acked || (o.Drained && o.Delivered[class] != acked) {
			b.Errorf("%s shaped=%v %s: acknowledged %d, delivered %d, duplicates %d",
				o.Scenario, o.Shaped, class, acked, o.Delivered[class], o.Duplicates[class])
		}
	}
}

func reportIdle(b *testing.B, shaped, base *blast.Outcome) {
	b.ReportMetric(shaped.P99["critical"], "critical-p99-ms")
	b.ReportMetric(base.P99["critical"], "base-critical-p99-ms")
}

func reportProtection(b *testing.B, shaped, base *blast.Outcome) {
	b.ReportMetric(shaped.P99["critical"], "critical-p99-ms")
	b.ReportMetric(base.P99["critical"], "base-critical-p99-ms")
}

// reportUtilization reports goodput per 1 s window against capacity ×
// headroom once converged (from 15 s on), and the highest class rate
// against its ceiling.
func reportUtilization(b *testing.B, shaped, base *blast.Outcome) {
	target := headroom * linkRate
	for _, o := range []*blast.Outcome{shaped, base} {
		worst, over := 0.0, 0.0
		for _, w := range o.Windows {
			if w.T < 15 || w.T > 60 {
				continue
			}
			var wire uint64
			for _, c := range w.Classes {
				wire += c.WireBytes
			}
			dev := (float64(wire) - target) / target
			if abs(dev) > abs(worst) {
				worst = dev
			}
			over = max(over, float64(wire)/linkRate) // ceilings are 100% of the link for ingest
		}
		prefix := map[bool]string{true: "", false: "base-"}[o.Shaped]
		b.ReportMetric(100*worst, prefix+"worst-window-%-off-target")
		b.ReportMetric(100*over, prefix+"peak-%-of-ceiling")
	}
}

func reportStep(b *testing.B, shaped, base *blast.Outcome) {
	var degraded uint64
	for _, w := range shaped.Windows {
		if w.Level >= 1 {
			degraded += w.Classes["ingest"].Degraded
		}
	}
	// Every batch says the level it was cut at; replication is deferred
	// from level 1, so none of its batches may carry a level ≥ 1.
	var repl uint64
	for lv, n := range shaped.BatchesAtLevel["replication"] {
		if lv >= 1 {
			repl += n
		}
	}
	b.ReportMetric(float64(repl), "replication-batches-cut-while-deferred")
	b.ReportMetric(float64(degraded), "ingest-degraded-batches")
	b.ReportMetric(converge(shaped.Windows, 20, func(w blast.Window) bool { return w.Level >= 1 && w.Target <= 5*mbit }), "s-to-converge-down")
	b.ReportMetric(converge(shaped.Windows, 50, func(w blast.Window) bool { return w.Target >= 15*mbit }), "s-to-converge-up")
	b.ReportMetric(converge(shaped.Windows, 50, func(w blast.Window) bool { return w.Level == 0 }), "s-to-level-0")
	last := shaped.Windows[len(shaped.Windows)-1]
	b.ReportMetric(float64(last.Classes["replication"].Backlog), "replication-backlog-at-end")
}

// converge returns the seconds after at until cond first holds, or -1.
func converge(ws []blast.Window, at float64, cond func(blast.Window) bool) float64 {
	for _, w := range ws {
		if w.T > at && cond(w) {
			return w.T - at
		}
	}
	return -1
}

// reportOutage reports publish attempts per second during the outage
// against the mean before it.
func reportOutage(b *testing.B, shaped, base *blast.Outcome) {
	for _, o := range []*blast.Outcome{shaped, base} {
		var before, n float64
		peak := 0.0
		for _, w := range o.Windows {
			switch { // whole windows only: the outage is (20 s, 50 s]
			case w.T > 5.5 && w.T < 19.5:
				before += float64(w.Attempts)
				n++
			case w.T > 20.5 && w.T < 50.5:
				peak = max(peak, float64(w.Attempts))
			}
		}
		prefix := map[bool]string{true: "", false: "base-"}[o.Shaped]
		b.ReportMetric(before/n, prefix+"attempts/s-before")
		b.ReportMetric(peak, prefix+"peak-attempts/s-outage")
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

var _ = strings.TrimSpace
