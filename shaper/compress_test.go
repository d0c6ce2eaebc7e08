package shaper

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// levels is a class's estimates: fastest 10× at 500 MB/s per core,
// default 10.4× at 450, better 11.2× at 225, best 11.6× at 55 (the priors'
// proportions).
func levels() [CompressLevels]LevelEstimate {
	return [CompressLevels]LevelEstimate{
		{Ratio: 10, Speed: 500e6, Measured: true},
		{Ratio: 10.4, Speed: 450e6},
		{Ratio: 11.2, Speed: 225e6},
		{Ratio: 11.6, Speed: 55e6},
	}
}

func TestChooseCompression(t *testing.T) {
	base := CompressInputs{
		LinkFull: true, Cores: 2, Min: CompressFastest, Max: CompressBest, Levels: levels(),
		Airtime: DefaultBulkAirtime, MinBatchBytes: MinBatchRawBytes, MaxBatchBytes: 768 << 10,
	}
	for _, tc := range []struct {
		name   string
		mod    func(*CompressInputs)
		level  CompressLevel
		neck   Bottleneck
		batchB int
	}{
		// 3.2 Mbit/s target: every level is link-bound (best: 400 kB/s ×
		// 11.6 = 4.64 MB/s ≪ 2 × 55 MB/s); the densest wins. 100 ms ×
		// 400 kB/s × 11.6 = 464,000 raw bytes (463,999 in float64: 1/11.6 is inexact).
		{"slow link: best", func(in *CompressInputs) { in.LinkBytesPerSec = 400e3 }, CompressBest, BottleneckLink, 463_999},
		// Loopback-like 600 MB/s: every level is CPU-bound; fastest
		// delivers 1 GB/s, default 900 MB/s (10% less: outside the 5%
		// band). Batches at the class's bound.
		{"fast link: fastest", func(in *CompressInputs) { in.LinkBytesPerSec = 600e6 }, CompressFastest, BottleneckCPU, 768 << 10},
		// 20 MB/s: best is CPU-bound at 110 MB/s, better delivers
		// min(224, 450) = 224 MB/s, default 208, fastest 200: better.
		// The batch is the class bound (20 MB/s × 100 ms × 11.2 ≫ 768 KiB).
		{"middle: better", func(in *CompressInputs) { in.LinkBytesPerSec = 20e6 }, CompressBetter, BottleneckLink, 768 << 10},
		// Bounds: at most default on the slow link.
		{"bounded above", func(in *CompressInputs) { in.LinkBytesPerSec = 400e3; in.Max = CompressDefault }, CompressDefault, BottleneckLink, 416_000},
		// Bounds: at least better on the fast link.
		{"bounded below", func(in *CompressInputs) { in.LinkBytesPerSec = 600e6; in.Min = CompressBetter }, CompressBetter, BottleneckCPU, 768 << 10},
		// A fixed level: Min = Max.
		{"fixed", func(in *CompressInputs) {
			in.LinkBytesPerSec = 400e3
			in.Min, in.Max = CompressDefault, CompressDefault
		}, CompressDefault, BottleneckLink, 416_000},
		// No link estimate (unshaped): the lowest level, the class bound.
		{"unknown link", func(in *CompressInputs) { in.LinkBytesPerSec = 0 }, CompressFastest, BottleneckUnknown, 768 << 10},
		// One core: best's 55 MB/s still beats the 4.64 MB/s the link
		// takes.
		{"slow link, one core", func(in *CompressInputs) { in.LinkBytesPerSec = 400e3; in.Cores = 1 }, CompressBest, BottleneckLink, 463_999},
		// A link that held nothing back counts twice: 5 MB/s looks like
		// 10: best (55 MB/s × 2 = 110) is CPU-bound only above 9.5 MB/s…
		// best delivers 110, better 112: within 5%, best has the higher
		// ratio.
		{"link not full", func(in *CompressInputs) { in.LinkBytesPerSec = 5e6; in.LinkFull = false }, CompressBest, BottleneckCPU, 768 << 10},
		// Full at 10 MB/s: best delivers 110 (CPU), better 112: best.
		// At 12 MB/s: best 110, better 134.4: better.
		{"cpu crosses over", func(in *CompressInputs) { in.LinkBytesPerSec = 12e6 }, CompressBetter, BottleneckLink, 768 << 10},
		// Hysteresis: at 10.6 MB/s best delivers 110, better 118.7
		// (best is 7.3% below: outside the 5% band, inside 10%):
		// from better it goes… better (no candidate denser than better).
		{"hysteresis keeps better", func(in *CompressInputs) {
			in.LinkBytesPerSec = 10.6e6
			in.Current = CompressBetter
		}, CompressBetter, BottleneckLink, 768 << 10},
		// …and from best it stays best: within 10% and denser.
		{"hysteresis keeps best", func(in *CompressInputs) {
			in.LinkBytesPerSec = 10.6e6
			in.Current = CompressBest
		}, CompressBest, BottleneckCPU, 768 << 10},
		// From best at 12 MB/s (best 18% below): better.
		{"hysteresis leaves best", func(in *CompressInputs) {
			in.LinkBytesPerSec = 12e6
			in.Current = CompressBest
		}, CompressBetter, BottleneckLink, 768 << 10},
		// A current level below the bounds is not kept.
		{"current out of bounds", func(in *CompressInputs) {
			in.LinkBytesPerSec = 600e6
			in.Min, in.Current = CompressDefault, CompressFastest
		}, CompressDefault, BottleneckCPU, 768 << 10},
		// Measured ratios that are not monotone: default measured 9.8×
		// (noise, smaller batches) counts as it is.
		{"non-monotone ratios", func(in *CompressInputs) {
			in.LinkBytesPerSec = 400e3
			in.Max = CompressDefault
			in.Levels[CompressDefault] = LevelEstimate{Ratio: 9.8, Speed: 450e6, Measured: true}
		}, CompressFastest, BottleneckLink, 400_000},
		// Garbage estimates (zero, NaN) count as 1× and 1 B/s: no panic,
		// no NaN: every level delivers 2 B/s (CPU-bound), so fastest, and the
		// batch is 100 ms × 400 kB/s uncompressed.
		{"garbage estimates", func(in *CompressInputs) {
			in.LinkBytesPerSec = 400e3
			for l := range in.Levels {
				in.Levels[l] = LevelEstimate{}
			}
		}, CompressFastest, BottleneckCPU, 40_000},
	} {
		in := base
		tc.mod(&in)
		got := ChooseCompression(in)
		if got.Level != tc.level || got.Bottleneck != tc.neck || got.BatchBytes != tc.batchB {
			t.Errorf("%s: level %v, %s-bound, batch %d; want %v, %s-bound, %d (deliverable %v)",
				tc.name, got.Level, got.Bottleneck, got.BatchBytes, tc.level, tc.neck, tc.batchB, got.Deliverable)
		}
	}
}

