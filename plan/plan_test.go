package plan

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/wire"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

// hand is the inventory of cmd/sluice/testdata/plan/hand.yaml: a 10 Mbit/s
// uplink of 1000 p/s carrying orders (critical) and views (ingest), with a
// node named edge-1 (6 bytes) under subject sluice.
func hand() Inventory {
	return Inventory{
		Node: "edge-1",
		Hops: []Hop{{Name: "wan", BitsPerSec: 10e6, PacketsPerSec: 1000, LatencyBudget: 50 * time.Millisecond}},
		Flows: []Flow{
			{Name: "orders", Class: "critical", EventsPerSec: 100, MeanBytes: 500, P99Bytes: 2000, Retry: 1.1, FanOut: 2,
				CompressionRatio: 5, Hops: []string{"wan"}, LatencyBudget: time.Second},
			{Name: "views", Class: "ingest", EventsPerSec: 2000, MeanBytes: 800, P99Bytes: 3000, CompressionRatio: 8,
				Hops: []string{"wan"}, LatencyBudget: 500 * time.Millisecond},
		},
	}
}

// TestEvaluateHand: hand() worked by hand. link_mbit 10 = 1,250,000 B/s,
// target T = 1,000,000 B/s. A batch costs 461 B besides its body: the
// node's own figure for a 6-byte name, subject sluice and the default
// classes (wire.MsgOverhead; the same as aggregator charges).
//
// Both classes are compression auto, fastest..better, on 1 core. A given
// ratio is fastest's; the priors scale it ×1.04 (default) and ×1.12
// (better), speeds 400e6 × 1, 0.9, 0.45 B/s. Each level delivers
// D = min(T × ratio, speed) raw B/s; the link is full (the plan knows it).
//
//	orders: 5, 5.2, 5.6: D = 5e6, 5.2e6, 5.6e6 (speeds ≥ 1.8e8 are far
//	        above): only better is within 5% of 5.6e6: better, link-bound,
//	        ratio 5.6. bound = min(max(T·0.1 s·5.6 = 560,000, 16 KiB),
//	        65,536) = 65,536; n = min(100, ⌊65536/500⌋ = 131,
//	        1 + 100·0.005) = 1.5 events, wire 1.5·501/5.6 = 134.196 B,
//	        cost 595.196 B, 100/1.5·2.2 = 146.667 p/s, 87,295.48 B/s
//	views:  8, 8.32, 8.96: better again, ratio 8.96; bound = min(T·0.1·
//	        8.96 = 896,000, 524,288) = 524,288; n = min(1024, 655,
//	        1 + 2000·0.1) = 201, wire 201·801/8.96 = 17,968.862 B, cost
//	        18,429.862 B, 2000/201 p/s, 183,381.71 B/s
//
// Rates ⌈87,295.48⌉ = 87,296 and ⌈183,381.71⌉ = 183,382; the critical
// ceil is what ingest's guarantee leaves of the link: 1,066,618.
func TestEvaluateHand(t *testing.T) {
	p, err := Evaluate(hand())
	if err != nil {
		t.Fatal(err)
	}
	if p.OverheadBytes != 461 || p.OverheadBytes != wire.MsgOverhead("sluice", "edge-1", strings.Repeat("0", 32), len("replication")) {
		t.Errorf("overhead %d", p.OverheadBytes)
	}
	if p.Link != "wan" || p.LinkBytesPerSec != 1_250_000 || p.TargetBytesPerSec != 1_000_000 {
		t.Errorf("link %s %d target %d", p.Link, p.LinkBytesPerSec, p.TargetBytesPerSec)
	}
	steps := []struct {
		flow               string
		level              string
		ratio              float64
		bound              int
		events, wire, cost float64
		pps                float64
	}{
		{"orders", "better", 5.6, 65_536, 1.5, 751.5 / 5.6, 751.5/5.6 + 461, 100 / 1.5 * 2.2},
		{"views", "better", 8.96, 524_288, 201, 161_001 / 8.96, 161_001/8.96 + 461, 2000.0 / 201},
	}
	for i, s := range steps {
		f := p.Flows[i]
		if f.Name != s.flow || f.CompressionLevel != s.level || !f.CompressionAuto || f.Bottleneck != "link" || !near(f.CompressionRatio, s.ratio) ||
			f.BatchBoundBytes != s.bound || f.EventsPerBatch != s.events || !near(f.BatchWireBytes, s.wire) ||
			!near(f.After.PacketsPerSec, s.pps) || !near(f.After.BitsPerSec, s.pps*s.cost*8) {
			t.Errorf("%s: %+v", s.flow, f)
		}
	}
	want := []struct {
		name       string
		rate, ceil int64
		action     string
	}{
		{"critical", 87_296, 1_066_618, "none"},
		{"ingest", 183_382, 1_250_000, "none"},
		{"replication", 0, 1_250_000, "none"},
		{"backfill", 0, 1_250_000, "throttle"},
	}
	for i, w := range want {
		c := p.Classes[i]
		if c.Name != w.name || c.RateBytesPerSec != w.rate || c.CeilBytesPerSec != w.ceil || c.Action != w.action {
			t.Errorf("class %d: %+v, want %+v", i, c, w)
		}
		r := p.Recommended[i]
		if r.Name != w.name || r.Rate.BytesPerSec != w.rate || r.Ceil.BytesPerSec != w.ceil {
			t.Errorf("recommended %d: %+v", i, r)
		}
	}
	if err := priority.Validate(p.Recommended, priority.Rate{BytesPerSec: p.LinkBytesPerSec}); err != nil {
		t.Error(err)
	}
	if p.Spool.GrowthBytesPerSec != 0 || p.Spool.Level != 0 || len(p.OverCapacity) != 0 || p.Hops[0].After.Verdict != "ok" {
		t.Errorf("spool %+v, over %v, hop %+v", p.Spool, p.OverCapacity, p.Hops[0])
	}
}

