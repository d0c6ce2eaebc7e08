package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	planmodel "github.com/sluicehq/sluice/plan"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
)

// sampleSizes returns the mean and the p99 (nearest rank) of an NDJSON
// sample's event sizes, as the plan measures them.
func sampleSizes(data []byte) (mean, p99 float64) { return planmodel.SampleSizes(sampleLines(data)) }

// sampleRatio is the ratio the plan measures on an NDJSON sample at level
// in batches of events events.
func sampleRatio(data []byte, level shaper.CompressLevel, events int) (float64, error) {
	return planmodel.SampleRatio(sampleLines(data), level, events)
}

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
// 1,250,000 B/s, target T = 1,000,000 B/s.
//
// Both classes are compression auto, fastest..better (the defaults), and
// the plan runs the node's policy (shaper.ChooseCompression) on 1 core: a
// given ratio r is fastest's; the priors make default 1.04 r and better
// 1.12 r, at 400e6, 360e6 and 180e6 raw B/s a core. Each level delivers
// D = min(T·ratio, speed); the densest level within 5% of the best D is
// chosen, and its batches are ≤ 100 ms of air time at T.
//
// orders (critical: 100 events, 64 KiB, 5 ms linger), 100/s of 500 B,
// retry 1.1 × fan-out 2 = 2.2, 5:1 at fastest:
//
//	D      = 5e6, 5.2e6, 5.6e6 (link-bound): better, ratio 5.6
//	bound  = min(max(1e6·0.1·5.6 = 560,000, 16 KiB), 65,536) = 65,536
//	n      = min(100, ⌊65536/500⌋ = 131, 1 + 100·0.005 = 1.5) = 1.5
//	wire   = 1.5·501/5.6 = 134.196 B; cost 134.196 + 519 = 653.196 B
//	after  = 100/1.5·2.2 = 146.667 p/s, ·653.196 = 95,802.14 B/s = 766,417.1 bit/s
//	before = 100·500·2.2 = 110,000 B/s = 880 kbit/s, 220 p/s
//
// views (ingest: 1024 events, 512 KiB, 100 ms), 2000/s of 800 B, 8:1 at
// fastest:
//
//	D      = 8e6, 8.32e6, 8.96e6: better, ratio 8.96
//	bound  = min(1e6·0.1·8.96 = 896,000, 524,288) = 524,288
//	n      = min(1024, ⌊524288/800⌋ = 655, 1 + 2000·0.1 = 201) = 201
//	wire   = 201·801/8.96 = 17,968.862 B; cost 18,487.862 B
//	after  = 2000/201 = 9.9502 p/s, 183,958.82 B/s
//	before = 1,600,000 B/s = 12.8 Mbit/s, 2000 p/s
//
// Hop wan: before 13.68 Mbit/s (1.368) and 2220 p/s (2.22): ρ 2.22, over
// capacity. After 279,760.96 B/s = 2,238,087.7 bit/s (0.2238) and
// 156.617 p/s (0.1566): ρ 0.2238, ok. Mean packet 1786.28 B = 1.42902 ms
// at 10 Mbit/s (> 1 ms per packet), μ = 699.78/s; W = ρ/(2μ(1−ρ)) =
// 0.2238/(2·699.78·0.7762) = 206.0 µs. Latency: orders 5 ms linger +
// 206.0 µs + max(653.2·8/1e7, 1 ms) = 6.2060 ms; views min(100 ms,
// 200/2000) + 206.0 µs + 18,487.862·8/1e7 = 114.996 ms. Recommended rates
// ⌈95,802.14⌉ = 95,803 and ⌈183,958.82⌉ = 183,959; critical ceil
// 1,250,000 − 183,959 = 1,066,041.
//
// The per-batch cost, 519 B, is wire.MsgOverhead for the plan's defaults:
// subject "sluice", a 64-byte node name, the longest default class name
// (replication).
func TestPlanHand(t *testing.T) {
	p := mustPlan(t, "hand.yaml")
	if p.TargetBytesPerSec != 1_000_000 || p.Link != "wan" {
		t.Fatalf("link %s target %d", p.Link, p.TargetBytesPerSec)
	}
	o := flowNamed(t, p, "orders")
	if o.CompressionLevel != "better" || !o.CompressionAuto || o.Bottleneck != "link" || !approx(o.CompressionRatio, 5.6) ||
		o.BatchBoundBytes != 65_536 || o.EventsPerBatch != 1.5 || !approx(o.BatchWireBytes, 751.5/5.6) ||
		!approx(o.After.PacketsPerSec, 146.666667) || !approx(o.After.BitsPerSec, 766_417.142857) ||
		!approx(o.Before.BitsPerSec, 880_000) || !approx(o.Before.PacketsPerSec, 220) ||
		math.Abs(*o.LatencySeconds-0.0062060) > 1e-7 || !*o.WithinBudget {
		t.Errorf("orders: %+v", o)
	}
	v := flowNamed(t, p, "views")
	if v.CompressionLevel != "better" || !approx(v.CompressionRatio, 8.96) ||
		v.BatchBoundBytes != 524_288 || v.EventsPerBatch != 201 || !approx(v.BatchWireBytes, 161_001/8.96) ||
		!approx(v.After.PacketsPerSec, 2000.0/201) || !approx(v.After.BitsPerSec, 183_958.821962*8) ||
		!approx(v.Before.BitsPerSec, 12.8e6) || math.Abs(*v.LatencySeconds-0.114996) > 1e-6 || !*v.WithinBudget {
		t.Errorf("views: %+v", v)
	}
	h := hopNamed(t, p, "wan")
	if !approx(h.Before.Utilization, 2.22) || h.Before.Verdict != "over capacity" || h.Before.QueueWaitSeconds != nil {
		t.Errorf("wan before: %+v", h.Before)
	}
	if !approx(h.After.BitsPerSec, 2_238_087.71855) || !approx(h.After.PacketsPerSec, 156.616915) ||
		!approx(h.After.Utilization, 0.2238087718) || h.After.Verdict != "ok" ||
		math.Abs(*h.After.QueueWaitSeconds-206.0e-6) > 0.5e-6 || !*h.WithinBudget {
		t.Errorf("wan after: %+v", h.After)
	}
	want := map[string][2]int64{"critical": {95_803, 1_066_041}, "ingest": {183_959, 1_250_000},
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
// 95.42 and 125 p/s and both hops run at 10.0%. Each batch costs 519 B
// besides its body (wire.MsgOverhead for the plan's defaults). The
// compression policy (1 core) keeps fastest here: the link takes 1e8·4 =
// 4e8 raw B/s, what one core compresses at fastest, while default
// delivers min(1e8·4.16, 3.6e8) = 3.6e8 and better 1.8e8, both more than
// 5% below; its batches of ≤ 100 ms at the target, 1e8·0.1·4 = 4e7 B, are
// bounded by ingest's 524,288 as before.
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
	for _, f := range p.Flows {
		if f.CompressionLevel != "fastest" || !f.CompressionAuto || f.CompressionRatio != 4 || f.BatchBoundBytes != 524_288 {
			t.Errorf("%s: %+v", f.Name, f)
		}
	}
	if !approx(a.After.PacketsPerSec, 50_000.0/524) || !approx(b.After.PacketsPerSec, 125) {
		t.Errorf("after: %v and %v p/s", a.After.PacketsPerSec, b.After.PacketsPerSec)
	}
	if !approx(a.After.BitsPerSec, 50_000.0/524*131_650*8) || !approx(b.After.BitsPerSec, 125*100_519.5*8) ||
		a.After.Verdict != "ok" || b.After.Verdict != "ok" {
		t.Errorf("after: a %+v, b %+v", a.After, b.After)
	}
	if p.Hops[0].Name != "edge-b" || p.Hops[0].Rank != 1 { // 10.05% vs 10.05%: 12,564,938 > 12,562,023 B/s
		t.Errorf("bottleneck %s", p.Hops[0].Name)
	}
}

// TestPlanTwoHop: testdata/plan/twohop.yaml. The link defaults to the
// slowest hop, dsl (5 Mbit/s, target T = 500,000 B/s). Both classes on it
// are compression auto, fastest..better, on 1 core: a given ratio r is
// fastest's, default 1.04 r, better 1.12 r, and at T a level delivers T·
// ratio raw B/s (far below any level's speed), so the policy picks better
// and cuts batches of ≤ 100 ms at T. history (backfill, 768 KiB, 4096
// events, 1 s linger), 5000/s of 1000 B at 2:1: better 2.24, bound
// 500,000·0.1·2.24 = 112,000 B, n = min(4096, 112, 5001) = 112, 5000/112
// = 44.643 p/s of 112·1001/2.24 + 519 = 50,569 B = 2,257,544.6 B/s: dsl is
// over capacity whatever replication adds, its queue is unbounded and its
// 20 ms budget is missed. The recommendation guarantees replication its
// ⌈180,821.86⌉ = 180,822 B/s and backfill what is left of the target,
// 319,178 B/s, with a warning.
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
	if h.CompressionLevel != "better" || !approx(h.CompressionRatio, 2.24) || h.BatchBoundBytes != 112_000 ||
		h.EventsPerBatch != 112 || !approx(h.After.PacketsPerSec, 5000.0/112) || !approx(h.After.BitsPerSec, 5000.0/112*50_569*8) ||
		h.LatencySeconds != nil {
		t.Errorf("history: %+v", h)
	}
	// replica crosses wifi and dsl, fan-out 2: 1000/s of 1000 B at 10:1
	// (better: 11.2), bound min(500,000·0.1·11.2 = 560,000, 786,432) =
	// 560,000 → n = min(4096, 560, 1 + 1000·0.5 = 501) = 501; 1000/501
	// batches/s × 2 = 3.992 p/s of 501·1001/11.2 + 519 = 45,295.875 B.
	r := flowNamed(t, p, "replica")
	if r.CompressionLevel != "better" || r.BatchBoundBytes != 560_000 || r.EventsPerBatch != 501 ||
		!approx(r.After.PacketsPerSec, 2000.0/501) || !approx(r.After.BitsPerSec, 2000.0/501*45_295.875*8) {
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
			found = c.RateBytesPerSec == 180_822
		case "backfill":
			if c.RateBytesPerSec != 319_178 {
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
			// twohop.yaml is over capacity on dsl (its point): the
			// config is written only when asked to anyway.
			if err := run(context.Background(), []string{"plan", "--allow-over-capacity", "--write-config", out, filepath.Join("testdata", "plan", file)}, &stdout, &stderr); err != nil {
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
		// The rtt column is "-": hand.yaml gives none.
		"1  wan  10 Mbit/s 1000 p/s  -    13.68 Mbit/s  2220   222.0%  2.238 Mbit/s  157    22.4%  ok       206µs        50ms ok",
		"orders  critical  100       500 B / 1.953 KiB  2.2             better (auto, link)  5.60 (given)  1.5",
		"views   ingest    2000",
		"M/D/1",
		"Spool at peak: wan sends all of its 2.238 Mbit/s demand (target 8 Mbit/s): the spool does not grow.",
		"# bytes/s on the wire (compressed batches + 519 B each), from peak demand.\n",
		"link_mbit: 10\nheadroom: 0.8\nclasses:\n  - name: critical\n    rate: 95803B/s",
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
			Level          string  `json:"compression_level"`
		} `json:"flows"`
		Config string `json:"recommended_config"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	if got.Link != "wan" || len(got.Hops) != 1 || got.Hops[0].Rank != 1 || got.Hops[0].After.Verdict != "ok" ||
		!approx(got.Hops[0].After.Utilization, 0.2238087718) || got.Hops[0].After.Wait == nil ||
		len(got.Flows) != 2 || got.Flows[1].EventsPerBatch != 201 || got.Flows[1].Level != "better" ||
		!strings.Contains(got.Config, "rate: 183959") {
		t.Errorf("json: %+v", got)
	}

	// An unbounded queue is null in JSON and "unbounded" for people.
	// twohop.yaml is over capacity: the JSON is printed, without the
	// config, and the command fails.
	stdout.Reset()
	err := run(context.Background(), []string{"plan", "--json", filepath.Join("testdata", "plan", "twohop.yaml")}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "over capacity at peak: hop dsl at 390.1%") {
		t.Errorf("over capacity: %v", err)
	}
	for _, want := range []string{`"queue_wait_seconds": null`, `"over_capacity": [` + "\n" + `    "dsl"` + "\n  ]", `"recommended_config": ""`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("no %s:\n%s", want, stdout.String())
		}
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
		{"unknown key and type", "", []string{"line 4: field packet_per_sec not found in hops[0]\nline 8: flows[0].events_per_sec: want a number, got `lots`"}},
		{"empty", "", []string{"empty inventory"}},
		{"no payload", hop + flow, []string{"line 5: flows[0].payload: mean: missing"}},
		{"ratio and sample", hop + flow + "    payload: {mean: 10, p99: 20}\n    compression_ratio: 2\n    sample: x.ndjson\n",
			[]string{"line 11: flows[0].sample: give compression_ratio or sample, not both"}},
		{"missing sample", hop + flow + "    payload: {mean: 10, p99: 20}\n    sample: nope.ndjson\n", []string{"line 10: flows[0].sample: open ", "nope.ndjson"}},
		{"ratio below 1", hop + flow + "    payload: {mean: 10, p99: 20}\n    compression_ratio: 0.5\n", []string{"line 10: flows[0].compression_ratio: 0.5: want raw/compressed ≥ 1"}},
		{"second document", hop + flow + "    payload: {mean: 10, p99: 20}\n---\nhops: []\n", []string{"line 10: a second YAML document"}},
		{"no flows", hop, []string{"flows: none"}},
		{"negative cores", "cores: -1\n" + hop + flow + "    payload: {mean: 10, p99: 20}\n", []string{"line 1: cores: -1: want the cores the node compresses on, > 0 (default 1)"}},
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

// TestPlanUsesShapersBatchBound: the plan's level and batch bound are the
// node's: aggregator's compressPolicy.batchBytes calls
// shaper.ChooseCompression with the link's target, the class's bounds and
// batch.max_bytes, shaper.DefaultBulkAirtime and shaper.MinBatchRawBytes
// (a fixed level, shaper.BatchRawBytes at DefaultBatchAirtime); the plan
// gives it views' ratio (8, at fastest, the others by the priors), the
// link as found and full, and 1 core.
func TestPlanUsesShapersBatchBound(t *testing.T) {
	p := mustPlan(t, "hand.yaml")
	v := flowNamed(t, p, "views")
	var known [shaper.CompressLevels]shaper.LevelEstimate
	known[shaper.CompressFastest] = shaper.LevelEstimate{Ratio: 8, Measured: true}
	c := shaper.ChooseCompression(shaper.CompressInputs{LinkBytesPerSec: p.TargetBytesPerSec, LinkFull: true, Cores: 1,
		Min: shaper.CompressFastest, Max: shaper.CompressBetter, Current: shaper.CompressFastest, Levels: shaper.EstimateLevels(known),
		Airtime: shaper.DefaultBulkAirtime, MinBatchBytes: shaper.MinBatchRawBytes, MaxBatchBytes: 512 << 10})
	if c.BatchBytes != v.BatchBoundBytes || c.Level.String() != v.CompressionLevel || string(c.Bottleneck) != v.Bottleneck {
		t.Errorf("bound %d at %s (%s), shaper says %d at %s (%s)", v.BatchBoundBytes, v.CompressionLevel, v.Bottleneck, c.BatchBytes, c.Level, c.Bottleneck)
	}
	r := flowNamed(t, mustPlan(t, "custom.yaml"), "readings") // telemetry: best, fixed, 32 KiB
	if got := shaper.BatchRawBytes(p.TargetBytesPerSec, shaper.DefaultBatchAirtime, 1.0/4, shaper.MinBatchRawBytes, 32<<10); got != r.BatchBoundBytes {
		t.Errorf("fixed level: bound %d, shaper says %d", r.BatchBoundBytes, got)
	}
}

// loadRecommended writes p's recommended config to a file and loads it as
// `sluice run --config` and `sluice validate` do: flags, load, resolve.
func loadRecommended(t *testing.T, p *plan) (*nodeConfig, *resolved) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(p.Config), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("sluice run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c nodeConfig
	c.flags(fs)
	if err := fs.Parse([]string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	if err := c.load(fs); err != nil {
		t.Fatalf("load: %v\n%s", err, p.Config)
	}
	r, err := c.resolve()
	if err != nil {
		t.Fatalf("resolve: %v\n%s", err, p.Config)
	}
	return &c, r
}

// TestPlanCustomClasses: testdata/plan/custom.yaml changes ingest (100
// events a batch, a gentler plan) and adds telemetry (500 events, 32 KiB,
// 250 ms, zstd best, …). Link wan, 10 Mbit/s, target 1,000,000 B/s.
//
// views (ingest: compression auto, fastest..better), 2000/s of 800 B at
// 8:1: the policy picks better (8.96) and bound 524,288 as in hand.yaml,
// but n = min(100, 655, 201) = 100; wire 100·801/8.96 = 8,939.732 B, cost
// 9,458.732 B, 20 p/s, 189,174.64 B/s.
//
// readings (telemetry: a fixed level, best, so batches of ≤ 25 ms at the
// target as before the policy, and the given ratio is best's), 1000/s of
// 200 B at 4:1: bound min(max(1e6·0.025/0.25 = 100,000, 16 KiB), 32,768) =
// 32,768; n = min(500, ⌊32768/200⌋ = 163, 1 + 1000·0.25 = 251) = 163;
// wire 163·201/4 = 8,190.75 B, cost 8,709.75 B; 1000/163 p/s, 53,434.05
// B/s.
//
// Rates: critical 0, ingest ⌈189,174.64⌉ = 189,175, replication 0,
// backfill 0, telemetry ⌈53,434.05⌉ = 53,435; critical ceil 1,250,000 −
// 242,610 = 1,007,390.
func TestPlanCustomClasses(t *testing.T) {
	p := mustPlan(t, "custom.yaml")
	v := flowNamed(t, p, "views")
	if v.CompressionLevel != "better" || v.BatchBoundBytes != 524_288 || v.EventsPerBatch != 100 || !approx(v.BatchWireBytes, 80_100/8.96) ||
		!approx(v.After.PacketsPerSec, 20) || !approx(v.After.BitsPerSec, 20*(80_100/8.96+519)*8) {
		t.Errorf("views: %+v", v)
	}
	r := flowNamed(t, p, "readings")
	if r.CompressionLevel != "best" || r.CompressionAuto || r.CompressionRatio != 4 || r.BatchBoundBytes != 32_768 || r.EventsPerBatch != 163 || !approx(r.BatchWireBytes, 8_190.75) ||
		!approx(r.After.PacketsPerSec, 1000.0/163) || !approx(r.After.BitsPerSec, 1000.0/163*8_709.75*8) {
		t.Errorf("readings: %+v", r)
	}
	// local's sample is compressed at telemetry's fixed level (best), in
	// its batches, not at the default classes' fastest.
	data, err := os.ReadFile(filepath.Join("testdata", "plan", "sample.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	l := flowNamed(t, p, "local")
	best, err := sampleRatio(data, shaper.CompressBest, int(l.EventsPerBatch))
	if err != nil {
		t.Fatal(err)
	}
	fastest, _ := sampleRatio(data, shaper.CompressFastest, int(l.EventsPerBatch))
	if l.CompressionLevel != "best" || l.CompressionAuto || l.CompressionRatio != best || best == fastest {
		t.Errorf("local: %s ratio %v; at best %v, at fastest %v", l.CompressionLevel, l.CompressionRatio, best, fastest)
	}

	want := []classPlan{
		{Name: "critical", RateBytesPerSec: 0, CeilBytesPerSec: 1_007_390},
		{Name: "ingest", RateBytesPerSec: 189_175, CeilBytesPerSec: 1_250_000},
		{Name: "replication", RateBytesPerSec: 0, CeilBytesPerSec: 1_250_000},
		{Name: "backfill", RateBytesPerSec: 0, CeilBytesPerSec: 1_250_000},
		{Name: "telemetry", RateBytesPerSec: 53_435, CeilBytesPerSec: 1_250_000},
	}
	if len(p.Classes) != len(want) {
		t.Fatalf("classes %+v", p.Classes)
	}
	for i, w := range want {
		if c := p.Classes[i]; c.Name != w.Name || c.RateBytesPerSec != w.RateBytesPerSec || c.CeilBytesPerSec != w.CeilBytesPerSec {
			t.Errorf("class %d: %+v, want %+v", i, c, w)
		}
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %q", p.Warnings)
	}
}

// TestPlanCustomClassesConfig: custom.yaml's recommended config, loaded
// as `sluice run --config` loads it, is the inventory's classes with the
// plan's rates and ceilings: telemetry whole, ingest with its two
// changes, the other defaults untouched; and priority.Validate holds.
func TestPlanCustomClassesConfig(t *testing.T) {
	p := mustPlan(t, "custom.yaml")
	c, r := loadRecommended(t, p)
	linkBps := int64(c.LinkMbit * 1e6 / 8)
	if linkBps != 1_250_000 || c.Headroom != 0.8 {
		t.Errorf("link %d B/s headroom %v", linkBps, c.Headroom)
	}
	want := priority.Defaults(linkBps)
	want[1].Batch.MaxEvents = 100
	want[1].Plan[1] = priority.Action{Kind: priority.ActionNone}
	want[1].Plan[2] = priority.Action{Kind: priority.ActionDropFields, MinFieldPriority: 10}
	want = append(want, priority.Class{
		Name: "telemetry", Priority: 2, Weight: 2, MaxAge: time.Hour,
		Batch:       priority.Batch{MaxEvents: 500, MaxBytes: 32 << 10, Linger: 250 * time.Millisecond},
		Compression: priority.CompressionBest, Overflow: priority.OverflowDropOldest, MaxBytes: 1 << 30,
		Fields: []priority.FieldRule{{Path: "debug", Priority: 0}, {Path: "context.*", Priority: 10}},
		Plan: [priority.Levels]priority.Action{{Kind: priority.ActionNone}, {Kind: priority.ActionDropFields, MinFieldPriority: 10},
			{Kind: priority.ActionDefer}, {Kind: priority.ActionDefer}},
	})
	for i := range want {
		want[i].Rate.BytesPerSec, want[i].Ceil.BytesPerSec = p.Classes[i].RateBytesPerSec, p.Classes[i].CeilBytesPerSec
	}
	if !reflect.DeepEqual(r.classes, want) {
		t.Errorf("classes of the recommended config\n%+v\nwant\n%+v\n%s", r.classes, want, p.Config)
	}
	if err := priority.Validate(r.classes, priority.Rate{BytesPerSec: linkBps}); err != nil {
		t.Error(err)
	}
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := run(context.Background(), []string{"plan", "--write-config", out, filepath.Join("testdata", "plan", "custom.yaml")}, &stdout, &stderr); err != nil {
		t.Fatalf("plan: %v\n%s", err, stderr.String())
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"validate", out}, &stdout, &stderr); err != nil {
		t.Fatalf("validate: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), ": ok (classes [critical ingest replication backfill telemetry]") {
		t.Errorf("validate: %s", stdout.String())
	}
}

// TestPlanCustomClassEdges: a critical custom class; a name YAML would
// read as null unquoted; a field path with "${" (literal in the inventory,
// expanded in the config file unless escaped); rates the plan replaces,
// with a warning; and headroom 1, where the others' guarantees must leave
// the critical ceilings above 0.
func TestPlanCustomClassEdges(t *testing.T) {
	const inv = `headroom: 1
hops:
  - {name: wan, bandwidth: 1Mbit}
classes:
  - name: "null"
    critical: true
    rate: 10%
    fields: [{path: "a.${HOME}", priority: 3}, {path: "x y", priority: 1}]
    plan: [none, none, none, " throttle"]
  - name: critical
    ceil: 1KB/s
flows:
  - {name: a, class: ingest, events_per_sec: 1000, payload: {mean: 1KB, p99: 1KB}, hops: [wan]}
  - {name: b, class: "null", events_per_sec: 1, payload: {mean: 100, p99: 100}, hops: [wan]}
`
	path := filepath.Join(t.TempDir(), "flows.yaml")
	if err := os.WriteFile(path, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := planFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", "/expanded")
	_, r := loadRecommended(t, p)
	if len(r.classes) != 5 {
		t.Fatalf("classes %+v", r.classes)
	}
	n := r.classes[4]
	if n.Name != "null" || !n.Critical || n.Fields[0].Path != "a.${HOME}" || n.Fields[1].Path != "x y" ||
		n.Plan[3].Kind != priority.ActionThrottle || n.Rate.BytesPerSec != p.Classes[4].RateBytesPerSec ||
		n.Ceil.BytesPerSec != p.Classes[4].CeilBytesPerSec || n.Ceil.BytesPerSec <= 0 {
		t.Errorf("class null: %+v\n%s", n, p.Config)
	}
	if c := r.classes[0]; c.Ceil.BytesPerSec <= 0 || c.Ceil.BytesPerSec != p.Classes[0].CeilBytesPerSec {
		t.Errorf("critical: %+v", c)
	}
	if err := priority.Validate(r.classes, priority.Rate{BytesPerSec: 125_000}); err != nil {
		t.Error(err)
	}
	var warned int
	for _, w := range p.Warnings {
		if strings.Contains(w, "replaced by the plan's") {
			warned++
		}
	}
	if warned != 2 {
		t.Errorf("warnings %q", p.Warnings)
	}
}

// TestPlanClassErrors: the inventory's classes are checked as the config
// file's are, every problem with its line.
func TestPlanClassErrors(t *testing.T) {
	const head = "hops:\n  - {name: wan, bandwidth: 10Mbit}\nflows:\n  - {name: a, class: ingest, events_per_sec: 1, payload: {mean: 1, p99: 1}, hops: [wan]}\n"
	for _, tc := range []struct {
		name, classes string
		want, not     []string
	}{
		{"unknown key", "  - name: x\n    bogus: 1\n", []string{"line 7: field bogus not found"}, nil},
		{"wrong type", "  - name: x\n    priority: high\n", []string{"line 7: classes[0].priority: want a whole number, got `high`"}, []string{"!!", "into int"}},
		{"bad plan", "  - name: x\n    plan: [none]\n", []string{"line 6: classes[0] (x): plan: 1 actions"}, nil},
		{"bad size", "  - name: x\n    batch: {max_bytes: lots}\n", []string{"line 6: classes[0] (x): batch.max_bytes:"}, nil},
		{"bad name", "  - name: a b\n", []string{`line 6: classes[0].name: "a b": want 1-64 bytes`}, nil},
		{"empty name", "  - priority: 1\n", []string{"line 6: classes[0] (): name is empty"}, nil},
		{"bad rate", "  - name: x\n    rate: fast\n", []string{`line 7: classes[0].rate: "fast": want a rate`}, nil},
		{"validate", "  - name: x\n  - name: y\n    priority: 9\n    compression: max\n",
			[]string{`line 7: classes[1] (y): priority: 9: want 0 (served first) to 7`, `line 7: classes[1] (y): compression: "max": want auto, fastest, default, better or best`}, []string{"priority: invalid"}},
		{"duplicate", "  - name: x\n  - name: x\n", []string{`line 7: classes[1] (x): the same name as classes[0] (line 6)`}, nil},
		{"unknown class", "  - name: x\nflows:\n  - {name: a, class: bulk, events_per_sec: 1, payload: {mean: 1, p99: 1}, hops: [wan]}\n",
			[]string{`line 8: flows[0].class: "bulk": want one of critical, ingest, replication, backfill, x`}, nil},
		// A flow of a broken class: only the class's error.
		{"broken class", "  - name: bulk\n    plan: [none]\nflows:\n  - {name: a, class: bulk, events_per_sec: 1, payload: {mean: 1, p99: 1}, hops: [wan]}\n",
			[]string{"line 6: classes[0] (bulk): plan: 1 actions"}, []string{"flows[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yml := head + "classes:\n" + tc.classes
			if tc.name == "unknown class" || tc.name == "broken class" {
				yml = "hops:\n  - {name: wan, bandwidth: 10Mbit}\n\n\nclasses:\n" + tc.classes
			}
			inv, lines, err := parseInventory([]byte(yml))
			if err == nil {
				_, err = evaluate(inv, lines, "flows.yaml")
			}
			if err == nil {
				t.Fatalf("no error:\n%s", yml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v\n%s", w, err, yml)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error has %q:\n%v", n, err)
				}
			}
		})
	}
}

// TestPlanOverload: testdata/plan/overload.yaml, worked by hand. Link wan,
// 10 Mbit/s (C = 1,250,000 B/s), no packet limit, rtt 40 ms; target T =
// 1,000,000 B/s. Each batch costs 519 B besides its body
// (wire.MsgOverhead for the plan's defaults). Every class is compression
// auto, fastest..better, on 1 core (see TestPlanHand for the policy's
// arithmetic).
//
// orders (critical), 100/s of 500 B at 5:1 (better: 5.6): n = min(100,
// 131, 1.5) = 1.5, cost 1.5·501/5.6 + 519 = 653.196 B, 66.667 p/s,
// 43,546.43 B/s. views (ingest) as in hand.yaml: better, 9.9502 p/s of
// 18,487.862 B, 183,958.82 B/s. bulk (backfill: 4096 events, 768 KiB,
// 1 s), 950/s of 1000 B, no compression: ratio 1 at every level, so every
// level delivers T and none is denser: fastest, in batches of ≤ 100 ms at
// T: bound min(max(1e6·0.1, 16 KiB), 768 KiB) = 100,000, n = min(4096,
// 100, 951) = 100, cost 100,100 + 519 = 100,619 B, 9.5 p/s, 955,880.5
// B/s. Demand D = 1,183,385.75 B/s, 94.7% of the link: over headroom, not
// over capacity (exit 0).
//
// Rates: critical ⌈43,546.43⌉ = 43,547, ingest ⌈183,958.82⌉ = 183,959,
// replication 0, backfill what the target leaves, 1,000,000 − 43,547 −
// 183,959 = 772,494 (with a warning); critical ceil 1,250,000 − 956,453 =
// 293,547.
//
// The spool: at level 0 backfill (throttle: borrow only) gets T − 43,546.43
// − 183,958.82 = 772,494.75 of its 955,880.5 B/s, so the backlog grows and
// the node settles at level 2: ingest drop_fields:20 (its guarantee holds),
// replication and backfill throttled (their plans defer; the link is
// healthy). The same shares: backfill keeps 183,385.75/955,880.5 = 19.19%
// of its 950,000 event bytes/s, 182,257.6 B/s: its 1 GiB cap in 5,891 s,
// spool.max_bytes 10 GiB in 58,913 s (16h21m53s).
//
// The link carries what is sent: 1,000,000 B/s (ρ 0.8) in 66.667 + 9.9502
// + 9.5·0.80815 = 84.294 batches/s, mean 11,863.2 B, s = 9.4906 ms, W =
// 0.8/(2μ·0.2) = 18.981 ms. Latencies: orders 5 ms + W + 0.5226 ms + 20 ms
// (rtt/2) = 44.50 ms; views 100 ms + W + 14.790 ms + 20 ms = 153.77 ms;
// bulk unbounded (its class's spool grows).
func TestPlanOverload(t *testing.T) {
	p := mustPlan(t, "overload.yaml")
	if len(p.OverCapacity) != 0 {
		t.Errorf("over capacity: %q", p.OverCapacity)
	}
	const (
		orderCost = 751.5/5.6 + 519
		viewCost  = 161_001/8.96 + 519
		orders    = 100 / 1.5 * orderCost
		views     = 2000.0 / 201 * viewCost
		bulk      = 9.5 * 100_619.0
	)
	h := hopNamed(t, p, "wan")
	if !approx(h.After.BitsPerSec, (orders+views+bulk)*8) || h.After.Verdict != "over headroom" || h.RTTSeconds != 0.04 {
		t.Errorf("wan after: %+v", h)
	}
	backfillSent := 1e6 - orders - views
	sentMsgs := 100/1.5 + 2000.0/201 + 9.5*backfillSent/bulk
	s := 1e6 / sentMsgs * 8 / 1e7
	mu := 1 / s
	w := 0.8 / (2 * mu * 0.2)
	if h.Sent == nil || !approx(h.Sent.BitsPerSec, 8e6) || !approx(h.Sent.PacketsPerSec, sentMsgs) ||
		!approx(h.Sent.Utilization, 0.8) || math.Abs(*h.Sent.QueueWaitSeconds-w) > 1e-9 {
		t.Errorf("wan sent: %+v, want W %v", h.Sent, w)
	}
	if math.Abs(w-0.018981) > 1e-6 {
		t.Errorf("W %v, worked by hand 18.981 ms", w)
	}
	if b := flowNamed(t, p, "bulk"); b.CompressionLevel != "fastest" || b.CompressionRatio != 1 || b.BatchBoundBytes != 100_000 || b.EventsPerBatch != 100 {
		t.Errorf("bulk: %+v", b)
	}
	if o := flowNamed(t, p, "orders"); !approx(*o.LatencySeconds, 0.005+w+orderCost*8/1e7+0.02) || o.PropagationSeconds != 0.02 || !*o.WithinBudget {
		t.Errorf("orders: latency %v, %+v", *o.LatencySeconds, o)
	}
	if v := flowNamed(t, p, "views"); !approx(*v.LatencySeconds, 0.1+w+viewCost*8/1e7+0.02) {
		t.Errorf("views: latency %v", *v.LatencySeconds)
	}
	if b := flowNamed(t, p, "bulk"); b.LatencySeconds != nil || b.PropagationSeconds != 0.02 {
		t.Errorf("bulk: %+v", b)
	}
	growth := (bulk - backfillSent) / bulk * 950_000
	want := []classPlan{
		{Name: "critical", RateBytesPerSec: 43_547, CeilBytesPerSec: 293_547, Action: "none", SentBytesPerSec: orders},
		{Name: "ingest", RateBytesPerSec: 183_959, CeilBytesPerSec: 1_250_000, Action: "drop_fields:20", SentBytesPerSec: views},
		{Name: "replication", RateBytesPerSec: 0, CeilBytesPerSec: 1_250_000, Action: "throttle"},
		{Name: "backfill", RateBytesPerSec: 772_494, CeilBytesPerSec: 1_250_000, Action: "throttle", SentBytesPerSec: backfillSent,
			SpoolGrowthPerSec: growth, SpoolMaxBytes: 1 << 30, Overflow: "drop_oldest"},
	}
	for i, w := range want {
		c := p.Classes[i]
		if c.Name != w.Name || c.RateBytesPerSec != w.RateBytesPerSec || c.CeilBytesPerSec != w.CeilBytesPerSec || c.Action != w.Action ||
			!approx(c.SentBytesPerSec, w.SentBytesPerSec) || !approx(c.SpoolGrowthPerSec, w.SpoolGrowthPerSec) || c.SpoolMaxBytes != w.SpoolMaxBytes {
			t.Errorf("class %d: %+v\nwant %+v", i, c, w)
		}
	}
	if f := p.Classes[3].SpoolFullSeconds; f == nil || !approx(*f, (1<<30)/growth) || math.Abs(*f-5891) > 1 {
		t.Errorf("backfill full in %v", f)
	}
	if p.Classes[0].SpoolFullSeconds != nil || p.Classes[1].SpoolGrowthPerSec != 0 {
		t.Errorf("critical, ingest: %+v %+v", p.Classes[0], p.Classes[1])
	}
	sp := p.Spool
	if sp.Level != 2 || !approx(sp.SentBytesPerSec, 1e6) || !approx(sp.DemandBytesPerSec, orders+views+bulk) ||
		!approx(sp.GrowthBytesPerSec, growth) || sp.MaxBytes != 10<<30 || sp.FullSeconds == nil ||
		!approx(*sp.FullSeconds, (10<<30)/growth) || !sp.DropFields {
		t.Errorf("spool %+v", sp)
	}
	// The recommended config keeps the spool cap and the class's keys.
	_, r := loadRecommended(t, p)
	if b := r.classes[3]; b.MaxBytes != 1<<30 || b.Overflow != priority.OverflowDropOldest || r.spool.MaxBytes != 10<<30 {
		t.Errorf("recommended: backfill %+v, spool %+v\n%s", b, r.spool, p.Config)
	}
}

// TestPlanRTT: a hop's rtt adds half of itself to the latency of every
// flow crossing it and to the hop's own budget; it is refused below 0.
func TestPlanRTT(t *testing.T) {
	base := mustPlan(t, "hand.yaml")
	data, err := os.ReadFile(filepath.Join("testdata", "plan", "hand.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The hop's budget, 50 ms, held 0.206 ms + 1.429 ms; with 100 ms of rtt
	// it does not.
	withRTT := strings.Replace(string(data), "    latency_budget: 50ms\n", "    latency_budget: 50ms\n    rtt: 100ms\n", 1)
	path := filepath.Join(t.TempDir(), "hand.yaml")
	if err := os.WriteFile(path, []byte(withRTT), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := planFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"orders", "views"} {
		b, f := flowNamed(t, base, name), flowNamed(t, p, name)
		if !approx(*f.LatencySeconds, *b.LatencySeconds+0.05) || f.PropagationSeconds != 0.05 {
			t.Errorf("%s: latency %v, without rtt %v", name, *f.LatencySeconds, *b.LatencySeconds)
		}
	}
	if h := hopNamed(t, p, "wan"); *h.WithinBudget || !*hopNamed(t, base, "wan").WithinBudget {
		t.Errorf("budget with rtt: %v", *h.WithinBudget)
	}
	var out bytes.Buffer
	if err := p.writeText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1  wan  10 Mbit/s 1000 p/s  100ms  13.68 Mbit/s") || !strings.Contains(out.String(), "50ms OVER") {
		t.Errorf("output:\n%s", out.String())
	}

	inv := strings.Replace(string(data), "    latency_budget: 50ms\n", "    rtt: -1ms\n", 1)
	if _, err := planInventory(t, inv); err == nil || !strings.Contains(err.Error(), "line 7: hops[0].rtt: -1ms: want a round-trip time ≥ 0") {
		t.Errorf("negative rtt: %v", err)
	}
}

// planInventory writes inv to a file and plans it.
func planInventory(t *testing.T, inv string) (*plan, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flows.yaml")
	if err := os.WriteFile(path, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	return planFile(path)
}

// TestPlanOverCapacityExit: an inventory over capacity fails, prints the
// plan without a config and writes none, unless --allow-over-capacity;
// over headroom (overload.yaml: the spool grows) is not a failure.
func TestPlanOverCapacityExit(t *testing.T) {
	twohop := filepath.Join("testdata", "plan", "twohop.yaml")
	out := filepath.Join(t.TempDir(), "sluice.yaml")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"plan", "--write-config", out, twohop}, &stdout, &stderr)
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "plan "+twohop+": over capacity at peak: hop dsl at 390.1% of its capacity after batching") {
		t.Fatalf("error %v", err)
	}
	if _, serr := os.Stat(out); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("config written: %v", serr)
	}
	text := stdout.String()
	if strings.Contains(text, "Recommended config") || strings.Contains(text, "classes:") ||
		!strings.Contains(text, "Over capacity at peak: hop dsl at 390.1% of its capacity after batching.\nNo recommended config") {
		t.Errorf("output:\n%s", text)
	}

	stdout.Reset()
	if err := run(context.Background(), []string{"plan", twohop, "--allow-over-capacity", "--write-config", out}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "Recommended config") || !strings.Contains(string(written), "# Over capacity at peak (written with --allow-over-capacity): hop dsl at 390.1%") {
		t.Errorf("written:\n%s", written)
	}

	stdout.Reset()
	if err := run(context.Background(), []string{"plan", filepath.Join("testdata", "plan", "overload.yaml")}, &stdout, &stderr); err != nil {
		t.Errorf("overload.yaml (over headroom, not capacity): %v", err)
	}
	if !strings.Contains(stdout.String(), "the spool grows by 178 KiB/s and reaches spool.max_bytes 10 GiB in 16h21m53s from empty") {
		t.Errorf("output:\n%s", stdout.String())
	}
}

// TestPlanPrintedFigures: every figure `sluice plan` prints is the model's:
// each cell of the hop, flow and spool tables of every testdata inventory,
// and the spool line, formatted from the plan's own values.
func TestPlanPrintedFigures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "plan", "*.yaml"))
	checked := 0
	for _, file := range files {
		p, err := planFile(file)
		if err != nil {
			continue // bad.yaml, unknown.yaml
		}
		checked++
		t.Run(filepath.Base(file), func(t *testing.T) {
			var out bytes.Buffer
			if err := p.writeText(&out); err != nil {
				t.Fatal(err)
			}
			text := out.String()
			hops := tableRows(t, text, "#  hop")
			if len(hops) != len(p.Hops) {
				t.Fatalf("%d hop rows, %d hops:\n%s", len(hops), len(p.Hops), text)
			}
			for i, h := range p.Hops {
				capacity := fmtBits(h.CapacityBitsPerSec)
				if h.CapacityPacketsPerSec > 0 {
					capacity += " " + fmtRate(h.CapacityPacketsPerSec) + " p/s"
				}
				rtt, budget, queue := "-", "-", fmtWait(h.After.QueueWaitSeconds)
				if h.RTTSeconds > 0 {
					rtt = fmtSeconds(h.RTTSeconds)
				}
				if h.WithinBudget != nil {
					budget = fmtSeconds(h.LatencyBudgetSeconds) + " " + okWord(*h.WithinBudget)
				}
				if h.Sent != nil {
					queue = fmtWait(h.Sent.QueueWaitSeconds) + " *"
					line := fmt.Sprintf("* %s: the queue of what the node sends, %s and %s p/s (%s);", h.Name,
						fmtBits(h.Sent.BitsPerSec), fmtRate(h.Sent.PacketsPerSec), fmtPct(h.Sent.Utilization))
					if !strings.Contains(text, line) {
						t.Errorf("no %q", line)
					}
				}
				want := []string{strconv.Itoa(h.Rank), h.Name, capacity, rtt, fmtBits(h.Before.BitsPerSec), fmtRate(h.Before.PacketsPerSec),
					fmtPct(h.Before.Utilization), fmtBits(h.After.BitsPerSec), fmtRate(h.After.PacketsPerSec), fmtPct(h.After.Utilization),
					h.After.Verdict, queue, budget}
				if !slices.Equal(hops[i], want) {
					t.Errorf("hop row %q\nwant %q", hops[i], want)
				}
			}
			flows := tableRows(t, text, "flow ")
			for i, f := range p.Flows {
				budget := "-"
				if f.WithinBudget != nil {
					budget = fmtSeconds(f.LatencyBudgetSeconds) + " " + okWord(*f.WithinBudget)
				}
				level := f.CompressionLevel
				if f.CompressionAuto {
					level += " (auto, " + f.Bottleneck + ")"
				}
				want := []string{f.Name, f.Class, fmtRate(f.EventsPerSec), fmtBytes(f.MeanBytes) + " / " + fmtBytes(f.P99Bytes),
					strconv.FormatFloat(f.Amplification, 'g', 4, 64), level, strconv.FormatFloat(f.CompressionRatio, 'f', 2, 64) + " (" + f.RatioSource + ")",
					strconv.FormatFloat(f.EventsPerBatch, 'g', 5, 64), fmtBytes(f.BatchWireBytes),
					fmtBits(f.Before.BitsPerSec) + " " + fmtRate(f.Before.PacketsPerSec) + " p/s",
					fmtBits(f.After.BitsPerSec) + " " + fmtRate(f.After.PacketsPerSec) + " p/s", fmtWait(f.LatencySeconds), budget}
				if !slices.Equal(flows[i], want) {
					t.Errorf("flow row %q\nwant %q", flows[i], want)
				}
			}
			sp := p.Spool
			if sp.GrowthBytesPerSec == 0 {
				line := fmt.Sprintf("Spool at peak: %s sends all of its %s demand", p.Link, fmtBits(sp.DemandBytesPerSec*8))
				if !strings.Contains(text, line) || !approx(sp.SentBytesPerSec, sp.DemandBytesPerSec) {
					t.Errorf("no %q, or sent %v ≠ demand %v", line, sp.SentBytesPerSec, sp.DemandBytesPerSec)
				}
				return
			}
			line := fmt.Sprintf("Spool at peak: the node sends %s of the %s demand on %s (target %s), at level %d; the spool grows by %s/s",
				fmtBits(sp.SentBytesPerSec*8), fmtBits(sp.DemandBytesPerSec*8), p.Link, fmtBits(float64(p.TargetBytesPerSec)*8), sp.Level, fmtBytes(sp.GrowthBytesPerSec))
			if !strings.Contains(text, line) {
				t.Errorf("no %q", line)
			}
			rows := tableRows(t, text, "class ")
			var sum float64
			k := 0
			for _, c := range p.Classes {
				sum += c.SpoolGrowthPerSec
				if c.DemandBytesPerSec <= 0 {
					continue
				}
				want := spoolRow(c)
				if k >= len(rows) || !slices.Equal(rows[k], want) {
					t.Errorf("spool row %d: %q\nwant %q", k, rows[min(k, len(rows)-1)], want)
				}
				k++
			}
			// The model's own sums.
			if !approx(sum, sp.GrowthBytesPerSec) || sp.SentBytesPerSec > float64(p.TargetBytesPerSec)*(1+1e-9) {
				t.Errorf("growth %v, classes' %v; sent %v, target %d", sp.GrowthBytesPerSec, sum, sp.SentBytesPerSec, p.TargetBytesPerSec)
			}
		})
	}
	if checked < 5 {
		t.Errorf("%d inventories checked", checked)
	}
}

// tableRows returns the rows of the table whose header line starts with
// header, each split into its cells (tabwriter pads with 2+ spaces).
func tableRows(t *testing.T, text, header string) [][]string {
	t.Helper()
	lines := strings.Split(text, "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, header) })
	if i < 0 {
		t.Fatalf("no table %q in\n%s", header, text)
	}
	var rows [][]string
	for _, l := range lines[i+1:] {
		if l == "" || strings.HasPrefix(l, "* ") || strings.HasPrefix(l, "drop_fields ") || strings.HasPrefix(l, "warning: ") {
			break
		}
		rows = append(rows, cellSep.Split(strings.TrimRight(l, " "), -1))
	}
	return rows
}

var cellSep = regexp.MustCompile(`  +`)

// TestPlanInventoryBounds: the inventory is bounded as a config file is,
// and its errors are in plain words.
func TestPlanInventoryBounds(t *testing.T) {
	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n" +
		"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
	if _, _, err := parseInventory([]byte(bomb)); err == nil || !strings.Contains(err.Error(), "the inventory expands past 100000 YAML nodes") {
		t.Errorf("alias bomb: %v", err)
	}
	big := bytes.Repeat([]byte("# padding padding padding padding\n"), maxConfigBytes/16)
	if _, err := planInventory(t, string(big)); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes (1 MiB), the limit of an inventory") {
		t.Errorf("big: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"hello\n", "line 1: the inventory: want a mapping of keys, got \"hello\""},
		{"hops: 3\n", "line 1: hops: want a list, got \"3\""},
		{"hops:\n  - name: wan\n    rtt: soon\n", "line 3: hops[0].rtt: want a duration such as 250ms, 30s or 1m30s, got `soon`"},
		{"hops:\n  - {name: wan, bandwidth: 10Mbit, packets_per_sec: [1]}\n", "line 2: hops[0].packets_per_sec: want a number, got a list"},
		{"flows:\n  - {name: a, payload: 3}\n", "line 2: flows[0].payload: want a mapping of keys, got \"3\""},
		{"spool: {max_bytes: lots}\nhops: [{name: wan, bandwidth: 1Mbit}]\nflows: [{name: a, class: ingest, events_per_sec: 1, payload: {mean: 1, p99: 1}, hops: [wan]}]\n",
			`line 1: spool.max_bytes: "lots": want a size`},
		{"spool: {max_byte: 1GiB}\n", "line 1: field max_byte not found in spool"},
		{"hops:\n  - {name: wan, bandwidth: 1Mbit}\nflows:\n  - {name: a, class: critcal, events_per_sec: 1, payload: {mean: 1, p99: 1}, hops: [wan]}\n",
			`line 4: flows[0].class: "critcal": did you mean critical? want one of critical, ingest, replication, backfill`},
		{"hops:\n  - {name: wan, bandwidth: 1Mbit}\nclasses:\n  - {name: critcal, priority: 0}\nflows:\n  - {name: a, class: critcal, events_per_sec: 1, payload: {mean: 1, p99: 1}, hops: [wan]}\n",
			`line 4: classes[0] (critcal): did you mean critical? "critcal" is not a default class: it would add a new class with no guarantee at priority 7 and leave critical as it is`},
		{"hops:\n  - {name: wan, bandwidth: 1Mbit}\nclasses:\n  - {name: x, rate: 35}\nflows:\n  - {name: a, class: x, events_per_sec: 1, payload: {mean: 1, p99: 1}, hops: [wan]}\n",
			`line 4: classes[0].rate: "35": a rate needs a unit`},
	} {
		_, err := planInventory(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v\nwant %q", tc.yaml, err, tc.want)
			continue
		}
		checkPlainWords(t, err)
	}
}

// TestPlanKeepsExpire: a class's expire, and every other key the
// inventory gives it, is in the recommended config.
func TestPlanKeepsExpire(t *testing.T) {
	p, err := planInventory(t, `hops: [{name: wan, bandwidth: 10Mbit}]
classes:
  - {name: ingest, max_age: 10m, expire: drop}
  - {name: audit, max_age: 1h, expire: demote, rate_msgs: 5, ceil_msgs: 50}
flows:
  - {name: a, class: ingest, events_per_sec: 10, payload: {mean: 100, p99: 100}, hops: [wan]}
`)
	if err != nil {
		t.Fatal(err)
	}
	_, r := loadRecommended(t, p)
	if c := r.classes[1]; c.Name != "ingest" || c.MaxAge != 10*time.Minute || c.Expire != priority.ExpireDrop {
		t.Errorf("ingest %+v\n%s", c, p.Config)
	}
	if c := r.classes[4]; c.Name != "audit" || c.MaxAge != time.Hour || c.Expire != priority.ExpireDemote || c.Rate.MsgsPerSec != 5 || c.Ceil.MsgsPerSec != 50 {
		t.Errorf("audit %+v\n%s", c, p.Config)
	}
}
