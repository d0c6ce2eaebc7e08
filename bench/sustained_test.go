package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/blast"
)

var (
	sustainedEvents = flag.String("sustained.events", "",
		"NDJSON `file` of the events BenchmarkSustained cycles (default: the shared data's segment.events.ndjson, else generated Segment-shaped events)")
	sustainedLog = flag.String("sustained.log", "",
		"`file` the sluice process's output goes to (each run replaces it; default: one in the run's temporary directory)")
	sustainedBins = flag.String("sustained.bin", "",
		"comma-separated sluice `binaries` BenchmarkSustained runs, one sub-benchmark each, in turn (default: one built from this checkout)")
	sustainedConfig = flag.String("sustained.config", "",
		"`YAML` appended to the node's config file, e.g. 'unshaped: true' (default: none, every other key at its default)")
)

// sustainedGate is the environment variable that must be 1 for
// BenchmarkSustained to run: it takes a minute and builds a binary.
const sustainedGate = "SLUICE_BENCH_SUSTAINED"

// BenchmarkSustained is issue 13's throughput run: 500,000 events
// (SLUICE_BENCH_EVENTS), 200 a request, from 16 clients
// (SLUICE_BENCH_CLIENTS), posted as NDJSON to a `sluice run` process with
// fsync always and the default config, shipping to a fresh NATS server in
// a child process of its own. It reports events accepted and delivered per
// second, their ratio, the wire ratio, the node's peak RSS and both
// processes' CPU per event, after checking every event once in the stream.
// Runs only with SLUICE_BENCH_SUSTAINED=1; use -benchtime 1x, and -count
// with several -sustained.bin to alternate binaries (A B A B).
func BenchmarkSustained(b *testing.B) {
	if os.Getenv(sustainedGate) != "1" {
		b.Skipf("set %s=1 to run", sustainedGate)
	}
	events, source, err := sustainedWorkload()
	if err != nil {
		b.Fatal(err)
	}
	bins := strings.Split(*sustainedBins, ",")
	if *sustainedBins == "" {
		bins = []string{buildSluice(b)}
	}
	total, clients := 500_000, 16
	if n := httpEvents(); os.Getenv("SLUICE_BENCH_EVENTS") != "" {
		total = n
	}
	if n := httpClients(); os.Getenv("SLUICE_BENCH_CLIENTS") != "" {
		clients = n
	}
	for i, bin := range bins {
		b.Run(fmt.Sprintf("bin=%d", i), func(b *testing.B) {
			b.Logf("workload: %d events cycled from %d of %s, 200 a request, %d clients; binary %s", total, len(events), source, clients, bin)
			var res SustainedResult
			for b.Loop() {
				res = runSustainedOnce(b, events, SustainedConfig{Binary: bin, Events: total, Clients: clients, Log: *sustainedLog, Config: *sustainedConfig})
			}
			reportSustained(b, res)
		})
	}
}

// sustainedWorkload reads -sustained.events, or the shared data's Segment
// events, or generates 10,000 Segment-shaped events.
func sustainedWorkload() ([][]byte, string, error) {
	path := *sustainedEvents
	if path == "" {
		if dir := blast.DataDir(); dir != "" {
			path = filepath.Join(dir, "sdk_wire_from_apache", "segment.events.ndjson")
		}
	}
	if path == "" {
		return blast.Synthetic(10_000, 1), "generated Segment-shaped events", nil
	}
	evs, err := blast.ReadNDJSON(path)
	return evs, path, err
}

// buildSluice builds the sluice binary of this checkout.
func buildSluice(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "sluice")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/sluice")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func runSustainedOnce(tb testing.TB, events [][]byte, cfg SustainedConfig) SustainedResult {
	tb.Helper()
	syscall.Sync() // a quiet disk: the last run's writeback would slow this run's fsyncs
	dir := tb.TempDir()
	srv, err := blast.StartServer(dir + "/nats")
	if err != nil {
		tb.Fatal(err)
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := RunSustained(ctx, srv, dir+"/node", events, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

func reportSustained(b *testing.B, res SustainedResult) {
	const mb = 1 << 20
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	b.Logf("accepted %.0f events/s, delivered %.0f events/s (%.2f of accepted), wire ratio %.2f (%d B NDJSON in %d batches of %d B), peak RSS %.1f MB (at delivery: anon %.1f MB, file %.1f MB), cpu %.2f µs/event + nats %.2f µs/event, %.2f B written to disk per NDJSON byte; verified %d events once each, max level %d, %d batches (%d events) with fields dropped",
		res.AcceptedPerSec(), res.DeliveredPerSec(), res.DeliveredPerSec()/res.AcceptedPerSec(), res.WireRatio(),
		res.NDJSONBytes, res.Batches, res.WireBytes, float64(res.Mem.Peak)/mb, float64(res.Mem.Anon)/mb, float64(res.Mem.File)/mb,
		us(res.CPUPerEvent()), us(res.NATSCPUPerEvent()), float64(res.DiskWrites)/float64(res.NDJSONBytes), res.Events, res.MaxLevel, res.Degraded, res.DegradedEvents)
	b.ReportMetric(res.AcceptedPerSec(), "accepted-ev/s")
	b.ReportMetric(res.DeliveredPerSec(), "delivered-ev/s")
	b.ReportMetric(res.DeliveredPerSec()/res.AcceptedPerSec(), "delivered/accepted")
	b.ReportMetric(res.WireRatio(), "wire-ratio")
	b.ReportMetric(float64(res.Mem.Peak)/mb, "peak-rss-MB")
	b.ReportMetric(us(res.CPUPerEvent()), "cpu-us/ev")
	b.ReportMetric(us(res.NATSCPUPerEvent()), "nats-cpu-us/ev")
	b.ReportMetric(float64(res.DiskWrites)/float64(res.NDJSONBytes), "disk-B/ndjson-B")
	b.ReportMetric(0, "ns/op")
}

// TestSustainedSmoke runs the sustained-load harness on a few thousand
// events against a sluice binary built from this checkout, so the harness,
// its process handling and its verification stay honest in CI.
func TestSustainedSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the sluice binary")
	}
	res := runSustainedOnce(t, blast.Synthetic(1_000, 4), SustainedConfig{Binary: buildSluice(t), Events: 4_000, Clients: 4})
	if res.Events != 4_000 || res.Batches == 0 || res.WireBytes <= 0 || res.NDJSONBytes <= res.WireBytes {
		t.Fatalf("events %d, batches %d, wire %d B of %d B NDJSON", res.Events, res.Batches, res.WireBytes, res.NDJSONBytes)
	}
	if res.Mem.Peak <= 0 || res.Delivered < res.Accepted {
		t.Fatalf("peak RSS %d B, accepted in %v, delivered in %v", res.Mem.Peak, res.Accepted, res.Delivered)
	}
}