// TestOverheadFollowsTheEnvelope: step table over what the envelope
// carries. Each step's overhead is wire.MsgOverhead's, and every flow's
// load after sluice is its batches times body plus that overhead.
func TestOverheadFollowsTheEnvelope(t *testing.T) {
	for _, s := range []struct {
		subject, node string
		class         string // an added class the flows use; "" = none
		want          int
	}{
		{"", "edge-1", "", 461},
		{"sluice", "edge-1", "", 461},
		{"events.prod", "edge-1", "", 466},
		{"", "", "", 519}, // MaxNodeBytes
		{"", strings.Repeat("n", MaxNodeBytes), "", 519},
		{"", "edge-1", "telemetry-with-a-long-name", 506}, // 15 bytes more in Sluice-Class, Nats-Msg-Id and the subject
	} {
		inv := hand()
		inv.Subject, inv.Node = s.subject, s.node
		if s.class != "" {
			inv.Classes = append(priority.Defaults(0), priority.Class{Name: s.class, Priority: 4, Weight: 1})
		}
		p, err := Evaluate(inv)
		if err != nil {
			t.Fatal(err)
		}
		longest := len("replication")
		if s.class != "" {
			longest = len(s.class)
		}
		if p.OverheadBytes != s.want || s.want != wire.MsgOverhead(cmpOr(s.subject, "sluice"), cmpOr(s.node, strings.Repeat("n", 64)), strings.Repeat("0", 32), longest) {
			t.Errorf("subject %q node %q class %q: overhead %d, want %d", s.subject, s.node, s.class, p.OverheadBytes, s.want)
		}
		for _, f := range p.Flows {
			batches := f.EventsPerSec / f.EventsPerBatch * f.Amplification
			if !near(f.After.BitsPerSec, batches*shaper.MsgCost(f.BatchWireBytes, s.want)*8) {
				t.Errorf("%s: after %v bit/s, want %v batches/s of %v + %d B", f.Name, f.After.BitsPerSec, batches, f.BatchWireBytes, s.want)
			}
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestEvaluateInputErrors: a zero Inventory and each bad field give an
// *InputError naming the field, every one at once.
func TestEvaluateInputErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Inventory)
		want   []string // "path: message" prefixes
	}{
		{"zero", func(inv *Inventory) { *inv = Inventory{} }, []string{"hops: none", "flows: none"}},
		{"headroom", func(inv *Inventory) { inv.Headroom = 1.5 }, []string{"headroom: 1.5: want a fraction in (0, 1]"}},
		{"link", func(inv *Inventory) { inv.Link = "lan" }, []string{`link: "lan": no such hop`}},
		{"bandwidth", func(inv *Inventory) { inv.Hops[0].BitsPerSec = 0 }, []string{"hops[0].bandwidth: 0 bit/s: want > 0"}},
		{"nan bandwidth", func(inv *Inventory) { inv.Hops[0].BitsPerSec = math.NaN() }, []string{"hops[0].bandwidth: NaN bit/s"}},
		{"duplicate hop", func(inv *Inventory) { inv.Hops = append(inv.Hops, inv.Hops[0]) }, []string{`hops[1].name: "wan": duplicate hop name`}},
		{"packets", func(inv *Inventory) { inv.Hops[0].PacketsPerSec = -1 }, []string{"hops[0].packets_per_sec: -1: want ≥ 0"}},
		{"rtt", func(inv *Inventory) { inv.Hops[0].RTT = -time.Second }, []string{"hops[0].rtt: -1s"}},
		{"class", func(inv *Inventory) { inv.Flows[0].Class = "bulk" }, []string{`flows[0].class: "bulk": want one of critical, ingest, replication, backfill`}},
		{"rate", func(inv *Inventory) { inv.Flows[1].EventsPerSec = 0 }, []string{"flows[1].events_per_sec: 0: want the peak rate, > 0"}},
		{"retry", func(inv *Inventory) { inv.Flows[0].Retry = 0.5 }, []string{"flows[0].retry: 0.5: want an amplification ≥ 1"}},
		{"fan-out", func(inv *Inventory) { inv.Flows[0].FanOut = math.Inf(1) }, []string{"flows[0].fan_out: +Inf: want ≥ 1"}},
		{"flow hops", func(inv *Inventory) { inv.Flows[0].Hops = []string{"wan", "wan", "lan"} },
			[]string{`flows[0].hops[1]: "wan": listed twice`, `flows[0].hops[2]: "lan": no such hop`}},
		{"ratio", func(inv *Inventory) { inv.Flows[0].CompressionRatio = 0.5 }, []string{"flows[0].compression_ratio: 0.5: want raw/compressed ≥ 1"}},
		{"ratio and sample", func(inv *Inventory) { inv.Flows[0].Sample = [][]byte{[]byte(`{}`)} }, []string{"flows[0].sample: give compression_ratio or sample, not both"}},
		{"empty sample", func(inv *Inventory) { inv.Flows[0].CompressionRatio, inv.Flows[0].Sample = 0, [][]byte{{}} }, []string{"flows[0].sample: no events"}},
		{"no size", func(inv *Inventory) { inv.Flows[0].MeanBytes = 0 }, []string{"flows[0].payload: mean: missing"}},
		{"p99 below mean", func(inv *Inventory) { inv.Flows[0].P99Bytes = 10 }, []string{"flows[0].payload: p99 10 B < mean 500 B"}},
		{"spool", func(inv *Inventory) { inv.SpoolMaxBytes = -1 }, []string{"spool.max_bytes: -1"}},
		{"cores", func(inv *Inventory) { inv.Cores = -2 }, []string{"cores: -2: want the cores the node compresses on, > 0"}},
		{"nan cores", func(inv *Inventory) { inv.Cores = math.NaN() }, []string{"cores: NaN"}},
		{"classes", func(inv *Inventory) { inv.Classes = []priority.Class{{Name: "critical", Priority: 9}} }, []string{"classes: ", "priority 9 outside 0..7"}},
		{"overflow", func(inv *Inventory) { inv.Flows[0].EventsPerSec = math.MaxFloat64 }, []string{"flows[0].events_per_sec: ", "the load overflows"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := hand()
			tc.change(&inv)
			p, err := Evaluate(inv)
			if err == nil || p != nil {
				t.Fatalf("plan %+v, error %v", p, err)
			}
			if !errors.Is(err, ErrInvalidInventory) {
				t.Errorf("error %v is not ErrInvalidInventory", err)
			}
			var paths []string
			for _, e := range splitErrors(err) {
				ie, ok := errors.AsType[*InputError](e)
				if !ok || strings.Contains(ie.Msg, "\n") {
					t.Fatalf("not one InputError on one line: %#v", e)
				}
				paths = append(paths, ie.Path+": "+ie.Msg)
			}
			all := strings.Join(paths, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("errors lack %q:\n%s", w, all)
				}
			}
		})
	}
}

