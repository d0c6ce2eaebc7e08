package plan_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/sluicehq/sluice/plan"
)

func ExampleEvaluate() {
	p, err := plan.Evaluate(plan.Inventory{
		Node: "edge-1", // as the node is named: its batches' headers carry it
		Hops: []plan.Hop{
			{Name: "wan", BitsPerSec: 10e6, RTT: 40 * time.Millisecond},
			{Name: "lan", BitsPerSec: 1e9},
		},
		Flows: []plan.Flow{
			{Name: "orders", Class: "critical", EventsPerSec: 100, MeanBytes: 500, P99Bytes: 2000,
				CompressionRatio: 5, Hops: []string{"lan", "wan"}},
			{Name: "views", Class: "ingest", EventsPerSec: 2000, MeanBytes: 800, P99Bytes: 3000,
				CompressionRatio: 8, Hops: []string{"lan", "wan"}},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("link %s, target %d B/s, %d B a batch besides its body\n", p.Link, p.TargetBytesPerSec, p.OverheadBytes)
	for _, h := range p.Hops {
		fmt.Printf("hop %s: %.1f%% before, %.1f%% after sluice: %s\n", h.Name, h.Before.Utilization*100, h.After.Utilization*100, h.After.Verdict)
	}
	for _, f := range p.Flows {
		fmt.Printf("flow %s: %g events a batch, latency %.1f ms\n", f.Name, f.EventsPerBatch, *f.LatencySeconds*1000)
	}
	for _, c := range p.Recommended {
		fmt.Printf("class %s: rate %d B/s, ceil %d B/s\n", c.Name, c.Rate.BytesPerSec, c.Ceil.BytesPerSec)
	}
	// Output:
	// link wan, target 1000000 B/s, 461 B a batch besides its body
	// hop wan: 132.0% before, 17.8% after sluice: ok
	// hop lan: 1.3% before, 0.2% after sluice: ok
	// flow orders: 1.5 events a batch, latency 25.7 ms
	// flow views: 201 events a batch, latency 135.1 ms
	// class critical: rate 39680 B/s, ceil 1066618 B/s
	// class ingest: rate 183382 B/s, ceil 1250000 B/s
	// class replication: rate 0 B/s, ceil 1250000 B/s
	// class backfill: rate 0 B/s, ceil 1250000 B/s
}

func ExampleEvaluate_errors() {
	_, err := plan.Evaluate(plan.Inventory{
		Hops:  []plan.Hop{{Name: "wan", BitsPerSec: 10e6}},
		Flows: []plan.Flow{{Name: "views", Class: "bulk", EventsPerSec: 2000, MeanBytes: 800, P99Bytes: 3000, Retry: 0.5, Hops: []string{"wan"}}},
	})
	fmt.Println(errors.Is(err, plan.ErrInvalidInventory))
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if ie, ok := errors.AsType[*plan.InputError](e); ok {
			fmt.Printf("%s: %s\n", ie.Path, ie.Msg)
		}
	}
	// Output:
	// true
	// flows[0].class: "bulk": want one of critical, ingest, replication, backfill
	// flows[0].retry: 0.5: want an amplification ≥ 1 (1.1 = 10% of sends retried once)
}
