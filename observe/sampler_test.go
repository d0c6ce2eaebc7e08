package observe

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/priority"
)

// TestSamplerSteps drives a sampler over fixed instants with a fake node
// whose counters grow at known rates, and checks the derived status.
func TestSamplerSteps(t *testing.T) {
	f := newFakeNode()
	t0 := time.Now()
	s, err := newSamplerAt(f, SamplerOptions{Name: "edge-1", Interval: time.Second, Window: 3 * time.Second, History: 10 * time.Second}, t0)
	if err != nil {
		t.Fatal(err)
	}
	first := s.Status()
	if first.WindowSeconds != 0 || len(first.Classes) != 4 || len(first.History) != 1 {
		t.Fatalf("first status: window %v, %d classes, %d points", first.WindowSeconds, len(first.Classes), len(first.History))
	}
	for _, c := range first.Classes {
		if c.RateBytesPerSecond != 0 || c.InEventsPerSecond != 0 {
			t.Errorf("first status: class %s has rates before a second sample", c.Name)
		}
	}

	steps := []struct {
		wirePerSec, eventsPerSec uint64 // critical's growth over the step
		level                    int
		wantRate                 float64 // critical's wire bytes/s over the window
		wantWindow               float64
	}{
		{wirePerSec: 1000, eventsPerSec: 10, wantRate: 1000, wantWindow: 1},
		{wirePerSec: 1000, eventsPerSec: 10, wantRate: 1000, wantWindow: 2},
		{wirePerSec: 4000, eventsPerSec: 10, level: 1, wantRate: 2000, wantWindow: 3},
		{wirePerSec: 4000, eventsPerSec: 10, level: 2, wantRate: 3000, wantWindow: 3},
		{wirePerSec: 0, eventsPerSec: 0, wantRate: 8000.0 / 3, wantWindow: 3},
	}
	for i, st := range steps {
		f.add("critical", func(c *aggregator.ClassStats) {
			c.WireBytes += st.wirePerSec
			c.RawBytes += 10 * st.wirePerSec
			c.Ingested += st.eventsPerSec
			c.Batches++
			c.Published += st.eventsPerSec
			c.Expired++
			c.Dropped["drop_oldest"] += 2
			c.TooLarge++
		})
		f.set(func(s *aggregator.Stats) { s.Link.Level = st.level })
		now := t0.Add(time.Duration(i+1) * time.Second)
		s.sampleAt(now)
		got := s.Status()
		crit := got.Classes[0]
		if crit.Name != "critical" {
			t.Fatalf("step %d: first class %q, want critical (the node's order)", i, crit.Name)
		}
		if math.Abs(crit.RateBytesPerSecond-st.wantRate) > 1e-6 || got.WindowSeconds != st.wantWindow {
			t.Errorf("step %d: rate %v over %vs, want %v over %vs", i, crit.RateBytesPerSecond, got.WindowSeconds, st.wantRate, st.wantWindow)
		}
		if got.Link.RateBytesPerSecond != crit.RateBytesPerSecond {
			t.Errorf("step %d: link rate %v, want the only sending class's %v", i, got.Link.RateBytesPerSecond, crit.RateBytesPerSecond)
		}
		if p := got.History[len(got.History)-1]; p.UnixMilli != now.UnixMilli() || p.Level != st.level || p.Rate != float64(st.wirePerSec) {
			t.Errorf("step %d: last point %+v, want t=%d level %d rate %d", i, p, now.UnixMilli(), st.level, st.wirePerSec)
		}
		n := uint64(i + 1)
		if crit.Dropped != 4*n || crit.DroppedByReason["expired"] != n || crit.DroppedByReason["too_large"] != n || crit.DroppedByReason["drop_oldest"] != 2*n {
			t.Errorf("step %d: dropped %d %v, want %d", i, crit.Dropped, crit.DroppedByReason, 4*n)
		}
		if crit.CompressionRatio != 10 || crit.EventsPerBatch == 0 {
			t.Errorf("step %d: compression %v, events per batch %v", i, crit.CompressionRatio, crit.EventsPerBatch)
		}
		if got.Classes[1].RateBytesPerSecond != 0 {
			t.Errorf("step %d: idle class ingest has rate %v", i, got.Classes[1].RateBytesPerSecond)
		}
	}

	// Out of order: ignored.
	before := s.Status()
	s.sampleAt(t0)
	if after := s.Status(); !after.Time.Equal(before.Time) || len(after.History) != len(before.History) {
		t.Errorf("a sample older than the latest changed the status")
	}

	// The history is bounded by History: 10 s at 1 s is 11 points.
	for i := range 30 {
		s.sampleAt(t0.Add(time.Duration(len(steps)+1+i) * time.Second))
	}
	got := s.Status()
	if len(got.History) != 11 {
		t.Errorf("%d history points, want 11", len(got.History))
	}
	if span := got.History[len(got.History)-1].UnixMilli - got.History[0].UnixMilli; span != 10_000 {
		t.Errorf("history spans %d ms, want 10000", span)
	}
	s.mu.Lock()
	withHists := 0
	for _, sm := range s.samples {
		if sm.hists != nil {
			withHists++
		}
	}
	s.mu.Unlock()
	if withHists != 4 { // the window's base and the three after it
		t.Errorf("%d samples keep histograms, want 4", withHists)
	}
	if got.Node != "edge-1" || got.Schema != StatusSchema || got.IntervalSeconds != 1 || !got.Accepting {
		t.Errorf("status header %q schema %d interval %v accepting %v", got.Node, got.Schema, got.IntervalSeconds, got.Accepting)
	}
}