func TestLinkHop(t *testing.T) {
	hops := []Hop{{Name: "lan", BitsPerSec: 1e9}, {Name: "wan", BitsPerSec: 10e6}, {Name: "dsl", BitsPerSec: 10e6}, {Name: "down"}}
	for _, tc := range []struct {
		link string
		want int
	}{
		{"", 1}, // least bit/s, the first of equals
		{"lan", 0},
		{"dsl", 2},
		{"down", 3},
		{"nowhere", -1},
	} {
		if got := LinkHop(hops, tc.link); got != tc.want {
			t.Errorf("LinkHop(%q) = %d, want %d", tc.link, got, tc.want)
		}
	}
	if got := LinkHop(hops[3:], ""); got != -1 {
		t.Errorf("no bandwidth: %d", got)
	}
	if got := (Hop{BitsPerSec: 10.5e6}).LinkBytesPerSec(); got != 1_312_500 {
		t.Errorf("LinkBytesPerSec %d", got)
	}
}

// TestAllocate is the lanes' steady state, step by step on one link
// bucket of 1000 B/s: critical first, then guarantees (scaled when the
// target is below them), then borrowing, weighted fair within a priority;
// a deferred class sends nothing.
func TestAllocate(t *testing.T) {
	none, deferred, throttle := priority.Action{Kind: priority.ActionNone}, priority.Action{Kind: priority.ActionDefer}, priority.Action{Kind: priority.ActionThrottle}
	crit := priority.Class{Name: "c", Critical: true, Ceil: priority.Rate{BytesPerSec: 300}}
	a := priority.Class{Name: "a", Priority: 1, Weight: 1, Rate: priority.Rate{BytesPerSec: 400}}
	b := priority.Class{Name: "b", Priority: 1, Weight: 3, Rate: priority.Rate{BytesPerSec: 400}}
	low := priority.Class{Name: "l", Priority: 2, Weight: 1}
	critRate := crit
	critRate.Rate.BytesPerSec = 300
	for _, s := range []struct {
		name    string
		classes []priority.Class
		acts    []priority.Action
		demand  []float64
		want    []float64
	}{
		{"room for all", []priority.Class{crit, a, b, low}, []priority.Action{none, none, none, none}, []float64{100, 100, 100, 100}, []float64{100, 100, 100, 100}},
		{"critical to its ceil", []priority.Class{crit, a}, []priority.Action{none, none}, []float64{900, 900}, []float64{300, 700}},
		// 700 left for 800 of guarantees: each scaled by 7/8, 350 each.
		{"guarantees scaled", []priority.Class{critRate, a, b}, []priority.Action{none, none, none}, []float64{300, 900, 900}, []float64{300, 350, 350}},
		// Without a critical rate nothing is scaled: 700 shared 1:3 with
		// neither above its 400, so b's share is capped and a takes the rest.
		{"guarantees weighted", []priority.Class{crit, a, b}, []priority.Action{none, none, none}, []float64{300, 900, 900}, []float64{300, 300, 400}},
		// no critical demand: guarantees 400 + 400, the 200 left weighted 1:3.
		{"borrow weighted", []priority.Class{crit, a, b}, []priority.Action{none, none, none}, []float64{0, 900, 900}, []float64{0, 450, 550}},
		// b has room for 50 past its guarantee: a takes the rest.
		{"borrow capped by demand", []priority.Class{a, b}, []priority.Action{none, none}, []float64{900, 450}, []float64{550, 450}},
		{"lower priority borrows last", []priority.Class{a, low}, []priority.Action{none, none}, []float64{900, 900}, []float64{900, 100}},
		{"deferred sends nothing", []priority.Class{a, low}, []priority.Action{deferred, none}, []float64{900, 900}, []float64{0, 900}},
		// throttled: no guarantee, borrows after b's guarantee.
		{"throttled borrows only", []priority.Class{a, b}, []priority.Action{throttle, none}, []float64{900, 900}, []float64{150, 850}},
	} {
		msgs := make([]float64, len(s.demand))
		got := allocate(s.classes, s.acts, s.demand, msgs, 1000)
		for i := range s.want {
			if !near(got[i], s.want[i]) {
				t.Errorf("%s: sent %v, want %v", s.name, got, s.want)
				break
			}
		}
	}
}

