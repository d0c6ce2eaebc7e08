package shaper_test

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
)

func ExampleLanes_ReserveAt() {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	classes := priority.Defaults(1_000_000)
	lanes, err := shaper.NewLanes(classes, priority.Rate{BytesPerSec: 800_000}, shaper.LanesOptions{})
	if err != nil {
		panic(err)
	}
	critical, _ := lanes.Class(priority.ClassCritical)
	backfill, _ := lanes.Class(priority.ClassBackfill)
	// Critical batches go first until the link bucket (50 ms at the
	// target) is empty; backfill then waits for it to hold its batch
	// again: one batch time at 800 kB/s.
	for lanes.ReserveAt(t0, critical, 32<<10).OK {
	}
	r := lanes.ReserveAt(t0, backfill, 32<<10)
	fmt.Println(r.OK, r.Phase, r.At.Sub(t0))
	// Output:
	// false borrow 41.28ms
}

func ExampleController() {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := shaper.NewController(shaper.ControllerOptions{})
	if err != nil {
		panic(err)
	}
	for i, infl := range []float64{1.2, 1.7, 1.7, 2.6, 2.6} {
		now := t0.Add(time.Duration(i) * 250 * time.Millisecond)
		fmt.Print(c.EvaluateAt(now, shaper.Inputs{Link: shaper.Snapshot{Inflation: infl, MinRtt: 40 * time.Millisecond}}), " ")
	}
	fmt.Println()
	// Output:
	// 0 0 1 1 2
}

func ExampleBackoff() {
	b := shaper.Backoff{Base: 250 * time.Millisecond, Cap: 30 * time.Second}
	for _, n := range []int{0, 3, 10, 200} {
		fmt.Println(n, b.Delay(n, 0.5))
	}
	// Output:
	// 0 125ms
	// 3 1s
	// 10 15s
	// 200 15s
}

func ExampleChooseCompression() {
	// A class measured at fastest: 10× at 400 MB/s per core; the other
	// levels follow by the priors' proportions.
	var known [shaper.CompressLevels]shaper.LevelEstimate
	known[shaper.CompressFastest] = shaper.LevelEstimate{Ratio: 10, Speed: 400e6, Measured: true}
	in := shaper.CompressInputs{
		LinkFull: true, Cores: 2, Min: shaper.CompressFastest, Max: shaper.CompressBest,
		Levels:  shaper.EstimateLevels(known),
		Airtime: shaper.DefaultBulkAirtime, MinBatchBytes: shaper.MinBatchRawBytes, MaxBatchBytes: 512 << 10,
	}
	for _, link := range []int64{400_000, 100_000_000} { // 4 Mbit/s × 0.8, and a LAN
		in.LinkBytesPerSec = link
		c := shaper.ChooseCompression(in)
		fmt.Println(link, c.Level, c.Bottleneck, c.BatchBytes)
	}
	// Output:
	// 400000 best link 463999
	// 100000000 fastest cpu 524288
}