// TestChooseCompressionStepTable follows one class as its link slows
// down, recovers and its cores get slower, with the level kept between
// calls as the node keeps it.
func TestChooseCompressionStepTable(t *testing.T) {
	steps := []struct {
		link  int64
		full  bool
		speed float64 // fastest's per-core speed, the others by the priors
		level CompressLevel
	}{
		{0, false, 500e6, CompressFastest},        // no estimate yet
		{1 << 20, false, 500e6, CompressBest},     // the initial 1 MiB/s, nothing held: 2 MiB/s × 11.6 ≪ 110 MB/s
		{50e6, false, 500e6, CompressFastest},     // found fast: CPU-bound everywhere
		{400e3, true, 500e6, CompressBest},        // slowed down to 4 Mbit/s, held
		{400e3, true, 100e6, CompressBest},        // cores 5× slower: best's 22 MB/s still ≫ 4.64
		{400e3, true, 10e6, CompressBetter},       // 10× slower again: best 2.2 MB/s < better's 4.48
		{400e3, true, 2e6, CompressFastest},       // and again: CPU-bound, fastest
		{400e3, true, 500e6, CompressBest},        // cores back
		{600e6, true, 500e6, CompressFastest},     // link back
		{600e6, true, 500e6, CompressFastest},     // steady
		{0, false, 500e6, CompressFastest},        // estimate lost
		{1 << 20, true, 500e6, CompressBest},      // slow and held
		{1 << 20, true, 500e6, CompressBest},      // steady
		{int64(9.6e6), true, 500e6, CompressBest}, // best 110 (CPU), better 107.5: best, denser
	}
	cur := CompressFastest
	for i, st := range steps {
		lv := levels()
		for l := range lv {
			lv[l].Speed = st.speed * priorSpeed[l]
		}
		got := ChooseCompression(CompressInputs{
			LinkBytesPerSec: st.link, LinkFull: st.full, Cores: 2,
			Min: CompressFastest, Max: CompressBest, Current: cur, Levels: lv,
			Airtime: DefaultBulkAirtime, MinBatchBytes: MinBatchRawBytes, MaxBatchBytes: 768 << 10,
		})
		if got.Level != st.level {
			t.Fatalf("step %d (link %d full %v speed %v): level %v, want %v (deliverable %v)",
				i, st.link, st.full, st.speed, got.Level, st.level, got.Deliverable)
		}
		cur = got.Level
	}
}