// TestSpoolAtPeak: a demand above the target settles at level 2 and
// grows the spool by the unsent share of the event bytes.
func TestSpoolAtPeak(t *testing.T) {
	inv := hand()
	inv.SpoolMaxBytes = 10 << 30
	inv.Flows = append(inv.Flows, Flow{Name: "bulk", Class: "backfill", EventsPerSec: 950, MeanBytes: 1000, P99Bytes: 1000, Hops: []string{"wan"}})
	inv.Hops[0].PacketsPerSec = 0
	p, err := Evaluate(inv)
	if err != nil {
		t.Fatal(err)
	}
	sp := p.Spool
	bulk := p.Classes[3]
	if sp.Level != 2 || !near(sp.SentBytesPerSec, 1e6) || !(sp.DemandBytesPerSec > 1e6) || !sp.DropFields {
		t.Fatalf("spool %+v", sp)
	}
	unsent := bulk.DemandBytesPerSec - bulk.SentBytesPerSec
	if !near(bulk.SpoolGrowthPerSec, unsent/bulk.DemandBytesPerSec*950_000) || !near(sp.GrowthBytesPerSec, bulk.SpoolGrowthPerSec) ||
		sp.FullSeconds == nil || !near(*sp.FullSeconds, (10<<30)/sp.GrowthBytesPerSec) {
		t.Errorf("backfill %+v, spool %+v", bulk, sp)
	}
	if p.Classes[1].Action != "drop_fields:20" || bulk.Action != "throttle" || p.Hops[0].Sent == nil {
		t.Errorf("classes %+v, hop %+v", p.Classes, p.Hops[0])
	}
	if b := p.Flows[2]; b.LatencySeconds != nil {
		t.Errorf("bulk latency %v: its spool grows", *b.LatencySeconds)
	}
}

