package aggregator_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
)

// TestNodeOps checks what operations tooling reads beyond Stats: the
// latency histograms agree with Stats' quantiles and counts, Shape reports
// the configured and effective rates, and Accepting turns false when
// Shutdown begins.
func TestNodeOps(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	const ceil = 4 << 20
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) {
		o.Classes = priority.Defaults(ceil)
		o.Link.Ceil = ceil
	})
	if !n.Accepting() {
		t.Fatal("a new node does not accept")
	}
	empty := n.LatencyHistograms()
	for _, c := range []string{"critical", "ingest"} {
		ingest(t, n, c, 0, 300, 30)
	}
	deadline := guard(0)
	for st := n.Stats(); st.Classes["critical"].Acked < 300 || st.Classes["ingest"].Acked < 300; st = n.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: not acknowledged after %v: %+v", hangGuard, st.Classes)
		}
		time.Sleep(10 * time.Millisecond)
	}

	st := n.Stats()
	hists := n.LatencyHistograms()
	if len(hists) != len(st.Classes) {
		t.Errorf("%d histograms for %d classes", len(hists), len(st.Classes))
	}
	for _, c := range []string{"critical", "ingest"} {
		h, q := hists[c], st.Classes[c].Latency
		if h.Count == 0 || h.Count != q.Count || h.Count != st.Classes[c].Batches {
			t.Errorf("%s: histogram count %d, Stats count %d, batches %d", c, h.Count, q.Count, st.Classes[c].Batches)
		}
		if h.Max != q.Max || h.Quantile(0.5) != q.P50 || h.Quantile(0.95) != q.P95 || h.Quantile(0.99) != q.P99 {
			t.Errorf("%s: histogram max %v p50 %v p95 %v p99 %v; Stats %+v", c, h.Max, h.Quantile(0.5), h.Quantile(0.95), h.Quantile(0.99), q)
		}
		mean := h.Sum / time.Duration(h.Count)
		if mean <= 0 || mean > h.Max {
			t.Errorf("%s: mean %v (sum %v), max %v", c, mean, h.Sum, h.Max)
		}
		// Below counts cumulatively up to the whole count.
		var last uint64
		for k := 0; k < 30; k++ {
			b := h.Below(time.Duration(1<<k) * time.Microsecond)
			if b < last {
				t.Errorf("%s: Below(2^%d µs) = %d < Below(2^%d µs) = %d", c, k, b, k-1, last)
			}
			last = b
		}
		if h.Below(0) != 0 || h.Below(2*h.Max) != h.Count || last != h.Count {
			t.Errorf("%s: Below(0) %d, Below(2·max) %d, Below(2^29 µs) %d; count %d", c, h.Below(0), h.Below(2*h.Max), last, h.Count)
		}
		// The median lies within its bucket: at least half the batches
		// took less than its edge, and less than half less than the edge
		// below (8 per doubling).
		p50 := h.Quantile(0.5)
		lower := time.Duration(float64(p50) / math.Exp2(1.0/8))
		if h.Below(p50) < h.Count/2 && p50 != h.Max || h.Below(lower-1) > (h.Count+1)/2 {
			t.Errorf("%s: p50 %v: Below(p50) %d, Below(p50/2^⅛) %d of %d", c, p50, h.Below(p50), h.Below(lower-1), h.Count)
		}
		// Sub gives the interval's distribution.
		if d := h.Sub(empty[c]); d.Count != h.Count || d.Sum != h.Sum || d.Quantile(0.99) != h.Quantile(0.99) {
			t.Errorf("%s: h - empty = count %d sum %v, want %d %v", c, d.Count, d.Sum, h.Count, h.Sum)
		}
		if d := h.Sub(h); d.Count != 0 || d.Sum != 0 || d.Quantile(0.5) != 0 || d.Below(time.Hour) != 0 {
			t.Errorf("%s: h - h = %+v", c, d)
		}
	}
	var zero aggregator.Histogram
	if zero.Count != 0 || zero.Quantile(0.5) != 0 || zero.Below(time.Hour) != 0 || zero.Sub(zero).Count != 0 {
		t.Errorf("zero histogram: %+v", zero)
	}

	shape := n.Shape()
	if len(shape) != 4 {
		t.Fatalf("Shape has %d classes, want 4", len(shape))
	}
	for i, c := range priority.Defaults(ceil) {
		s := shape[i]
		if s.Class != c.Name || s.Priority != c.Priority || s.Critical != c.Critical || s.Rate != c.Rate || s.Ceil != c.Ceil {
			t.Errorf("Shape[%d] = %+v, want class %+v", i, s, c)
		}
		if s.Action != c.ActionAt(0).Kind || s.Deferred {
			t.Errorf("%s at level 0: action %v deferred %v", s.Class, s.Action, s.Deferred)
		}
		// The guarantees sum to 60% of the ceiling, under the target (80%):
		// in force unscaled, except backfill's, which only borrows.
		if s.Guaranteed.BytesPerSec != c.Rate.BytesPerSec {
			t.Errorf("%s: guaranteed %d in force, configured %d", s.Class, s.Guaranteed.BytesPerSec, c.Rate.BytesPerSec)
		}
		// The ceiling in force is the class's, or the link's rate where
		// lower: at most the target, 80% of the ceiling.
		if want := min(c.Ceil.BytesPerSec, s.LinkRate); s.LinkRate <= 0 || s.LinkRate > ceil || s.CeilNow.BytesPerSec != want {
			t.Errorf("%s: ceiling %d in force with the lanes at %d B/s, want %d", s.Class, s.CeilNow.BytesPerSec, s.LinkRate, want)
		}
	}
	if shape[0].GuaranteedBytes == 0 {
		t.Errorf("critical sent nothing within its guarantee: %+v", shape[0])
	}
	// Shape follows a reload.
	reload := priority.Defaults(ceil)
	reload[0].Rate.BytesPerSec /= 2
	reload[0].Priority = 1
	if err := n.Reconfigure(reload); err != nil {
		t.Fatal(err)
	}
	if s := n.Shape()[0]; s.Rate != reload[0].Rate || s.Priority != 1 || s.Guaranteed != reload[0].Rate {
		t.Errorf("after Reconfigure: %+v, want rate %v priority 1 in force", s, reload[0].Rate)
	}

	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n.Accepting() {
		t.Error("Accepting after Shutdown")
	}
	// Snapshots stay readable after Shutdown.
	_ = n.Shape()
	if h := n.LatencyHistograms()["critical"]; h.Count == 0 {
		t.Error("histogram lost after Shutdown")
	}
}