// TestStatusJSON pins the wire names of the status document that the page
// and other clients read.
func TestStatusJSON(t *testing.T) {
	s, err := NewSampler(newFakeNode(), SamplerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.sampleAt(time.Now().Add(time.Second))
	var doc map[string]any
	if err := json.Unmarshal(s.statusJSON(), &doc); err != nil {
		t.Fatal(err)
	}
	has := func(m map[string]any, where string, keys ...string) {
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %q in %v", where, k, m)
			}
		}
	}
	has(doc, "status", "schema", "time", "interval_seconds", "window_seconds", "accepting", "link", "spool", "classes", "history")
	has(doc["link"].(map[string]any), "link", "level", "transitions", "capacity_bytes_per_second", "target_bytes_per_second",
		"pacing_bytes_per_second", "delivery_bytes_per_second", "rate_bytes_per_second", "min_rtt_seconds", "srtt_seconds", "cpu_delay_seconds", "sched_p99_seconds",
		"error_rate", "in_flight_bytes", "estimator_state", "signals")
	has(doc["link"].(map[string]any)["signals"].(map[string]any), "signals", "inflation", "errors", "demand", "queue", "time_to_full")
	cls := doc["classes"].([]any)
	if len(cls) != 4 {
		t.Fatalf("%d classes", len(cls))
	}
	has(cls[0].(map[string]any), "class", "name", "priority", "critical", "action", "deferred",
		"rate_bytes_per_second", "guaranteed_bytes_per_second", "effective_guaranteed_bytes_per_second", "ceiling_bytes_per_second",
		"effective_ceiling_bytes_per_second", "ceiling_source", "share",
		"in_events_per_second", "in_bytes_per_second", "acked_events_per_second", "retries_per_second", "errors_per_second",
		"backlog_events", "backlog_bytes", "spool_bytes", "oldest_age_seconds", "in_flight_batches",
		"dropped", "dropped_by_reason", "refused", "compression_ratio", "events_per_batch",
		"compression", "compression_auto", "batch_target_bytes", "bottleneck", "compression_busy", "dictionary", "latency")
	has(cls[0].(map[string]any)["dictionary"].(map[string]any), "dictionary", "mode", "id", "ratio", "plain_ratio",
		"batches", "trainings", "adoptions", "publish_errors")
	has(cls[0].(map[string]any)["latency"].(map[string]any), "latency", "count", "p50_seconds", "p95_seconds", "p99_seconds")
	hist := doc["history"].([]any)
	has(hist[len(hist)-1].(map[string]any), "history point", "t", "level", "rate", "capacity", "target", "srtt", "backlog")
}

// TestSamplerRun checks Run's schedule and ownership on a fake clock.
func TestSamplerRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNode()
		s, err := NewSampler(f, SamplerOptions{Interval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		if err := s.Run(ctx); !errors.Is(err, ErrRunning) {
			t.Errorf("second Run = %v, want ErrRunning", err)
		}
		time.Sleep(5*time.Second + time.Millisecond)
		synctest.Wait()
		f.mu.Lock()
		calls := f.calls
		f.mu.Unlock()
		if calls != 6 {
			t.Errorf("%d samples after 5 intervals, want 6 (NewSampler's and one per interval)", calls)
		}
		if n := len(s.Status().History); n != 6 {
			t.Errorf("%d history points, want 6", n)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
		// Run may be called again once it returned.
		ctx2, cancel2 := context.WithCancel(t.Context())
		cancel2()
		if err := s.Run(ctx2); !errors.Is(err, context.Canceled) {
			t.Errorf("Run after Run = %v, want context.Canceled", err)
		}
	})
}