// TestSample: sizes by nearest rank, and the ratio of the sample in NDJSON
// batches of n events, each one zstd frame at the level asked
// (wire.EncoderLevel).
func TestSample(t *testing.T) {
	var sample [][]byte
	var ndjson []byte
	for i := range 200 {
		// 51 bytes, 1 to 10 digits, "}}": 54 to 63 bytes.
		e := []byte(`{"type":"track","event":"Viewed","properties":{"n":` + strings.Repeat("7", 1+i%10) + `}}`)
		sample = append(sample, e)
		ndjson = append(append(ndjson, e...), '\n')
	}
	sample = append(sample, nil) // an empty line is no event
	if n := SampleEvents(sample); n != 200 {
		t.Errorf("SampleEvents %d", n)
	}
	// 20 of each size 54..63: mean 58.5; p99 is the 198th of 200, 63.
	mean, p99 := SampleSizes(sample)
	if mean != 58.5 || p99 != 63 {
		t.Errorf("SampleSizes = %v, %v", mean, p99)
	}
	// 200 events in batches of 1000 (one batch), 200 (one), 64 (four:
	// 64, 64, 64, 8).
	ratios := map[shaper.CompressLevel]float64{}
	for _, level := range []shaper.CompressLevel{shaper.CompressFastest, shaper.CompressBest} {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(wire.EncoderLevel(level.String())), zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1000, 200, 64} {
			got, err := SampleRatio(sample, level, n)
			if err != nil {
				t.Fatal(err)
			}
			var wireN int
			for i := 0; i < len(ndjson); {
				// n lines of the NDJSON, cut at their newlines.
				j, lines := i, 0
				for ; j < len(ndjson) && lines < n; j++ {
					if ndjson[j] == '\n' {
						lines++
					}
				}
				wireN += len(enc.EncodeAll(ndjson[i:j], nil))
				i = j
			}
			if want := float64(len(ndjson)) / float64(wireN); got != want {
				t.Errorf("%s, %d a batch: ratio %v, want %v", level, n, got, want)
			}
			if n == 200 {
				ratios[level] = got
			}
		}
		enc.Close()
	}
	if ratios[shaper.CompressFastest] == ratios[shaper.CompressBest] {
		t.Errorf("the level makes no difference: %v", ratios)
	}
	if r, err := SampleRatio(nil, shaper.CompressFastest, 10); r != 1 || err != nil {
		t.Errorf("empty sample: %v %v", r, err)
	}
}