// TestShapeUnknownLink: with the default link of unknown capacity
// (Link.Ceil 0, link_mbit: 0), the default classes' percentages are of
// nothing: no class has a guarantee or a ceiling of its own, and what the
// lanes enforce is the measured link rate, shared by priority. Shape says
// exactly that: no guarantee in force, and the link's rate as every
// class's ceiling in force, never 0.
func TestShapeUnknownLink(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	n := newNode(t, t.TempDir(), nc, nil)
	ingest(t, n, "ingest", 0, 100, 50)
	collect(t, nc, 100, 10*time.Second) // the lanes have been given the link's rate by now
	var shape []aggregator.ClassShape
	for deadline := guard(0); ; time.Sleep(10 * time.Millisecond) {
		if shape = n.Shape(); shape[0].LinkRate > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: no link rate in Shape after %v: %+v", hangGuard, shape)
		}
	}
	for _, s := range shape {
		if !s.Rate.IsZero() || !s.Ceil.IsZero() || !s.Guaranteed.IsZero() {
			t.Errorf("%s: rate %v, ceil %v, guaranteed %v; want none with a link of unknown capacity", s.Class, s.Rate, s.Ceil, s.Guaranteed)
		}
		if s.LinkRate != shape[0].LinkRate || s.CeilNow.BytesPerSec != s.LinkRate || s.Deferred || s.Unshaped {
			t.Errorf("%s: ceiling in force %d B/s with the lanes at %d B/s, deferred %v, unshaped %v; want the link's rate",
				s.Class, s.CeilNow.BytesPerSec, s.LinkRate, s.Deferred, s.Unshaped)
		}
	}

	un := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) { o.Link.Unshaped = true })
	for _, s := range un.Shape() {
		if !s.Unshaped || s.LinkRate != 0 || !s.CeilNow.IsZero() || !s.Guaranteed.IsZero() {
			t.Errorf("unshaped %s: %+v; want no rates in force", s.Class, s)
		}
	}
}
