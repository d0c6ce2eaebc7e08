package bench

import (
	"context"
	"fmt"
	"github.com/sluicehq/sluice/internal/blast"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
)

// BenchmarkBacklogDrain spools SLUICE_BACKLOG_GB gigabytes (default: skip)
// of events while the upstream is away, then starts it and measures the
// drain: rate, this process's RSS (current and peak), and the spool's disk
// use before and after. It also drains a 100 MB backlog first, so the two
// drain rates compare in one run. Run it with -benchtime 1x; it needs about
// 1.2 × the backlog in free disk under TMPDIR.
func BenchmarkBacklogDrain(b *testing.B) {
	gb, _ := strconv.ParseFloat(os.Getenv("SLUICE_BACKLOG_GB"), 64)
	if gb <= 0 {
		b.Skip("set SLUICE_BACKLOG_GB to run (e.g. 5)")
	}
	events, source, err := blast.SDKEvents(40_000)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("workload: %s", source)
	for b.Loop() {
		small := drainOnce(b, events, 100<<20)
		big := drainOnce(b, events, int64(gb*(1<<30)))
		b.ReportMetric(small.rate, "events/s-100MB")
		b.ReportMetric(big.rate, "events/s-backlog")
		b.ReportMetric(big.rate/small.rate, "drain-rate-ratio")
		b.ReportMetric(float64(big.full.RSS)/(1<<20), "MB-RSS-full")
		b.ReportMetric(float64(big.peak.RSS)/(1<<20), "MB-RSS-peak")
		b.ReportMetric(float64(big.peak.Anon)/(1<<20), "MB-anon-peak")
		b.ReportMetric(float64(big.diskFull)/(1<<30), "GB-spool-full")
		b.ReportMetric(float64(big.diskAfter)/(1<<20), "MB-spool-after")
		b.ReportMetric(0, "ns/op")
	}
}

type drainResult struct {
	rate                float64
	full, peak          Mem // after spooling; highest RSS sample while draining
	diskFull, diskAfter int64
}

func drainOnce(b *testing.B, events [][]byte, target int64) drainResult {
	dir := b.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	nc, err := Connect(fmt.Sprintf("nats://127.0.0.1:%d", port)) // nothing listens yet
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	n, err := aggregator.New(aggregator.Options{Node: "bench", Dir: dir + "/spool", Conn: nc})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()

	// Spool the backlog from 4 producers.
	var written int64
	var count uint64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := p * 100; ; i += 400 {
				mu.Lock()
				if written >= target {
					mu.Unlock()
					return
				}
				mu.Unlock()
				j := i % (len(events) - 100)
				chunk := events[j : j+100]
				if err := n.Ingest(ctx, "ingest", chunk...); err != nil {
					b.Error(err)
					return
				}
				var sz int64
				for _, ev := range chunk {
					sz += int64(len(ev))
				}
				mu.Lock()
				written += sz
				count += uint64(len(chunk))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	runtime.GC()
	res := drainResult{diskFull: DiskUsage(dir + "/spool")}
	res.full = ReadMem()
	b.Logf("backlog %.2f GB spooled (%d events), spool %.2f GB on disk, RSS %d MB (anon %d, file %d)",
		float64(written)/(1<<30), count, float64(res.diskFull)/(1<<30), res.full.RSS>>20, res.full.Anon>>20, res.full.File>>20)

	srv, err := blast.StartServerAt(dir+"/nats", port)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	var start time.Time
	for {
		st := n.Stats().Classes["ingest"]
		if start.IsZero() && st.Acked > 0 {
			start = time.Now() // the upstream is reachable and the stream exists
		}
		if m := ReadMem(); m.RSS > res.peak.RSS {
			res.peak = m
		}
		if st.Acked >= count {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.rate = float64(count) / time.Since(start).Seconds()
	res.diskAfter = DiskUsage(dir + "/spool")
	b.Logf("drained in %v: %.0f events/s, RSS peak while draining %d MB (anon %d, file %d), spool after %.1f MB",
		time.Since(start).Round(time.Millisecond), res.rate, res.peak.RSS>>20, res.peak.Anon>>20, res.peak.File>>20, float64(res.diskAfter)/(1<<20))
	return res
}