// TestCompressionPolicy: the plan's level and batch bound are the node's
// policy (shaper.ChooseCompression) at the link's target, step by step,
// worked by hand. A given ratio r is the class's lowest level's; the
// priors make default 1.04 r and better 1.12 r (best 1.16 r), at 400e6,
// 360e6, 180e6 (best 44e6) raw B/s a core. A level delivers D = min(T·
// ratio, cores·speed); the policy takes the densest level within 5% of
// the best D. ingest: auto, fastest..better, 524,288 B, 1024 events.
//
//   - 10 Mbit/s (T 1e6), ratio 8: D = 8e6, 8.32e6, 8.96e6, all link-bound:
//     better; bound min(T·0.1 s·8.96, 524,288) = 524,288.
//   - 1 Gbit/s (T 1e8), 1 core: D = min(8e8, 4e8), min(8.32e8, 3.6e8),
//     min(8.96e8, 1.8e8) = 4e8, 3.6e8, 1.8e8: only fastest is within 5%
//     (3.8e8): fastest, CPU-bound; bound 524,288.
//   - 400 Mbit/s (T 4e7), 1 core: D = 3.2e8, 3.328e8, 1.8e8; within 5% of
//     3.328e8 (3.1616e8): fastest and default, default the denser; link-
//     bound (3.328e8 ≤ 3.6e8).
//   - the same on 2 cores: better's D = min(3.584e8, 3.6e8) = 3.584e8 is
//     the best: better, link-bound.
//   - no compression (source none) at 10 Mbit/s: ratio 1 at every level,
//     all D equal, no level denser: fastest; bound T·0.1 s = 100,000.
//   - compression_max best at 10 Mbit/s, ratio 8: best's 9.28e6 (its
//     speed 44e6 is above): best; bound 524,288.
//   - a fixed level (best, 32 KiB batches), ratio 4: best, not auto; the
//     fixed levels' 25 ms: min(T·0.025·4 = 100,000, 32,768) = 32,768.
//   - auto with compression_min = compression_max = default: one level,
//     as fixed: default at ratio 8 (given at it), bound min(T·0.025·8 =
//     200,000, 524,288) = 200,000.
func TestCompressionPolicy(t *testing.T) {
	ingest := priority.Defaults(0)[1]
	maxBest := ingest
	maxBest.CompressionMax = priority.CompressionBest
	fixed := ingest
	fixed.Compression, fixed.Batch.MaxBytes = priority.CompressionBest, 32<<10
	pinned := ingest
	pinned.CompressionMin, pinned.CompressionMax = priority.CompressionDefault, priority.CompressionDefault
	for _, s := range []struct {
		name   string
		class  priority.Class
		target int64
		cores  float64
		ratio  float64
		none   bool
		level  shaper.CompressLevel
		auto   bool
		neck   shaper.Bottleneck
		wantR  float64
		bound  int
	}{
		{"slow link", ingest, 1e6, 1, 8, false, shaper.CompressBetter, true, shaper.BottleneckLink, 8.96, 524_288},
		{"fast link, 1 core", ingest, 1e8, 1, 8, false, shaper.CompressFastest, true, shaper.BottleneckCPU, 8, 524_288},
		{"400 Mbit/s, 1 core", ingest, 4e7, 1, 8, false, shaper.CompressDefault, true, shaper.BottleneckLink, 8.32, 524_288},
		{"400 Mbit/s, 2 cores", ingest, 4e7, 2, 8, false, shaper.CompressBetter, true, shaper.BottleneckLink, 8.96, 524_288},
		{"no compression", ingest, 1e6, 1, 1, true, shaper.CompressFastest, true, shaper.BottleneckLink, 1, 100_000},
		{"max best", maxBest, 1e6, 1, 8, false, shaper.CompressBest, true, shaper.BottleneckLink, 9.28, 524_288},
		{"fixed best", fixed, 1e6, 1, 4, false, shaper.CompressBest, false, "", 4, 32_768},
		{"one auto level", pinned, 1e6, 1, 8, false, shaper.CompressDefault, false, "", 8, 200_000},
	} {
		_, maxBytes, _ := s.class.Batch.Limits()
		in := compressionInputs{class: &s.class, target: s.target, cores: s.cores, maxBytes: maxBytes}
		got := in.choose(givenLevels(&s.class, s.ratio, s.none))
		if got.level != s.level || got.auto != s.auto || got.bottleneck != s.neck || !near(got.ratio, s.wantR) || got.bound != s.bound {
			t.Errorf("%s: %+v", s.name, got)
		}
	}
}

