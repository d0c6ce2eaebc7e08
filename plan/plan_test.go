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
// target 1,000,000 B/s. A batch costs 461 B besides its body: the node's
// own figure for a 6-byte name, subject sluice and the default classes
// (wire.MsgOverhead; the same as aggregator charges).
//
//	orders: bound 65,536, n = min(100, 131, 1 + 100·0.005) = 1.5 events,
//	        wire 1.5·501/5 = 150.3 B, cost 611.3 B, 100/1.5·2.2 =
//	        146.667 p/s, 89,657.33 B/s
//	views:  bound 200,000, n = min(1024, 250, 1 + 2000·0.1) = 201,
//	        wire 201·801/8 = 20,125.125 B, cost 20,586.125 B,
//	        2000/201 p/s, 204,837.06 B/s
//
// Rates ⌈89,657.33⌉ = 89,658 and ⌈204,837.06⌉ = 204,838; the critical
// ceil is what ingest's guarantee leaves of the link: 1,045,162.
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
		bound              int
		events, wire, cost float64
		pps                float64
	}{
		{"orders", 65_536, 1.5, 150.3, 611.3, 100 / 1.5 * 2.2},
		{"views", 200_000, 201, 20_125.125, 20_586.125, 2000.0 / 201},
	}
	for i, s := range steps {
		f := p.Flows[i]
		if f.Name != s.flow || f.BatchBoundBytes != s.bound || f.EventsPerBatch != s.events || !near(f.BatchWireBytes, s.wire) ||
			!near(f.After.PacketsPerSec, s.pps) || !near(f.After.BitsPerSec, s.pps*s.cost*8) {
			t.Errorf("%s: %+v", s.flow, f)
		}
	}
	want := []struct {
		name       string
		rate, ceil int64
		action     string
	}{
		{"critical", 89_658, 1_045_162, "none"},
		{"ingest", 204_838, 1_250_000, "none"},
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

// TestSample: sizes by nearest rank, and the ratio of the sample as one
// NDJSON batch (it is smaller than the batch the model sizes) compressed
// at the class's level (wire.EncoderLevel).
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
	c := priority.Defaults(0)[1] // ingest: 1024 events a batch at most
	ratios := map[string]float64{}
	for _, level := range []string{priority.CompressionFastest, priority.CompressionBest} {
		c.Compression = level
		got, err := SampleRatio(sample, &c, 1e6, 2000)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(wire.EncoderLevel(level)), zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		want := float64(len(ndjson)) / float64(len(enc.EncodeAll(ndjson, nil)))
		enc.Close()
		if got != want {
			t.Errorf("%s: ratio %v, want %v", level, got, want)
		}
		ratios[level] = got
	}
	if ratios[priority.CompressionFastest] == ratios[priority.CompressionBest] {
		t.Errorf("the level makes no difference: %v", ratios)
	}
	if r, err := SampleRatio(nil, &c, 1e6, 2000); r != 1 || err != nil {
		t.Errorf("empty sample: %v %v", r, err)
	}
}
