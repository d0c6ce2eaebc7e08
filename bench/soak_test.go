package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sluicehq/sluice/internal/blast"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSoak runs the HTTP ingest path of BenchmarkHTTPIngest (fsync always,
// default classes, link ceiling 1 GiB/s, SLUICE_BENCH_CLIENTS clients of
// 100 events a request) for SLUICE_SOAK (a duration, e.g. 10m; unset:
// skipped) at 80% of the end-to-end maximum it measures first (RunSoak:
// an unthrottled run of min(20s, SLUICE_SOAK/5), then a ramp of steps of
// min(15s, SLUICE_SOAK/10)), or at SLUICE_SOAK_RATE events/s.
// SLUICE_SOAK_MODE picks the HTTP mode (default segment-batch, which also
// keeps the handler's dedup window full). It samples every 10s and fails
// unless RSS, goroutines, request p99 and the spool depth of the last
// third stay within bounds of the second third (see judgeSoak), and unless
// every event answered 200 is in the stream. SLUICE_BENCH_OUT=DIR writes
// the samples to DIR/soak.json. Needs -timeout above the soak's length:
//
//	SLUICE_SOAK=10m go test -count=1 -timeout 30m -run '^TestSoak$' -v ./bench
func TestSoak(t *testing.T) {
	v := os.Getenv("SLUICE_SOAK")
	if v == "" {
		t.Skip("set SLUICE_SOAK to a duration to run (e.g. 10m)")
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("SLUICE_SOAK=%q: want a positive duration such as 10m", v)
	}
	cfg := SoakConfig{
		Mode: os.Getenv("SLUICE_SOAK_MODE"), Clients: httpClients(), PerRequest: 100,
		Duration: d, Node: httpBenchNode(),
	}
	if v := os.Getenv("SLUICE_SOAK_RATE"); v != "" {
		if cfg.Rate, err = strconv.ParseFloat(v, 64); err != nil || !(cfg.Rate > 0) {
			t.Fatalf("SLUICE_SOAK_RATE=%q: want events/s", v)
		}
	}
	budget := d + min(20*time.Second, d/5) + 18*min(15*time.Second, d/10) + d/2 + 2*time.Minute
	if dl, ok := t.Deadline(); ok && time.Until(dl) < budget {
		t.Fatalf("SLUICE_SOAK=%v needs up to %v; run with -timeout %v", d, budget, (budget + 5*time.Minute).Round(time.Minute))
	}
	events, source, err := segmentEvents(10_000)
	if err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	cfg.Node.Logger = slog.New(slog.NewTextHandler(&log, nil))

	syscall.Sync()
	dir := t.TempDir()
	srv, err := blast.StartServer(dir + "/nats")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	t.Logf("soak %v, %d clients, events cycled from %s", d, cfg.Clients, source)
	t.Log(soakHeader)
	res, err := RunSoak(ctx, srv, dir+"/spool", events, cfg, func(s SoakSample) { t.Log(soakRow(s)) })
	t.Log(soakReport(res))
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if strings.Contains(line, "level changed") {
			t.Log("node: ", line)
		}
	}
	if out := os.Getenv("SLUICE_BENCH_OUT"); out != "" {
		data, jerr := json.MarshalIndent(res, "", " ")
		if jerr == nil {
			os.MkdirAll(out, 0o755)
			jerr = os.WriteFile(filepath.Join(out, "soak.json"), data, 0o644)
		}
		if jerr != nil {
			t.Errorf("SLUICE_BENCH_OUT: %v", jerr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Verdict.Failures {
		t.Errorf("not flat: %s", f)
	}
}

const soakHeader = "     t   events/s   p50 ms   p99 ms   max ms   rss MiB  anon MiB  heap MiB  gorout  nats MiB    depth  lvl        acked   dedup   cpu  nats cpu"

func soakRow(s SoakSample) string {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return fmt.Sprintf("%6.0fs %10.0f %8.1f %8.1f %8.1f %9.1f %9.1f %9.1f %7d %9.1f %8d %4d %12d %7d %5.2f %9.2f",
		s.At.Seconds(), s.Rate, ms(s.P50), ms(s.P99), ms(s.Max), mib(s.RSS), mib(s.RSSAnon), mib(int64(s.HeapInuse)), s.Goroutines,
		mib(s.NATSRSS), s.Depth, s.Level, s.Acked, s.Dedup, s.CPU, s.NATSCPU)
}

// soakReport is the samples' table and the verdict's figures.
func soakReport(r SoakResult) string {
	var b strings.Builder
	if r.Calibrated > 0 {
		fmt.Fprintf(&b, "intake maximum: %.0f events/s answered unthrottled (%s)\n", r.Calibrated, r.Mode)
		b.WriteString("ramp: offered → answered, acknowledged events/s; spool depth at the step's end\n")
		for _, st := range r.Steps {
			kept := "kept"
			if !st.Kept {
				kept = "NOT kept"
			}
			fmt.Fprintf(&b, "  %8.0f → %8.0f %8.0f  depth %9d  %s\n", st.Offered, st.Answered, st.Acked, st.Depth, kept)
		}
		fmt.Fprintf(&b, "end-to-end maximum: %.0f events/s; the ramp's backlog shipped %v after its last step\n", r.EndToEnd, r.CalibDrain.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "paced: %.0f events/s offered for %v, %d clients × %d events a request\n", r.Rate, r.Duration, r.Clients, r.PerRequest)
	b.WriteString(soakHeader + "\n")
	var sent uint64
	for _, s := range r.Samples {
		b.WriteString(soakRow(s) + "\n")
		sent += s.Events
	}
	if n := len(r.Samples); n > 0 {
		fmt.Fprintf(&b, "whole run: %.0f events/s answered, request p99 %v max %v; drained %v after the run\n",
			float64(sent)/r.Samples[n-1].At.Seconds(), r.P99.Round(100*time.Microsecond), r.Max.Round(100*time.Microsecond), r.Drain.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "stream: %d events in %d batches (%d with fields dropped) for %d answered and %d acked; %d level transitions\n",
		r.Stored, r.Batches, r.Degraded, r.Accepted, r.Acked, r.Transitions)
	v := r.Verdict
	fmt.Fprintf(&b, "verdict (second third → last third): RSS %.1f → %.1f MiB, goroutines %d → %d, p99 %v → %v, spool depth max %d → %d at the end (floor %d); NATS RSS %.1f → %.1f MiB (not judged): ",
		mib(v.MidRSS), mib(v.LastRSS), v.MidGoroutines, v.LastGoroutines, v.MidP99.Round(100*time.Microsecond), v.LastP99.Round(100*time.Microsecond),
		v.MidDepth, v.EndDepth, v.DepthFloor, mib(v.MidNATSRSS), mib(v.LastNATSRSS))
	switch {
	case len(r.Samples) == 0 || r.Acked == 0:
		b.WriteString("none")
	case v.Flat():
		b.WriteString("flat")
	default:
		b.WriteString("NOT flat: " + strings.Join(v.Failures, "; "))
	}
	return b.String()
}

// TestSoakVerdict checks judgeSoak's bounds on nine synthetic samples, the
// first three warm-up.
func TestSoakVerdict(t *testing.T) {
	const mb = 1 << 20
	flat := func() []SoakSample {
		s := make([]SoakSample, 9)
		for i := range s {
			s[i] = SoakSample{RSS: 400 * mb, Goroutines: 120, Depth: 30_000}
			for j := range 1000 {
				s[i].lat.observe(time.Duration(5+j%10) * time.Millisecond) // p99 ≈ 14 ms
			}
		}
		s[0].RSS, s[0].Goroutines, s[0].Depth = 100*mb, 300, 900_000 // warm-up counts for nothing
		return s
	}
	slow := func(s *SoakSample, d time.Duration) {
		for range 100 {
			s.lat.observe(d)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(s []SoakSample)
		fail   string // substring of the failure; "" for flat
	}{
		{"flat", func([]SoakSample) {}, ""},
		{"rss +9%", func(s []SoakSample) { s[8].RSS = 436 * mb }, ""},
		{"rss +11%", func(s []SoakSample) { s[8].RSS = 444 * mb }, "RSS grew"},
		{"small rss +15 MiB", func(s []SoakSample) {
			for i := range s {
				s[i].RSS /= 10
			}
			s[7].RSS += 15 * mb
		}, ""},
		{"small rss +17 MiB", func(s []SoakSample) {
			for i := range s {
				s[i].RSS /= 10
			}
			s[7].RSS += 17 * mb
		}, "RSS grew"},
		{"goroutines +10", func(s []SoakSample) { s[6].Goroutines += 10 }, ""},
		{"goroutines +11", func(s []SoakSample) { s[6].Goroutines += 11 }, "goroutines grew"},
		{"p99 +20 ms", func(s []SoakSample) { slow(&s[8], 33*time.Millisecond) }, ""},
		{"p99 +40 ms", func(s []SoakSample) { slow(&s[8], 55*time.Millisecond) }, "p99 rose"},
		{"p99 1.4× of 100 ms", func(s []SoakSample) {
			for i := 3; i < 6; i++ {
				slow(&s[i], 100*time.Millisecond)
			}
			for i := 6; i < 9; i++ {
				slow(&s[i], 140*time.Millisecond)
			}
		}, ""},
		{"p99 1.6× of 100 ms", func(s []SoakSample) {
			for i := 3; i < 6; i++ {
				slow(&s[i], 100*time.Millisecond)
			}
			for i := 6; i < 9; i++ {
				slow(&s[i], 160*time.Millisecond)
			}
		}, "p99 rose"},
		{"depth 1.5×", func(s []SoakSample) { s[8].Depth = 45_000 }, ""},
		{"depth 2×", func(s []SoakSample) { s[8].Depth = 60_000 }, "falls behind"},
		{"depth under the floor", func(s []SoakSample) {
			for i := range s {
				s[i].Depth = 0
			}
			s[8].Depth = 10_000
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := flat()
			tc.change(s)
			v := judgeSoak(s, 12_000)
			got := strings.Join(v.Failures, "; ")
			if tc.fail == "" && got != "" || tc.fail != "" && (len(v.Failures) != 1 || !strings.Contains(got, tc.fail)) {
				t.Errorf("failures %q, want %q", got, tc.fail)
			}
		})
	}
}

// TestLatencyHist checks the histogram's quantiles against exact ones.
func TestLatencyHist(t *testing.T) {
	var h latencyHist
	if h.quantile(0.99) != 0 {
		t.Error("empty histogram: quantile not 0")
	}
	var exact []time.Duration
	for i := 1; i <= 10_000; i++ {
		d := time.Duration(i*i) * time.Microsecond / 7 // 0.14µs to 14 s
		h.observe(d)
		exact = append(exact, d)
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		want := exact[int(math.Ceil(q*float64(len(exact))))-1]
		got := h.quantile(q)
		if got < want || float64(got) > float64(want)*1.045+float64(time.Microsecond) {
			t.Errorf("q%v = %v, exact %v", q, got, want)
		}
	}
	var m latencyHist
	m.merge(&h)
	m.merge(&h)
	if m.n != 20_000 || m.max != h.max || m.quantile(0.5) != h.quantile(0.5) {
		t.Errorf("merged: n %d max %v p50 %v", m.n, m.max, m.quantile(0.5))
	}
	if rss, anon := procStatus("self", "VmRSS"), procStatus("self", "RssAnon"); rss < 1<<20 || anon <= 0 || anon > rss {
		t.Errorf("VmRSS %d, RssAnon %d", rss, anon)
	}
}
