package blast

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/linkemu"
)

func TestParseEvent(t *testing.T) {
	ev := newEventGen(Load{Class: "ingest", Size: 300}).next(1, 1234567)[0]
	ts, id := parseEvent(ev)
	if ts != 1234567 || id != "ingest-0" {
		t.Fatalf("parseEvent(%s) = %d, %q", ev, ts, id)
	}
	if ts, id := parseEvent([]byte(`{"x":1}`)); ts != 0 || id != `{"x":1}` {
		t.Fatalf("foreign event: %d, %q", ts, id)
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for q, want := range map[float64]float64{0.5: 5, 0.9: 9, 0.99: 10, 1: 10} {
		if got := Quantile(xs, q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing")
	}
}

// TestScenarioSmoke runs a 3 s scenario through the harness, shaped and
// unshaped, to keep the benchmark's machinery honest in CI: every
// acknowledged event is delivered once and latency is measured.
func TestScenarioSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a link emulator and a NATS server for ~10 s")
	}
	sc := Scenario{
		// Drain is the hang guard: the run ends as soon as it has drained,
		// and how soon is the suite's figure, not this test's.
		Name: "smoke", Link: linkemu.Symmetric(linkemu.Shape{Bandwidth: 20 * linkemu.Mbit, Latency: SuiteLatency}), Duration: 3 * time.Second, Drain: 2 * time.Minute,
		Loads: []Load{{Class: "critical", Rate: 100, Size: 300}, {Class: "ingest", Rate: 500, Size: 600, Entropy: 0.3}},
		Node:  SuiteNode(),
		// A burner's child process started and stopped within the run.
		Burn: Burn{Threads: 1, From: time.Second, To: 2 * time.Second},
	}
	for _, mode := range Modes {
		out, err := sc.Run(context.Background(), t.TempDir(), mode, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !out.Drained {
			t.Errorf("%s: not drained: acknowledged %v, delivered %v", mode, out.Acknowledged, out.Delivered)
		}
		for class, n := range out.Acknowledged {
			if n == 0 || out.Delivered[class] != n || out.Duplicates[class] != 0 {
				t.Errorf("%s %s: acknowledged %d, delivered %d, duplicates %d", mode, class, n, out.Delivered[class], out.Duplicates[class])
			}
			// The consumer reads the stream beside the link: an event
			// crosses only its upstream half, 20 ms one way, so no latency
			// measured end to end can be below that (a floor no load can
			// break: it checks the measurement, not the speed; how high
			// the p99 is belongs to the suite's gated runs).
			if p := out.P99[class]; !(p >= 20) {
				t.Errorf("%s %s: p99 %.1f ms over a link of 20 ms each way", mode, class, p)
			}
		}
	}
}