func TestCompressMeter(t *testing.T) {
	m := NewCompressMeter(0.5)
	// Nothing measured: the priors.
	e := m.Estimates()
	if e[CompressFastest].Ratio != PriorCompressRatio || e[CompressFastest].Speed != PriorCompressSpeed || e[CompressFastest].Measured {
		t.Fatalf("prior fastest %+v", e[CompressFastest])
	}
	if e[CompressBest].Ratio != PriorCompressRatio*priorRatio[CompressBest] {
		t.Fatalf("prior best %+v", e[CompressBest])
	}
	// fastest: 100 kB → 10 kB in 1 ms: 10×, 100 MB/s.
	m.Observe(CompressFastest, 100_000, 10_000, time.Millisecond)
	e = m.Estimates()
	if e[CompressFastest] != (LevelEstimate{Ratio: 10, Speed: 100e6, Measured: true}) {
		t.Fatalf("fastest %+v", e[CompressFastest])
	}
	// best derived from fastest: 10 × 1.16, 100 MB/s × 0.11.
	if got := e[CompressBest]; got.Measured || !relEq(got.Ratio, 11.6) || !relEq(got.Speed, 11e6) {
		t.Fatalf("best derived %+v", got)
	}
	// A second fastest batch, 200 kB → 10 kB in 1 ms, at α = 0.5: sums
	// 150 kB, 10 kB, 1 ms → 15×, 150 MB/s.
	m.Observe(CompressFastest, 200_000, 10_000, time.Millisecond)
	if got := m.Estimates()[CompressFastest]; !relEq(got.Ratio, 15) || !relEq(got.Speed, 150e6) {
		t.Fatalf("fastest after two %+v", got)
	}
	// best measured: 12×, 20 MB/s. better derives from the nearest
	// measured (best, distance 1): 12 × 1.12/1.16, 20 MB/s × 0.45/0.11.
	m.Observe(CompressBest, 120_000, 10_000, 6*time.Millisecond)
	e = m.Estimates()
	if got := e[CompressBetter]; !relEq(got.Ratio, 12*1.12/1.16) || !relEq(got.Speed, 20e6*0.45/0.11) {
		t.Fatalf("better derived from best %+v", got)
	}
	// default: equidistant from fastest and better (not measured):
	// nearest measured is fastest.
	if got := e[CompressDefault]; !relEq(got.Ratio, 15*1.04) {
		t.Fatalf("default derived %+v", got)
	}
	// Ignored: empty, out of range.
	m.Observe(CompressDefault, 0, 10, time.Millisecond)
	m.Observe(CompressLevels, 10, 10, time.Millisecond)
	if m.Samples(CompressDefault) != 0 || m.Samples(CompressFastest) != 2 || m.Samples(CompressLevels) != 0 {
		t.Fatal("samples")
	}
	// A zero duration does not divide by zero.
	m.Observe(CompressDefault, 10, 10, 0)
	if s := m.Estimates()[CompressDefault].Speed; !(s > 0) {
		t.Fatalf("speed %v", s)
	}
}

func TestCompressBounds(t *testing.T) {
	for _, tc := range []struct {
		c      priority.Class
		lo, hi CompressLevel
	}{
		{priority.Class{}, CompressFastest, CompressBetter},
		{priority.Class{Compression: priority.CompressionAuto}, CompressFastest, CompressBetter},
		{priority.Class{CompressionMax: "best"}, CompressFastest, CompressBest},
		{priority.Class{CompressionMin: "best"}, CompressBest, CompressBest},
		{priority.Class{Compression: priority.CompressionBetter}, CompressBetter, CompressBetter},
		{priority.Class{Compression: priority.CompressionFastest, CompressionMax: "best"}, CompressFastest, CompressFastest},
		{priority.Class{Compression: "auto", CompressionMin: "default", CompressionMax: "better"}, CompressDefault, CompressBetter},
		{priority.Class{CompressionMax: "default"}, CompressFastest, CompressDefault},
	} {
		if lo, hi := CompressBounds(&tc.c); lo != tc.lo || hi != tc.hi {
			t.Errorf("%+v: %v..%v, want %v..%v", tc.c, lo, hi, tc.lo, tc.hi)
		}
	}
	for l := range CompressLevel(CompressLevels) {
		if p, ok := ParseCompressLevel(l.String()); !ok || p != l {
			t.Errorf("%v does not parse back", l)
		}
	}
	if _, ok := ParseCompressLevel("auto"); ok {
		t.Error("auto is not a level")
	}
}

func relEq(a, b float64) bool { return a > b*(1-1e-9) && a < b*(1+1e-9) }

func TestEstimateLevels(t *testing.T) {
	// A ratio alone (sluice plan's): the prior speed, and the other
	// levels by proportion.
	var k [CompressLevels]LevelEstimate
	k[CompressFastest] = LevelEstimate{Ratio: 10, Measured: true}
	e := EstimateLevels(k)
	if e[CompressFastest].Speed != PriorCompressSpeed || !relEq(e[CompressBetter].Ratio, 11.2) ||
		!relEq(e[CompressBetter].Speed, PriorCompressSpeed*0.45) || e[CompressBetter].Measured {
		t.Fatalf("%+v", e)
	}
}