// TestSampleCompression: a sample's ratio is measured at the level the
// policy settles at, with the batch it settles at: what SampleRatio gives
// for that level and events per batch. A fixed level stays; on a slow
// link compression auto leaves fastest (which level it settles at depends
// on what the sample measures at each).
func TestSampleCompression(t *testing.T) {
	var sample [][]byte
	for i := range 2000 {
		sample = append(sample, []byte(`{"type":"track","event":"Viewed","userId":"u`+strings.Repeat("x", i%7)+`","properties":{"n":`+strings.Repeat("7", 1+i%10)+`}}`))
	}
	mean, _ := SampleSizes(sample)
	for _, s := range []struct {
		name   string
		class  priority.Class
		target int64
		level  shaper.CompressLevel // fixed: this; auto: above it
	}{
		{"auto, slow link", priority.Defaults(0)[1], 1e6, shaper.CompressFastest},
		{"fixed fastest", func() priority.Class {
			c := priority.Defaults(0)[1]
			c.Compression = priority.CompressionFastest
			return c
		}(), 1e6, shaper.CompressFastest},
	} {
		maxEvents, maxBytes, linger := s.class.Batch.Limits()
		in := compressionInputs{class: &s.class, target: s.target, cores: 1, maxBytes: maxBytes}
		got, err := in.sampleCompression(sample, 2000, mean)
		if err != nil {
			t.Fatal(err)
		}
		n := max(1, int(shaper.BatchEvents(2000, mean, got.bound, maxEvents, linger)))
		want, _ := SampleRatio(sample, got.level, n)
		auto := s.class.Compression == priority.CompressionAuto
		lo, hi := shaper.CompressBounds(&s.class)
		if (auto && !(got.level > s.level)) || (!auto && got.level != s.level) || got.level < lo || got.level > hi ||
			got.ratio != want || got.auto != auto {
			t.Errorf("%s: %+v, want level %s ratio %v (%d events a batch)", s.name, got, s.level, want, n)
		}
	}
}
