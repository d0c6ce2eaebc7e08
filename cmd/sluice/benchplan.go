//go:build sluicebench

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/blast"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
)

// planBench is `sluice bench --plan FLOWS.yaml`: the inventory's flows at
// their peak rates through a node configured as the plan recommends (or as
// --config says), over an emulated link of the plan's link hop, with every
// hop's load measured against its headroom.
type planBench struct {
	Plan     *plan
	Classes  []priority.Class
	Headroom float64
	LinkBps  int64 // bytes/s
	Scenario blast.Scenario
	flows    []planBenchFlow
}

type planBenchFlow struct {
	name, class string
	hops        []string
	rawBps      float64 // offered raw bytes/s, for sharing a class's wire bytes among its flows
}

// hopResult is one hop's measured load.
type hopResult struct {
	Name                string
	CapacityBits        float64
	CapacityPackets     float64
	PlannedUtilization  float64
	MeanUtilization     float64 // bit/s over the measured windows ÷ capacity
	PeakUtilization     float64 // the busiest 1 s window
	PeakPacketUtil      float64 // the busiest 1 s window in packets/s; 0 without a packet capacity
	UnderHeadroom       bool
	MeasuredFromLinkemu bool // the link hop: bytes counted by the emulator itself
}

// peakSlack is what one 1 s window may exceed the headroom by and still
// count as under it, as a fraction of the target: the shaper's own burst
// allowance, the link bucket's depth (shaper.DefaultLinkDepth, 50 ms at the
// target) plus one batch (shaper.DefaultBatchAirtime, 25 ms), lands in
// whichever window it falls. The mean over the run has no slack.
const peakSlack = 0.075

