package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/shaper"
)

func approx(got, want float64) bool {
	return math.Abs(got-want) <= 1e-6*max(1, math.Abs(want))
}

func mustPlan(t *testing.T, file string) *plan {
	t.Helper()
	p, err := planFile(filepath.Join("testdata", "plan", file))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func hopNamed(t *testing.T, p *plan, name string) hopPlan {
	t.Helper()
	for _, h := range p.Hops {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("no hop %s", name)
	return hopPlan{}
}

func flowNamed(t *testing.T, p *plan, name string) flowPlan {
	t.Helper()
	for _, f := range p.Flows {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no flow %s", name)
	return flowPlan{}
}

// TestPlanHand checks testdata/plan/hand.yaml against figures computed by
// hand. One 10 Mbit/s hop of 1000 p/s, headroom 0.8: link_mbit 10 =
// 1,250,000 B/s, target 1,000,000 B/s.
//
// orders (critical: 100 events, 64 KiB, 5 ms linger), 100/s of 500 B,
// retry 1.1 × fan-out 2 = 2.2, 5:1:
//
//	bound  = min(max(1e6·0.025/0.2 = 125,000, 16 KiB), 65,536) = 65,536
//	n      = min(100, ⌊65536/500⌋ = 131, 1 + 100·0.005 = 1.5) = 1.5
//	wire   = 1.5·501·0.2 = 150.3 B; cost 150.3 + 256 = 406.3 B
//	after  = 100/1.5·2.2 = 146.667 p/s, ·406.3 = 59,590.67 B/s = 476,725.3 bit/s
//	before = 100·500·2.2 = 110,000 B/s = 880 kbit/s, 220 p/s
//
// views (ingest: 1024 events, 512 KiB, 100 ms), 2000/s of 800 B, 8:1:
//
//	bound  = min(1e6·0.025/0.125 = 200,000, 524,288) = 200,000
//	n      = min(1024, ⌊200000/800⌋ = 250, 1 + 2000·0.1 = 201) = 201
//	wire   = 201·801·0.125 = 20,125.125 B; cost 20,381.125 B
//	after  = 2000/201 = 9.9502 p/s, 40,762,250/201 = 202,797.26 B/s
//	before = 1,600,000 B/s = 12.8 Mbit/s, 2000 p/s
//
// Hop wan: before 13.68 Mbit/s (1.368) and 2220 p/s (2.22): ρ 2.22, over
// capacity. After 262,387.94 B/s = 2,099,103.4 bit/s (0.2099) and
// 156.617 p/s (0.1566): ρ 0.2099, ok. Mean packet 1675.34 B = 1.34028 ms
// at 10 Mbit/s (> 1 ms per packet), μ = 746.11/s; W = ρ/(2μ(1−ρ)) =
// 0.2099/(2·746.11·0.7901) = 178 µs. Latency: orders 5 ms linger + 178 µs
// + max(406.3·8/1e7, 1 ms) = 6.178 ms; views min(100 ms, 200/2000) + 178
// µs + 20,381.125·8/1e7 = 116.483 ms. Recommended rates ⌈59,590.67⌉ =
// 59,591 and ⌈202,797.26⌉ = 202,798; critical ceil 1,250,000 − 202,798 =
// 1,047,202.
func TestPlanHand(t *testing.T) {
	p := mustPlan(t, "hand.yaml")
	if p.TargetBytesPerSec != 1_000_000 || p.Link != "wan" {
		t.Fatalf("link %s target %d", p.Link, p.TargetBytesPerSec)
	}
	o := flowNamed(t, p, "orders")
	if o.BatchBoundBytes != 65_536 || o.EventsPerBatch != 1.5 || !approx(o.BatchWireBytes, 150.3) ||
		!approx(o.After.PacketsPerSec, 146.666667) || !approx(o.After.BitsPerSec, 476_725.333333) ||
		!approx(o.Before.BitsPerSec, 880_000) || !approx(o.Before.PacketsPerSec, 220) ||
		!approx(*o.LatencySeconds, 0.006178042) || !*o.WithinBudget {
		t.Errorf("orders: %+v", o)
	}
	v := flowNamed(t, p, "views")
	if v.BatchBoundBytes != 200_000 || v.EventsPerBatch != 201 || !approx(v.BatchWireBytes, 20_125.125) ||
		!approx(v.After.PacketsPerSec, 2000.0/201) || !approx(v.After.BitsPerSec, 202_797.263682*8) ||
		!approx(v.Before.BitsPerSec, 12.8e6) || !approx(*v.LatencySeconds, 0.116483) || !*v.WithinBudget {
		t.Errorf("views: %+v", v)
	}
	h := hopNamed(t, p, "wan")
	if !approx(h.Before.Utilization, 2.22) || h.Before.Verdict != "over capacity" || h.Before.QueueWaitSeconds != nil {
		t.Errorf("wan before: %+v", h.Before)
	}
	if !approx(h.After.BitsPerSec, 2_099_103.44279) || !approx(h.After.PacketsPerSec, 156.616915) ||
		!approx(h.After.Utilization, 0.2099103) || h.After.Verdict != "ok" ||
		math.Abs(*h.After.QueueWaitSeconds-178e-6) > 0.5e-6 || !*h.WithinBudget {
		t.Errorf("wan after: %+v", h.After)
	}
	want := map[string][2]int64{"critical": {59_591, 1_047_202}, "ingest": {202_798, 1_250_000},
		"replication": {0, 1_250_000}, "backfill": {0, 1_250_000}}
	for _, c := range p.Classes {
		if w := want[c.Name]; c.RateBytesPerSec != w[0] || c.CeilBytesPerSec != w[1] {
			t.Errorf("class %s: rate %d ceil %d, want %v", c.Name, c.RateBytesPerSec, c.CeilBytesPerSec, w)
		}
	}
}

// TestPlanSeedContrast is the planning method's contrast on an inventory
// (testdata/plan/seed.yaml): 1 KB (1,000 B) events at 50,000/s and 200 KB
// payloads at 250/s. The seed's 5,000/s for the large payloads would be 1
// GB/s, 20× the bytes of the small flow; 250/s makes both 50 MB/s = 400
// Mbit/s, so that only the packet rates differ: 50,000 against 250 p/s,
// 200×. On two identical hops (1 Gbit/s, 60,000 p/s) the same bytes give
// different verdicts: edge-a runs at 50,000/60,000 = 83.3% (over the 0.8
// headroom, by packets alone), edge-b at 40%. After sluice's batches
// (ingest, 4:1, bound 524,288 B at the 1 Gbit/s link's 100 MB/s target:
// 524 and 2 events; see shaper's TestSeedContrast) the packet rates are
// 95.42 and 125 p/s and both hops run at 10.0%.
func TestPlanSeedContrast(t *testing.T) {
	p := mustPlan(t, "seed.yaml")
	a, b := hopNamed(t, p, "edge-a"), hopNamed(t, p, "edge-b")
	if a.Before.BitsPerSec != 400e6 || b.Before.BitsPerSec != 400e6 {
		t.Errorf("before: %v and %v bit/s, want 400 Mbit/s each", a.Before.BitsPerSec, b.Before.BitsPerSec)
	}
	if a.Before.PacketsPerSec != 50_000 || b.Before.PacketsPerSec != 250 {
		t.Errorf("before: %v and %v p/s", a.Before.PacketsPerSec, b.Before.PacketsPerSec)
	}
	if !approx(a.Before.Utilization, 50_000.0/60_000) || a.Before.Verdict != "over headroom" ||
		!approx(b.Before.Utilization, 0.4) || b.Before.Verdict != "ok" {
		t.Errorf("before verdicts: a %+v, b %+v", a.Before, b.Before)
	}
	if !approx(a.After.PacketsPerSec, 50_000.0/524) || !approx(b.After.PacketsPerSec, 125) {
		t.Errorf("after: %v and %v p/s", a.After.PacketsPerSec, b.After.PacketsPerSec)
	}
	if !approx(a.After.BitsPerSec, 50_000.0/524*131_387*8) || !approx(b.After.BitsPerSec, 125*100_256.5*8) ||
		a.After.Verdict != "ok" || b.After.Verdict != "ok" {
		t.Errorf("after: a %+v, b %+v", a.After, b.After)
	}
	if p.Hops[0].Name != "edge-a" || p.Hops[0].Rank != 1 { // 10.03% vs 10.03%: 12,536,927 > 12,532,062 B/s
		t.Errorf("bottleneck %s", p.Hops[0].Name)
	}
}

// TestPlanTwoHop: testdata/plan/twohop.yaml. The link defaults to the
// slowest hop, dsl (5 Mbit/s, target 500,000 B/s). history (backfill,
// 768 KiB, 4096 events, 1 s linger), 5000/s of 1000 B at 2:1: bound
// 500,000·0.025/0.5 = 25,000 B, n = 25, 200 p/s of 25·1001·0.5 + 256 =
// 12,768.5 B = 20.43 Mbit/s: dsl is over capacity whatever replication
// adds, its queue is unbounded and its 20 ms budget is missed. The
// recommendation guarantees replication its 204,296 B/s and backfill what
// is left of the target, 295,704 B/s, with a warning.
func TestPlanTwoHop(t *testing.T) {
	p := mustPlan(t, "twohop.yaml")
	if p.Link != "dsl" || p.TargetBytesPerSec != 500_000 {
		t.Fatalf("link %s target %d", p.Link, p.TargetBytesPerSec)
	}
	if p.Hops[0].Name != "dsl" || p.Hops[0].After.Verdict != "over capacity" ||
		p.Hops[0].After.QueueWaitSeconds != nil || *p.Hops[0].WithinBudget {
		t.Errorf("dsl: %+v", p.Hops[0])
	}
	h := flowNamed(t, p, "history")
	if h.EventsPerBatch != 25 || !approx(h.After.PacketsPerSec, 200) || !approx(h.After.BitsPerSec, 200*12_768.5*8) ||
		h.LatencySeconds != nil {
		t.Errorf("history: %+v", h)
	}
	// replica crosses wifi and dsl, fan-out 2: 1000/s of 1000 B at 10:1,
	// bound 500,000·0.025/0.1 = 125,000 → n = min(4096, 125, 501) = 125;
	// 8 batches/s × 2 = 16 p/s of 125·1001·0.1 + 256 = 12,768.5 B.
	r := flowNamed(t, p, "replica")
	if r.EventsPerBatch != 125 || !approx(r.After.PacketsPerSec, 16) || !approx(r.After.BitsPerSec, 16*12_768.5*8) {
		t.Errorf("replica: %+v", r)
	}
	// sampled: mean and p99 measured on the sample, ratio by zstd.
	data, err := os.ReadFile(filepath.Join("testdata", "plan", "sample.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	mean, _ := sampleSizes(data)
	s := flowNamed(t, p, "sampled")
	if s.RatioSource != "sample" || s.MeanBytes != mean || !(s.CompressionRatio > 2) || s.P99Bytes < s.MeanBytes {
		t.Errorf("sampled: %+v", s)
	}
	var found bool
	for _, c := range p.Classes {
		switch c.Name {
		case "replication":
			found = c.RateBytesPerSec == 204_296
		case "backfill":
			if c.RateBytesPerSec != 295_704 {
				t.Errorf("backfill rate %d", c.RateBytesPerSec)
			}
		}
	}
	if !found || len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "class backfill") {
		t.Errorf("classes %+v, warnings %q", p.Classes, p.Warnings)
	}
}

// TestPlanRecommendedConfigValidates: the recommended config of every
// inventory is a `sluice run --config` file: parseConfig and buildClasses
// accept it with the planned rates, and so does `sluice validate`.
func TestPlanRecommendedConfigValidates(t *testing.T) {
	for _, file := range []string{"hand.yaml", "seed.yaml", "twohop.yaml"} {
		t.Run(file, func(t *testing.T) {
			p := mustPlan(t, file)
			f, err := parseConfig([]byte(p.Config))
			if err != nil {
				t.Fatalf("parseConfig: %v\n%s", err, p.Config)
			}
			classes, err := buildClasses(f.Classes, int64(f.LinkMbit*1e6/8))
			if err != nil {
				t.Fatalf("buildClasses: %v\n%s", err, p.Config)
			}
			if len(classes) != len(p.Classes) {
				t.Fatalf("%d classes, planned %d", len(classes), len(p.Classes))
			}
			for i, c := range classes {
				if c.Name != p.Classes[i].Name || c.Rate.BytesPerSec != p.Classes[i].RateBytesPerSec || c.Ceil.BytesPerSec != p.Classes[i].CeilBytesPerSec {
					t.Errorf("class %d: %s %+v %+v, planned %+v", i, c.Name, c.Rate, c.Ceil, p.Classes[i])
				}
			}
			if f.Headroom != p.Headroom || f.LinkMbit*1e6 != p.LinkBitsPerSec {
				t.Errorf("link_mbit %v headroom %v", f.LinkMbit, f.Headroom)
			}
			out := filepath.Join(t.TempDir(), "sluice.yaml")
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"plan", "--write-config", out, filepath.Join("testdata", "plan", file)}, &stdout, &stderr); err != nil {
				t.Fatalf("plan: %v\n%s", err, stderr.String())
			}
			stdout.Reset()
			if err := run(context.Background(), []string{"validate", out}, &stdout, &stderr); err != nil {
				t.Fatalf("validate: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stdout.String(), ": ok (classes [critical ingest replication backfill]") {
				t.Errorf("validate: %s", stdout.String())
			}
		})
	}
}

func TestPlanCommandOutput(t *testing.T) {
	file := filepath.Join("testdata", "plan", "hand.yaml")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"plan", file}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	text := stdout.String()
	for _, want := range []string{
		"link wan at 10 Mbit/s, headroom 0.8 → target 8 Mbit/s",
		"1  wan  10 Mbit/s 1000 p/s  13.68 Mbit/s  2220   222.0%  2.099 Mbit/s  157    21.0%  ok       178µs        50ms ok",
		"views   ingest    2000",
		"M/D/1",
		"link_mbit: 10\nheadroom: 0.8\nclasses:\n  - name: critical\n    rate: 59591",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}

	// --json, after the file.
	stdout.Reset()
	if err := run(context.Background(), []string{"plan", file, "--json"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var got struct {
		Link string `json:"link"`
		Hops []struct {
			Name  string `json:"name"`
			Rank  int    `json:"rank"`
			After struct {
				Utilization float64  `json:"utilization"`
				Verdict     string   `json:"verdict"`
				Wait        *float64 `json:"queue_wait_seconds"`
			} `json:"after"`
		} `json:"hops"`
		Flows []struct {
			Name           string  `json:"name"`
			EventsPerBatch float64 `json:"events_per_batch"`
		} `json:"flows"`
		Config string `json:"recommended_config"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	if got.Link != "wan" || len(got.Hops) != 1 || got.Hops[0].Rank != 1 || got.Hops[0].After.Verdict != "ok" ||
		!approx(got.Hops[0].After.Utilization, 0.2099103) || got.Hops[0].After.Wait == nil ||
		len(got.Flows) != 2 || got.Flows[1].EventsPerBatch != 201 || !strings.Contains(got.Config, "rate: 202798") {
		t.Errorf("json: %+v", got)
	}

	// An unbounded queue is null in JSON and "unbounded" for people.
	stdout.Reset()
	if err := run(context.Background(), []string{"plan", "--json", filepath.Join("testdata", "plan", "twohop.yaml")}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), `"queue_wait_seconds": null`) {
		t.Errorf("no null wait:\n%s", stdout.String())
	}

	for _, args := range [][]string{{"plan"}, {"plan", "a.yaml", "b.yaml"}, {"plan", "--bogus", file}} {
		stderr.Reset()
		if err := run(context.Background(), args, &stdout, &stderr); err != errUsage {
			t.Errorf("%q: %v, want errUsage", args, err)
		}
	}
}

// TestPlanErrors: bad inventories name the file, the line and the key of
// every problem.
func TestPlanErrors(t *testing.T) {
	const hop = "hops:\n  - name: wan\n    bandwidth: 10Mbit\n"
	const flow = "flows:\n  - name: a\n    class: ingest\n    events_per_sec: 10\n    hops: [wan]\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"testdata bad", "", []string{
			"line 1: headroom: 1.5: want a fraction in (0, 1]",
			`line 2: link: "nowhere": no such hop`,
			`line 5: hops[0].bandwidth: "100": want a rate with a unit`,
			`line 6: hops[1].name: "wan": duplicate hop name`,
			"line 8: hops[1].packets_per_sec: -1: want ≥ 0",
			`line 11: flows[0].class: "bulk": want one of critical, ingest, replication, backfill`,
			"line 12: flows[0].events_per_sec: 0: want the peak rate, > 0",
			"line 13: flows[0].payload: p99 10 B < mean 1000 B",
			"line 14: flows[0].retry: 0.5: want an amplification ≥ 1",
			`line 15: flows[0].hops[1]: "lan": no such hop`,
		}},
		{"unknown key and type", "", []string{"line 4: field packet_per_sec not found", "line 8: cannot unmarshal !!str `lots` into float64"}},
		{"empty", "", []string{"empty inventory"}},
		{"no payload", hop + flow, []string{"line 5: flows[0].payload: mean: missing"}},
		{"ratio and sample", hop + flow + "    payload: {mean: 10, p99: 20}\n    compression_ratio: 2\n    sample: x.ndjson\n",
			[]string{"line 11: flows[0].sample: give compression_ratio or sample, not both"}},
		{"missing sample", hop + flow + "    payload: {mean: 10, p99: 20}\n    sample: nope.ndjson\n", []string{"line 10: flows[0].sample: open ", "nope.ndjson"}},
		{"ratio below 1", hop + flow + "    payload: {mean: 10, p99: 20}\n    compression_ratio: 0.5\n", []string{"line 10: flows[0].compression_ratio: 0.5: want raw/compressed ≥ 1"}},
		{"second document", hop + flow + "    payload: {mean: 10, p99: 20}\n---\nhops: []\n", []string{"line 10: a second YAML document"}},
		{"no flows", hop, []string{"flows: none"}},
		{"percent bandwidth", "hops:\n  - name: wan\n    bandwidth: 10%\n" + flow + "    payload: {mean: 10, p99: 20}\n", []string{`line 3: hops[0].bandwidth: "10%": want a rate with a unit`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var path string
			switch tc.name {
			case "testdata bad":
				path = filepath.Join("testdata", "plan", "bad.yaml")
			case "unknown key and type":
				path = filepath.Join("testdata", "plan", "unknown.yaml")
			default:
				path = filepath.Join(t.TempDir(), "flows.yaml")
				if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := planFile(path)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "plan "+path+": ") {
				t.Errorf("error does not name the file: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestPlanUsesShapersBatchBound: the plan's batch bound is the node's
// (aggregator's batchBytes calls the same shaper.BatchRawBytes with the
// same constants).
func TestPlanUsesShapersBatchBound(t *testing.T) {
	p := mustPlan(t, "hand.yaml")
	v := flowNamed(t, p, "views")
	if got := shaper.BatchRawBytes(p.TargetBytesPerSec, shaper.DefaultBatchAirtime, 1.0/8, shaper.MinBatchRawBytes, 512<<10); got != v.BatchBoundBytes {
		t.Errorf("bound %d, shaper says %d", v.BatchBoundBytes, got)
	}
}
