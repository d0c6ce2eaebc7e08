package bench

import (
	"context"
	"github.com/sluicehq/sluice/internal/blast"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
)

func TestMain(m *testing.M) {
	if blast.ServeIfChild() {
		return
	}
	os.Exit(m.Run())
}

// benchEvents is the number of events one foundation run sends; override
// with SLUICE_BENCH_EVENTS.
func benchEvents() int {
	if v, err := strconv.Atoi(os.Getenv("SLUICE_BENCH_EVENTS")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

// BenchmarkFoundation compares, in one run and on the same events, durable
// end-to-end throughput through sluice's Go API (fsync always) with a
// naive publisher that sends one JetStream message per event. Each
// sub-benchmark runs the whole workload once per iteration; use
// -benchtime 1x.
func BenchmarkFoundation(b *testing.B) {
	total := benchEvents()
	events, source, err := blast.SDKEvents(40_000)
	if err != nil {
		b.Fatal(err)
	}
	var raw int
	for _, ev := range events {
		raw += len(ev)
	}
	b.Logf("workload: %d events cycling through %d from %s, mean %d bytes", total, len(events), source, raw/len(events))

	run := func(b *testing.B, f func(ctx context.Context, url, dir string) (Result, error)) {
		var res Result
		for b.Loop() {
			dir := b.TempDir()
			srv, err := blast.StartServer(dir + "/nats")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			res, err = f(ctx, srv.URL, dir+"/spool")
			cancel()
			srv.Stop()
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(res.EventsPerSec(), "events/s")
		b.ReportMetric(res.WireRatio(), "wire-ratio")
		b.ReportMetric(0, "ns/op")
		b.SetBytes(0)
	}
	b.Run("sluice", func(b *testing.B) {
		run(b, func(ctx context.Context, url, dir string) (Result, error) {
			nc, err := Connect(url)
			if err != nil {
				return Result{}, err
			}
			defer nc.Close()
			return RunSluice(ctx, nc, dir, events, total, benchProducers(), 100, aggregator.Options{})
		})
	})
	b.Run("naive", func(b *testing.B) {
		run(b, func(ctx context.Context, url, _ string) (Result, error) {
			nc, err := Connect(url)
			if err != nil {
				return Result{}, err
			}
			defer nc.Close()
			return RunNaive(ctx, nc, events, total, 256)
		})
	})
}

func benchProducers() int {
	if v, err := strconv.Atoi(os.Getenv("SLUICE_BENCH_PRODUCERS")); err == nil && v > 0 {
		return v
	}
	return 8
}