func TestSamplerOptions(t *testing.T) {
	for _, tt := range []struct {
		opts SamplerOptions
		ok   bool
	}{
		{SamplerOptions{}, true},
		{SamplerOptions{Interval: 100 * time.Millisecond}, true},
		{SamplerOptions{Interval: time.Millisecond}, false},
		{SamplerOptions{Interval: 2 * time.Second, Window: time.Second}, false},
		{SamplerOptions{Window: time.Minute, History: 30 * time.Second}, false},
		{SamplerOptions{History: 48 * time.Hour}, false},
		{SamplerOptions{Interval: 10 * time.Second}, true}, // Window and History follow
	} {
		_, err := NewSampler(newFakeNode(), tt.opts)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidOptions)) {
			t.Errorf("NewSampler(%+v) = %v, want ok %v", tt.opts, err, tt.ok)
		}
	}
	if _, err := NewSampler(nil, SamplerOptions{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewSampler(nil) = %v, want ErrInvalidOptions", err)
	}
}

func TestBacklogBytes(t *testing.T) {
	for _, tt := range []struct {
		cs   aggregator.ClassStats
		want int64
	}{
		{aggregator.ClassStats{}, 0},
		{aggregator.ClassStats{Depth: 0, Ingested: 10, IngestedBytes: 1000, SpoolBytes: 1 << 20}, 0},
		{aggregator.ClassStats{Depth: 5, Ingested: 10, IngestedBytes: 1000, SpoolBytes: 1 << 20}, 500},
		{aggregator.ClassStats{Depth: 5, Ingested: 10, IngestedBytes: 1000, SpoolBytes: 300}, 300}, // bounded by the disk
		{aggregator.ClassStats{Depth: 5, SpoolBytes: 4096}, 4096},                                  // nothing ingested since start
	} {
		if got := backlogBytes(tt.cs); got != tt.want {
			t.Errorf("backlogBytes(%+v) = %d, want %d", tt.cs, got, tt.want)
		}
	}
}

// TestStatusShares: each lane says what the lanes enforce now: the
// guarantee and the ceiling in force (the class's own, or the link's rate)
// and how the class gets capacity.
func TestStatusShares(t *testing.T) {
	const link = 1_000_000
	f := newFakeNode()
	f.shapes = []aggregator.ClassShape{
		{Class: "critical", Critical: true, Ceil: priority.Rate{BytesPerSec: 400_000}, Guaranteed: priority.Rate{BytesPerSec: 100_000},
			LinkRate: link, CeilNow: priority.Rate{BytesPerSec: 400_000}},
		{Class: "ingest", Rate: priority.Rate{BytesPerSec: 350_000}, Ceil: priority.Rate{BytesPerSec: 2 * link}, Guaranteed: priority.Rate{BytesPerSec: 300_000},
			LinkRate: link, CeilNow: priority.Rate{BytesPerSec: link}},
		{Class: "replication", Action: priority.ActionDefer, Deferred: true, LinkRate: link},
		{Class: "backfill", Action: priority.ActionThrottle, LinkRate: link, CeilNow: priority.Rate{BytesPerSec: link}},
	}
	s, err := NewSampler(f, SamplerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type lane struct {
		share, source       string
		guaranteed, ceiling int64
	}
	want := map[string]lane{
		"critical":    {"strict", "class", 100_000, 400_000},
		"ingest":      {"guaranteed", "link", 300_000, link},
		"replication": {"deferred", "", 0, 0},
		"backfill":    {"leftover", "link", 0, link},
	}
	for _, c := range s.Status().Classes {
		got := lane{c.Share, c.CeilingSource, c.EffectiveGuaranteedBytesPerSecond, c.EffectiveCeilingBytesPerSecond}
		if got != want[c.Name] {
			t.Errorf("%s: %+v, want %+v", c.Name, got, want[c.Name])
		}
	}
	// A class without a guarantee in force is served by priority, and an
	// unshaped node has nothing in force at all.
	f.shapes = []aggregator.ClassShape{{Class: "ingest", LinkRate: link, CeilNow: priority.Rate{BytesPerSec: link}}, {Class: "backfill", Unshaped: true}}
	s.sampleAt(time.Now().Add(time.Second))
	for _, c := range s.Status().Classes {
		if w := map[string]string{"ingest": "priority", "backfill": "unshaped"}[c.Name]; c.Share != w {
			t.Errorf("%s: share %q, want %q", c.Name, c.Share, w)
		}
	}
}
