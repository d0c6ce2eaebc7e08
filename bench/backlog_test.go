package bench

import (
	"context"
	"fmt"
	"github.com/sluicehq/sluice/internal/blast"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
)

// BenchmarkBacklogDrain spools SLUICE_BACKLOG_GB gigabytes (default: skip)
// of events while the upstream is away, then starts it and measures the
// drain: rate (whole, and over its second and last tenth), this process's RSS (current and peak), and the spool's disk
// use before and after. It also drains a 100 MB backlog first, so the two
// drain rates compare in one run. Run it with -benchtime 1x; it needs about
// 1.2 × the backlog in free disk under TMPDIR. SLUICE_BACKLOG_COLD=1 drops
// the page cache (Linux, root) before each drain, as after a reboot or
// when the backlog is larger than memory: the drain then reads the spool
// from the disk.
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
		b.ReportMetric(small.steady, "events/s-100MB-steady")
		b.ReportMetric(big.steady, "events/s-backlog-steady")
		b.ReportMetric(big.steady/small.steady, "steady-rate-ratio")
		b.ReportMetric(float64(big.diskRead)/(1<<30), "GB-read-backlog")
		b.ReportMetric(big.early, "events/s-backlog-2nd-tenth")
		b.ReportMetric(big.late, "events/s-backlog-last-tenth")
		b.ReportMetric(big.late/big.early, "last/2nd-tenth")
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
	steady              float64 // drain rate after the first tenth of the events
	early, late         float64 // drain rate over the second and the last tenth of the events
	full, peak          Mem     // after spooling; highest RSS sample while draining
	diskFull, diskAfter int64
	diskRead            int64 // bytes this process read from storage while draining
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

	if os.Getenv("SLUICE_BACKLOG_COLD") == "1" {
		syscall.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
			b.Fatalf("SLUICE_BACKLOG_COLD: %v", err)
		}
	}
	read0 := procIO("read_bytes")
	srv, err := blast.StartServerAt(dir+"/nats", port)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	var start time.Time
	var marks []time.Time // marks[k]: when k tenths of the events were acknowledged (k ≥ 1)
	for {
		st := n.Stats().Classes["ingest"]
		if start.IsZero() && st.Acked > 0 {
			start = time.Now() // the upstream is reachable and the stream exists
		}
		for len(marks) <= 10 && st.Acked >= count*uint64(len(marks))/10 {
			marks = append(marks, time.Now())
		}
		if m := ReadMem(); m.RSS > res.peak.RSS {
			res.peak = m
		}
		if st.Acked >= count {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	drained := time.Since(start)
	res.diskRead = procIO("read_bytes") - read0
	res.rate = float64(count) / drained.Seconds()
	// The whole-drain rate includes the first tenth: the connection, the
	// stream's creation and the estimator's ramp from its initial guess, a
	// fixed cost of seconds that dominates a small backlog. The steady rate
	// leaves it out. The second tenth against the last shows whether
	// draining slows as the spool empties (or as the stream fills).
	tenth := float64(count) / 10
	res.steady = 9 * tenth / marks[10].Sub(marks[1]).Seconds()
	res.early = tenth / marks[2].Sub(marks[1]).Seconds()
	res.late = tenth / marks[10].Sub(marks[9]).Seconds()
	at := make([]time.Duration, 10)
	for k, m := range marks[1:] {
		at[k] = m.Sub(start).Round(time.Millisecond)
	}
	b.Logf("tenths acknowledged at %v from the first ack", at)
	// Drained segments are removed after their last ack: wait for the disk
	// use to settle (the same for 1 s, at most 10 s).
	res.diskAfter = DiskUsage(dir + "/spool")
	for same, deadline := 0, time.Now().Add(10*time.Second); same < 5 && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		d := DiskUsage(dir + "/spool")
		if d == res.diskAfter {
			same++
		} else {
			same = 0
		}
		res.diskAfter = d
	}
	b.Logf("drained in %v: %.0f events/s (%.0f after the first tenth; second tenth %.0f, last tenth %.0f), RSS peak while draining %d MB (anon %d, file %d), %.2f GB read from disk, spool after %.1f MB",
		drained.Round(time.Millisecond), res.rate, res.steady, res.early, res.late, res.peak.RSS>>20, res.peak.Anon>>20, res.peak.File>>20, float64(res.diskRead)/(1<<30), float64(res.diskAfter)/(1<<20))
	return res
}

// procIO is the field key of /proc/self/io (such as read_bytes), 0 where
// there is none.
func procIO(key string) int64 {
	b, _ := os.ReadFile("/proc/self/io")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