func newPlanBench(flowsPath, configPath string, dur time.Duration) (*planBench, error) {
	p, err := planFile(flowsPath)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(flowsPath)
	if err != nil {
		return nil, err
	}
	inv, _, err := parseInventory(data)
	if err != nil {
		return nil, err
	}
	// The node's classes: what `sluice run --config` would build from the
	// recommended config, or from the one given.
	if configPath == "" {
		f, err := os.CreateTemp("", "sluice-plan-*.yaml")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		if _, err := f.WriteString(p.Config); err != nil {
			f.Close()
			return nil, err
		}
		f.Close()
		configPath = f.Name()
	}
	fs := flag.NewFlagSet("sluice run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c nodeConfig
	c.flags(fs)
	c.Config = configPath
	if err := c.load(fs); err != nil {
		return nil, err
	}
	r, err := c.resolve()
	if err != nil {
		return nil, err
	}
	if c.LinkMbit <= 0 {
		return nil, fmt.Errorf("config %s: link_mbit is needed to emulate the link", configPath)
	}
	pb := &planBench{Plan: p, Classes: r.classes, Headroom: c.Headroom, LinkBps: int64(c.LinkMbit * 1e6 / 8)}

	sc := blast.Scenario{Name: "plan", Duration: dur, Drain: 10 * time.Second,
		Link: linkemu.Symmetric(linkemu.Shape{Bandwidth: linkemu.Rate(p.LinkBitsPerSec), Latency: blast.SuiteLatency}),
		Node: aggregator.Options{Classes: r.classes, Link: aggregator.Link{Ceil: pb.LinkBps, Headroom: c.Headroom}}}
	dir := filepath.Dir(flowsPath)
	for i, fp := range p.Flows {
		// Sluice sees each event once per fan-out copy; the inventory's
		// retry factor is the amplification of clients without it.
		ld := blast.Load{Class: fp.Class, ID: fp.Name, Rate: fp.EventsPerSec * max(inv.Flows[i].FanOut, 1), Size: int(fp.MeanBytes)}
		if s := inv.Flows[i].Sample; s != "" {
			raw, err := readSample(filepath.Join(dir, s))
			if err != nil {
				return nil, err
			}
			ld.Events = sampleLines(raw)
		} else {
			ld.Entropy = entropyFor(ld, fp.CompressionRatio)
		}
		sc.Loads = append(sc.Loads, ld)
		pb.flows = append(pb.flows, planBenchFlow{name: fp.Name, class: fp.Class, hops: fp.Hops, rawBps: ld.Rate * fp.MeanBytes})
	}
	pb.Scenario = sc
	return pb, nil
}

// entropyFor returns the fraction of random bytes at which generated
// events of ld compress by about ratio (raw ÷ compressed).
func entropyFor(ld blast.Load, ratio float64) float64 {
	if ratio <= 1 {
		return 1
	}
	lo, hi := 0.0, 1.0
	for range 10 {
		ld.Entropy = (lo + hi) / 2
		if 1/blast.LoadWireRatio(ld) > ratio {
			lo = ld.Entropy // compresses too well: more randomness
		} else {
			hi = ld.Entropy
		}
	}
	return (lo + hi) / 2
}

// measure computes each hop's load from the run's windows after the
// warm-up and before the load ends.
func (pb *planBench) measure(o *blast.Outcome) []hopResult {
	classRaw := map[string]float64{}
	for _, f := range pb.flows {
		classRaw[f.class] += f.rawBps
	}
	var out []hopResult
	for _, h := range pb.Plan.Hops {
		hr := hopResult{Name: h.Name, CapacityBits: h.CapacityBitsPerSec, CapacityPackets: h.CapacityPacketsPerSec,
			PlannedUtilization: h.After.Utilization, MeasuredFromLinkemu: h.Name == pb.Plan.Link}
		var sum float64
		var n int
		for _, w := range o.Windows {
			if w.T <= blast.Warmup.Seconds() || w.T > pb.Scenario.Duration.Seconds() {
				continue
			}
			var bits, pkts float64
			for _, f := range pb.flows {
				if !contains(f.hops, h.Name) || classRaw[f.class] == 0 {
					continue
				}
				share := f.rawBps / classRaw[f.class]
				c := w.Classes[f.class]
				bits += share * shaper.MsgCost(float64(c.WireBytes), 0) * 8
				bits += share * float64(c.Batches) * float64(pb.Plan.OverheadBytes) * 8 // what the plan charges a batch
				pkts += share * float64(c.Batches)
			}
			if hr.MeasuredFromLinkemu {
				bits = float64(w.LinkBytes) * 8
			}
			u := bits / h.CapacityBitsPerSec
			sum += u
			n++
			hr.PeakUtilization = max(hr.PeakUtilization, u)
			if h.CapacityPacketsPerSec > 0 {
				hr.PeakPacketUtil = max(hr.PeakPacketUtil, pkts/h.CapacityPacketsPerSec)
			}
		}
		if n > 0 {
			hr.MeanUtilization = sum / float64(n)
		}
		limit := pb.Headroom * (1 + peakSlack)
		hr.UnderHeadroom = n > 0 && hr.MeanUtilization <= pb.Headroom && hr.PeakUtilization <= limit &&
			(h.CapacityPacketsPerSec == 0 || hr.PeakPacketUtil <= limit)
		out = append(out, hr)
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// runPlanBench runs the plan's bench and prints the per-hop table. It
// returns an error if a hop went over its headroom or an acknowledged
// event was lost or duplicated.
func runPlanBench(ctx context.Context, flowsPath, configPath string, dur time.Duration, nodeLog string, stdout, stderr io.Writer) error {
	pb, err := newPlanBench(flowsPath, configPath, dur)
	if err != nil {
		return err
	}
	if nodeLog != "" {
		f, err := os.Create(nodeLog)
		if err != nil {
			return err
		}
		defer f.Close()
		pb.Scenario.Node.Logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	tmp, err := os.MkdirTemp("", "sluice-bench-plan-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(stderr, "sluice bench --plan %s: link %s emulated at %s, %d flows at peak, %s of load\n",
		flowsPath, pb.Plan.Link, fmtBits(pb.Plan.LinkBitsPerSec), len(pb.flows), dur)
	o, err := pb.Scenario.Run(ctx, tmp, blast.ModeSluice, func(w blast.Window) {
		if int(math.Round(w.T))%5 == 0 {
			fmt.Fprintln(stderr, w.String())
		}
	})
	if err != nil {
		return err
	}
	hops := pb.measure(o)
	f := blast.SuiteResult{Spec: blast.SuiteScenario{Scenario: pb.Scenario}, Runs: map[blast.Mode]*blast.Outcome{blast.ModeSluice: o}}.Figures(blast.ModeSluice)
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "hop\tcapacity\tplanned util\tmeasured mean\tpeak 1 s\tpeak pkt/s util\tunder headroom (mean ≤ %s, 1 s ≤ %s)\n",
		fmtPct(pb.Headroom), fmtPct(pb.Headroom*(1+peakSlack)))
	var over []string
	for _, h := range hops {
		pk := "—"
		if h.CapacityPackets > 0 {
			pk = fmtPct(h.PeakPacketUtil)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, fmtBits(h.CapacityBits), fmtPct(h.PlannedUtilization),
			fmtPct(h.MeanUtilization), fmtPct(h.PeakUtilization), pk, okWord(h.UnderHeadroom))
		if !h.UnderHeadroom {
			over = append(over, h.Name)
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nevery acknowledged event: %s\n", f.Verdict())
	switch {
	case f.Lost > 0 || f.Duplicates > 0:
		return errors.New("exactly-once violated: " + f.Verdict())
	case len(over) > 0:
		return fmt.Errorf("hops over their headroom: %v", over)
	}
	return nil
}
