package plan

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/wire"
)

// JetStreamMaxPayload is JetStream's default max_payload: an event larger
// is refused (Plan.Warnings says so).
const JetStreamMaxPayload = 1 << 20

// Plan is the model evaluated on an Inventory. Its JSON is `sluice plan
// --json`'s, without the file and the recommended config.
type Plan struct {
	Link              string  `json:"link"`
	LinkBitsPerSec    float64 `json:"link_bits_per_sec"`
	Headroom          float64 `json:"headroom"`
	TargetBytesPerSec int64   `json:"target_bytes_per_sec"`
	// BatchAirtime bounds a batch of a class at a fixed level, and
	// BulkAirtime one under compression auto, in air time at the target
	// (shaper.DefaultBatchAirtime, DefaultBulkAirtime).
	BatchAirtime string `json:"batch_airtime"`
	BulkAirtime  string `json:"bulk_batch_airtime"`
	// Cores is the CPU the node's compression policy counts per class
	// (Inventory.Cores).
	Cores float64 `json:"cores"`
	// OverheadBytes is what each batch costs on the wire besides its
	// compressed body (wire.MsgOverhead), as the node's lanes charge it.
	OverheadBytes int    `json:"overhead_bytes"`
	QueueModel    string `json:"queue_model"`
	// Hops, the bottleneck (highest utilization after sluice) first.
	Hops    []HopPlan   `json:"hops"`
	Flows   []FlowPlan  `json:"flows"`
	Classes []ClassPlan `json:"classes"`
	// Spool is what accumulates at peak when the link's demand outruns
	// what the node sends.
	Spool SpoolPlan `json:"spool"`
	// OverCapacity names the hops whose peak load after sluice is above
	// their capacity (verdict "over capacity"): no class configuration
	// carries the load.
	OverCapacity []string `json:"over_capacity"`
	Warnings     []string `json:"warnings"`

	// Recommended are the inventory's classes with the recommended byte
	// rates and ceilings (ClassPlan's), valid for priority.Validate on a
	// link of LinkBytesPerSec: what a node on this link runs with.
	Recommended []priority.Class `json:"-"`
	// LinkBytesPerSec is the link as `sluice run` configures it from
	// link_mbit (LinkBitsPerSec/1e6): bytes/s, truncated.
	LinkBytesPerSec int64 `json:"-"`
}

// SpoolPlan is the spool at peak: what the node sends over the link and
// what it keeps. The model is the lanes' steady state at the level the
// controller settles at: 0 while the link carries the demand, 2 when a
// backlog grows (a standing, growing queue; demand alone gives 1 or 2), on
// a healthy link (a plan's defer is then a throttle,
// shaper.EffectiveAction).
type SpoolPlan struct {
	Level int `json:"level"`
	// DemandBytesPerSec is the link's peak demand after sluice (wire bytes
	// + Plan.OverheadBytes a batch) and SentBytesPerSec what the node sends
	// of it: at most the target.
	DemandBytesPerSec float64 `json:"demand_bytes_per_sec"`
	SentBytesPerSec   float64 `json:"sent_bytes_per_sec"`
	// GrowthBytesPerSec is the event bytes all classes add to the spool
	// per second (0: it does not grow); MaxBytes the inventory's
	// SpoolMaxBytes (0: no cap) and FullSeconds the time, from empty, to
	// reach it (nil: never).
	GrowthBytesPerSec float64  `json:"growth_bytes_per_sec"`
	MaxBytes          int64    `json:"max_bytes"`
	FullSeconds       *float64 `json:"full_seconds"`
	// DropFields: some class drops fields at Level, by an amount the plan
	// cannot know; the figures assume nothing is dropped (growth and
	// times to full are then bounds: at most, at least).
	DropFields bool `json:"drop_fields_unmodelled"`
}

// Load is a load on a hop and what the hop makes of it.
type Load struct {
	BitsPerSec    float64 `json:"bits_per_sec"`
	PacketsPerSec float64 `json:"packets_per_sec"`
	Utilization   float64 `json:"utilization"`
	Verdict       string  `json:"verdict"`
	// QueueWaitSeconds is the M/D/1 mean wait; nil when ρ ≥ 1.
	QueueWaitSeconds *float64 `json:"queue_wait_seconds"`
	// ServiceSeconds is the mean time to carry one packet.
	ServiceSeconds float64 `json:"service_seconds"`
}

// HopPlan is a hop under the flows that cross it.
type HopPlan struct {
	Name                  string   `json:"name"`
	Rank                  int      `json:"rank"`
	CapacityBitsPerSec    float64  `json:"capacity_bits_per_sec"`
	CapacityPacketsPerSec float64  `json:"capacity_packets_per_sec"`
	Flows                 []string `json:"flows"`
	// Before: one message per event (payload × retry × fan-out); After:
	// sluice's batches, compressed, with the per-batch overhead.
	Before Load `json:"before"`
	After  Load `json:"after"`
	// Sent is, on the link hop when its demand outruns what the node
	// sends (Spool), the load the node does put on it: at most the target,
	// the rest waiting in the spool. Its queue wait, not After's, is the
	// hop's in the latency figures. Nil otherwise.
	Sent *Load `json:"sent"`
	// RTTSeconds is the hop's round-trip time (0 = none given); a batch
	// crosses it in half.
	RTTSeconds float64 `json:"rtt_seconds"`
	// LatencyBudgetSeconds is the hop's budget (0 = none) and WithinBudget
	// whether its queue wait (Sent's if any, else After's) plus service
	// time plus rtt/2 fits in it.
	LatencyBudgetSeconds float64 `json:"latency_budget_seconds"`
	WithinBudget         *bool   `json:"within_budget"`

	capacity     shaper.Capacity
	before, aftr shaper.Load
}

// FlowRate is a flow's load: bit/s and packets/s.
type FlowRate struct {
	BitsPerSec    float64 `json:"bits_per_sec"`
	PacketsPerSec float64 `json:"packets_per_sec"`
}

// FlowPlan is a flow batched, compressed and carried.
type FlowPlan struct {
	Name          string   `json:"name"`
	Class         string   `json:"class"`
	Hops          []string `json:"hops"`
	EventsPerSec  float64  `json:"events_per_sec"`
	MeanBytes     float64  `json:"mean_bytes"`
	P99Bytes      float64  `json:"p99_bytes"`
	Amplification float64  `json:"amplification"` // retry × fan-out
	// CompressionRatio is raw/compressed at CompressionLevel: measured
	// on the sample at that level, or the given ratio (which is at the
	// class's lowest level) scaled to it by the policy's priors
	// (shaper.EstimateLevels).
	CompressionRatio float64 `json:"compression_ratio"`
	RatioSource      string  `json:"compression_source"` // given, sample, none
	// CompressionLevel is the zstd level the node compresses the flow's
	// class at on this link: its fixed level, or under compression auto
	// the policy's choice at the target (shaper.ChooseCompression), then
	// CompressionAuto and Bottleneck (link or cpu) say why.
	CompressionLevel string   `json:"compression_level"`
	CompressionAuto  bool     `json:"compression_auto"`
	Bottleneck       string   `json:"compression_bottleneck"`
	BatchBoundBytes  int      `json:"batch_bound_bytes"`
	EventsPerBatch   float64  `json:"events_per_batch"`
	BatchWireBytes   float64  `json:"batch_wire_bytes"`
	Before           FlowRate `json:"before"`
	After            FlowRate `json:"after"`
	// LatencySeconds: batch formation (linger or fill) plus, per hop, the
	// M/D/1 wait, this flow's batch service time and rtt/2; nil when a
	// hop's queue is unbounded or the flow's class grows in the spool.
	// PropagationSeconds is its Σ rtt/2 part.
	LatencySeconds       *float64 `json:"latency_seconds"`
	PropagationSeconds   float64  `json:"propagation_seconds"`
	LatencyBudgetSeconds float64  `json:"latency_budget_seconds"`
	WithinBudget         *bool    `json:"within_budget"`

	before, after shaper.Load
}

// ClassPlan is a class's demand on the link and what the plan gives it.
type ClassPlan struct {
	Name string `json:"name"`
	// DemandBytesPerSec is the class's peak load on the link after sluice
	// (what the shaper charges: compressed bytes + overhead per batch).
	DemandBytesPerSec float64 `json:"demand_bytes_per_sec"`
	RateBytesPerSec   int64   `json:"rate_bytes_per_sec"`
	CeilBytesPerSec   int64   `json:"ceil_bytes_per_sec"`
	// At peak, with the recommended rates (SpoolPlan): the class's action
	// at the level, what the node sends of its demand (same units), the
	// event bytes it adds to the spool per second, its spool cap (0 =
	// only Inventory.SpoolMaxBytes) and the time, from empty, to reach it
	// (nil: never, or no cap of its own).
	Action            string   `json:"action"`
	SentBytesPerSec   float64  `json:"sent_bytes_per_sec"`
	SpoolGrowthPerSec float64  `json:"spool_growth_bytes_per_sec"`
	SpoolMaxBytes     int64    `json:"spool_max_bytes"`
	SpoolFullSeconds  *float64 `json:"spool_full_seconds"`
	Overflow          string   `json:"overflow"`

	rawBytesPerSec float64 // event bytes/s of its flows on the link
}

// QueueModel names the queueing model and its service rate.
const QueueModel = "M/D/1: W = ρ/(2μ(1−ρ)), μ = 1/max(mean packet bits/bandwidth, 1/packets_per_sec)"

// Evaluate checks inv and evaluates the model on it: per flow, batch
// sizing at the link's target (shaper.BatchRawBytes, BatchEvents),
// compression, the per-batch overhead (wire.MsgOverhead); per hop, the
// load before and after sluice, utilization, verdict, M/D/1 queueing and
// propagation; per class, a guaranteed rate and a ceiling out of the
// target; and the spool at peak (the lanes' steady state). An inventory it
// cannot plan gives every problem found, joined, each an *InputError in
// the order of the fields. It is pure: the same inventory gives the same
// plan.
func Evaluate(inv Inventory) (*Plan, error) {
	var errs []error
	bad := func(path, format string, args ...any) {
		// One problem, one line: a name may hold a line break.
		errs = append(errs, &InputError{Path: path, Msg: strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", `\n`)})
	}
	headroom := inv.Headroom
	if headroom == 0 {
		headroom = shaper.DefaultHeadroom
	}
	if !(headroom > 0 && headroom <= 1) {
		bad("headroom", "%v: want a fraction in (0, 1]", inv.Headroom)
	}
	if len(inv.Hops) == 0 {
		bad("hops", "none: want at least one hop")
	}
	if len(inv.Flows) == 0 {
		bad("flows", "none: want at least one flow")
	}
	cores := cmp.Or(inv.Cores, 1)
	if !(cores > 0) || math.IsInf(cores, 0) {
		bad("cores", "%v: want the cores the node compresses on, > 0 (default 1)", inv.Cores)
	}
	if inv.SpoolMaxBytes < 0 {
		bad("spool.max_bytes", "%d: want ≥ 0 (0 = no cap)", inv.SpoolMaxBytes)
	}
	hops := make([]HopPlan, len(inv.Hops))
	hopIndex := map[string]int{}
	for i, h := range inv.Hops {
		k := fmt.Sprintf("hops[%d]", i)
		hp := &hops[i]
		hp.Name = h.Name
		switch _, dup := hopIndex[h.Name]; {
		case h.Name == "":
			bad(k+".name", "empty")
		case dup:
			bad(k+".name", "%q: duplicate hop name", h.Name)
		default:
			hopIndex[h.Name] = i
		}
		if !(h.BitsPerSec > 0) || math.IsInf(h.BitsPerSec, 0) {
			bad(k+".bandwidth", "%v bit/s: want > 0", h.BitsPerSec)
		}
		if h.PacketsPerSec < 0 || math.IsInf(h.PacketsPerSec, 0) || math.IsNaN(h.PacketsPerSec) {
			bad(k+".packets_per_sec", "%v: want ≥ 0 (0 = unlimited)", h.PacketsPerSec)
		}
		if h.LatencyBudget < 0 {
			bad(k+".latency_budget", "%v: want ≥ 0", h.LatencyBudget)
		}
		if h.RTT < 0 {
			bad(k+".rtt", "%v: want a round-trip time ≥ 0", h.RTT)
		}
		bw := h.BitsPerSec
		if !finite(bw) || bw < 0 {
			bw = 0
		}
		hp.capacity = shaper.Capacity{BitsPerSec: bw, MsgsPerSec: max(h.PacketsPerSec, 0)}
		hp.CapacityBitsPerSec, hp.CapacityPacketsPerSec = hp.capacity.BitsPerSec, hp.capacity.MsgsPerSec
		hp.LatencyBudgetSeconds = h.LatencyBudget.Seconds()
		hp.RTTSeconds = max(h.RTT, 0).Seconds()
		hp.Flows = []string{}
	}
	link := LinkHop(inv.Hops, inv.Link)
	if inv.Link != "" && link < 0 {
		bad("link", "%q: no such hop", inv.Link)
	}
	if link < 0 && inv.Link == "" && len(hops) > 0 && len(errs) == 0 {
		bad("hops", "no hop with a bandwidth")
	}
	var linkHop HopPlan
	if link >= 0 {
		linkHop = hops[link]
	}

	// The link as `sluice run` configures it: link_mbit, and the bytes/s
	// it resolves to.
	linkBps := Hop{BitsPerSec: linkHop.capacity.BitsPerSec}.LinkBytesPerSec()
	target := shaper.TargetRate(linkBps, linkBps, headroom)
	classes := slices.Clone(inv.Classes)
	if classes == nil {
		classes = priority.Defaults(linkBps)
	}
	checkClasses(classes, bad)
	classOf := map[string]*priority.Class{}
	var classNames []string
	longest := 0
	for i := range classes {
		classOf[classes[i].Name] = &classes[i]
		classNames = append(classNames, classes[i].Name)
		longest = max(longest, len(classes[i].Name))
	}
	node := inv.Node
	if node == "" {
		node = strings.Repeat("n", MaxNodeBytes)
	}
	// The node's spool ids are 128 bits in hex.
	overhead := wire.MsgOverhead(cmp.Or(inv.Subject, "sluice"), node, strings.Repeat("0", 32), longest)

	p := &Plan{
		Link: linkHop.Name, LinkBitsPerSec: linkHop.capacity.BitsPerSec, LinkBytesPerSec: linkBps, Headroom: headroom,
		TargetBytesPerSec: target, BatchAirtime: shaper.DefaultBatchAirtime.String(), BulkAirtime: shaper.DefaultBulkAirtime.String(),
		Cores: cores, OverheadBytes: overhead,
		QueueModel: QueueModel, Warnings: []string{}, OverCapacity: []string{},
	}
	for _, c := range classes {
		if c.Plan[0].Kind == priority.ActionDefer {
			p.Warnings = append(p.Warnings, fmt.Sprintf("class %s: its plan defers at level 0: its events are not sent while the link is healthy", c.Name))
		}
	}
	flowNames := map[string]bool{}
	for i, f := range inv.Flows {
		k := fmt.Sprintf("flows[%d]", i)
		fp := FlowPlan{Name: f.Name, Class: f.Class, Hops: f.Hops, EventsPerSec: f.EventsPerSec}
		switch {
		case f.Name == "":
			bad(k+".name", "empty")
		case flowNames[f.Name]:
			bad(k+".name", "%q: duplicate flow name", f.Name)
		}
		flowNames[f.Name] = true
		class, ok := classOf[f.Class]
		if !ok {
			bad(k+".class", "%q: want one of %s", f.Class, strings.Join(classNames, ", "))
		}
		if !(f.EventsPerSec > 0) || math.IsInf(f.EventsPerSec, 0) {
			bad(k+".events_per_sec", "%v: want the peak rate, > 0", f.EventsPerSec)
		}
		retry, fan := cmp.Or(f.Retry, 1), cmp.Or(f.FanOut, 1)
		if !(retry >= 1) || math.IsInf(retry, 0) {
			bad(k+".retry", "%v: want an amplification ≥ 1 (1.1 = 10%% of sends retried once)", f.Retry)
		}
		if !(fan >= 1) || math.IsInf(fan, 0) {
			bad(k+".fan_out", "%v: want ≥ 1 copies", f.FanOut)
		}
		fp.Amplification = retry * fan
		if len(f.Hops) == 0 {
			bad(k+".hops", "none: want the hops the flow traverses")
		}
		seen := map[string]bool{}
		for j, h := range f.Hops {
			if _, ok := hopIndex[h]; !ok {
				bad(fmt.Sprintf("%s.hops[%d]", k, j), "%q: no such hop", h)
			} else if seen[h] {
				bad(fmt.Sprintf("%s.hops[%d]", k, j), "%q: listed twice", h)
			}
			seen[h] = true
		}
		if f.LatencyBudget < 0 {
			bad(k+".latency_budget", "%v: want ≥ 0", f.LatencyBudget)
		}
		fp.LatencyBudgetSeconds = f.LatencyBudget.Seconds()
		switch {
		case f.CompressionRatio != 0 && f.Sample != nil:
			bad(k+".sample", "give compression_ratio or sample, not both")
		case f.CompressionRatio != 0:
			if !(f.CompressionRatio >= 1) || math.IsInf(f.CompressionRatio, 0) {
				bad(k+".compression_ratio", "%v: want raw/compressed ≥ 1 (8 = 8:1)", f.CompressionRatio)
			}
			fp.CompressionRatio, fp.RatioSource = f.CompressionRatio, "given"
		case f.Sample != nil:
			fp.RatioSource = "sample"
			if SampleEvents(f.Sample) == 0 {
				bad(k+".sample", "no events")
			}
		default:
			fp.CompressionRatio, fp.RatioSource = 1, "none"
		}
		mean, p99, msg := payloadSizes(f)
		if msg != "" {
			bad(k+".payload", "%s", msg)
		}
		fp.MeanBytes, fp.P99Bytes = mean, p99
		if !ok || len(errs) > 0 {
			p.Flows = append(p.Flows, fp)
			continue
		}
		maxEvents, maxBytes, linger := class.Batch.Limits()
		policy := compressionInputs{class: class, target: target, cores: cores, maxBytes: maxBytes}
		var comp compression
		if fp.RatioSource == "sample" {
			var err error
			if comp, err = policy.sampleCompression(sampleLines(f.Sample), f.EventsPerSec, mean); err != nil {
				bad(k+".sample", "%v", err)
				p.Flows = append(p.Flows, fp)
				continue
			}
		} else {
			comp = policy.choose(givenLevels(class, fp.CompressionRatio, fp.RatioSource == "none"))
		}
		fp.CompressionRatio, fp.CompressionLevel, fp.CompressionAuto = comp.ratio, comp.level.String(), comp.auto
		fp.Bottleneck = string(comp.bottleneck)
		wireFrac := 1 / fp.CompressionRatio
		fp.BatchBoundBytes = comp.bound
		fp.EventsPerBatch = shaper.BatchEvents(f.EventsPerSec, mean, fp.BatchBoundBytes, maxEvents, linger)
		fp.BatchWireBytes = shaper.BatchWireBytes(fp.EventsPerBatch, mean, wireFrac)
		fp.before = shaper.Load{BytesPerSec: f.EventsPerSec * mean, MsgsPerSec: f.EventsPerSec}.Scale(fp.Amplification)
		batches := f.EventsPerSec / fp.EventsPerBatch
		fp.after = shaper.Load{
			BytesPerSec: batches * shaper.MsgCost(fp.BatchWireBytes, overhead),
			MsgsPerSec:  batches,
		}.Scale(fp.Amplification)
		if !finite(fp.before.BitsPerSec()) || !finite(fp.after.BitsPerSec()) {
			bad(k+".events_per_sec", "%v events/s of %v B × %v: the load overflows", f.EventsPerSec, mean, fp.Amplification)
			p.Flows = append(p.Flows, fp)
			continue
		}
		fp.Before = FlowRate{fp.before.BitsPerSec(), fp.before.MsgsPerSec}
		fp.After = FlowRate{fp.after.BitsPerSec(), fp.after.MsgsPerSec}
		if p99 > JetStreamMaxPayload {
			p.Warnings = append(p.Warnings, fmt.Sprintf("flow %s: p99 payload %s is over JetStream's default max_payload (1 MiB) and sluice's default ingest.max_event_bytes: such events are refused", f.Name, FormatBytes(p99)))
		} else if p99 > float64(fp.BatchBoundBytes) {
			p.Warnings = append(p.Warnings, fmt.Sprintf("flow %s: p99 payload %s is over the batch bound %s: such events travel one per batch", f.Name, FormatBytes(p99), FormatBytes(float64(fp.BatchBoundBytes))))
		}
		for _, h := range f.Hops {
			hp := &hops[hopIndex[h]]
			hp.Flows = append(hp.Flows, f.Name)
			hp.before = hp.before.Add(fp.before)
			hp.aftr = hp.aftr.Add(fp.after)
		}
		p.Flows = append(p.Flows, fp)
	}
	for i, h := range hops {
		if !finite(h.before.BitsPerSec()) || !finite(h.aftr.BitsPerSec()) || !finite(h.before.MsgsPerSec) {
			bad(fmt.Sprintf("hops[%d]", i), "the flows' load on %s overflows", h.Name)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Per hop: utilization, verdict, queueing.
	wait := make(map[string]*float64, len(hops))
	for i := range hops {
		hp := &hops[i]
		hp.Before = hopLoad(hp.before, hp.capacity, headroom)
		hp.After = hopLoad(hp.aftr, hp.capacity, headroom)
		wait[hp.Name] = hp.After.QueueWaitSeconds
		if hp.LatencyBudgetSeconds > 0 {
			ok := hp.After.QueueWaitSeconds != nil && *hp.After.QueueWaitSeconds+hp.After.ServiceSeconds+hp.RTTSeconds/2 <= hp.LatencyBudgetSeconds
			hp.WithinBudget = &ok
		}
	}

	// The recommended classes: guarantees in priority order (critical
	// first) out of the target, so that Σ rate ≤ target ≤ link; non-critical
	// ceilings at the link; critical ceilings at what the others'
	// guarantees leave (the most priority.Validate allows), which stays
	// above 0: with a critical class, the others' guarantees stop 1 B/s
	// short of the link.
	demand, demandMsgs, raw := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, fp := range p.Flows {
		if slices.Contains(fp.Hops, p.Link) {
			demand[fp.Class] += fp.after.BytesPerSec
			demandMsgs[fp.Class] += fp.after.MsgsPerSec
			raw[fp.Class] += fp.before.BytesPerSec
		}
	}
	order := slices.Clone(classes)
	slices.SortStableFunc(order, func(a, b priority.Class) int {
		if a.Critical != b.Critical {
			if a.Critical {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Priority, b.Priority)
	})
	hasCritical := slices.ContainsFunc(classes, func(c priority.Class) bool { return c.Critical })
	left := target
	var others int64
	rates := map[string]int64{}
	for _, c := range order {
		avail := left
		if hasCritical && !c.Critical {
			avail = max(0, min(avail, linkBps-1-others))
		}
		want := math.Ceil(demand[c.Name])
		r := avail
		if want < float64(avail) {
			r = int64(want)
		}
		if want > float64(r) {
			p.Warnings = append(p.Warnings, fmt.Sprintf("class %s: peak demand %s on %s exceeds what the target leaves it (%s): guaranteed only that; the rest borrows or queues in the spool", c.Name, FormatBits(want*8), p.Link, FormatBits(float64(r)*8)))
		}
		if m := c.Ceil.MsgsPerSec; m > 0 && demandMsgs[c.Name] > float64(m) {
			p.Warnings = append(p.Warnings, fmt.Sprintf("class %s: peak demand %s batches/s on %s exceeds its ceil_msgs %d: the rest queues in the spool", c.Name, FormatRate(demandMsgs[c.Name]), p.Link, m))
		}
		rates[c.Name] = r
		left -= r
		if !c.Critical {
			others += r
		}
	}
	final := slices.Clone(classes)
	for i := range final {
		c := &final[i]
		cp := ClassPlan{Name: c.Name, DemandBytesPerSec: demand[c.Name], RateBytesPerSec: rates[c.Name], CeilBytesPerSec: linkBps,
			SpoolMaxBytes: c.MaxBytes, Overflow: cmp.Or(c.Overflow, priority.OverflowBlock), rawBytesPerSec: raw[c.Name]}
		if c.Critical {
			cp.CeilBytesPerSec = linkBps - others
		}
		c.Rate.BytesPerSec, c.Ceil.BytesPerSec = cp.RateBytesPerSec, cp.CeilBytesPerSec
		p.Classes = append(p.Classes, cp)
	}
	if err := priority.Validate(final, priority.Rate{BytesPerSec: linkBps}); err != nil {
		return nil, fmt.Errorf("plan: the recommended rates do not validate (a bug in the plan): %w", err)
	}
	p.Recommended = final
	sentMsgs := p.spoolAtPeak(final, demandMsgs, target, inv.SpoolMaxBytes)
	if link >= 0 && p.Spool.SentBytesPerSec < p.Spool.DemandBytesPerSec {
		// The node holds back the rest: the link hop queues what is sent.
		hp := &hops[link]
		sent := hopLoad(shaper.Load{BytesPerSec: p.Spool.SentBytesPerSec, MsgsPerSec: sentMsgs}, hp.capacity, headroom)
		hp.Sent = &sent
		wait[hp.Name] = sent.QueueWaitSeconds
		if hp.LatencyBudgetSeconds > 0 {
			ok := sent.QueueWaitSeconds != nil && *sent.QueueWaitSeconds+sent.ServiceSeconds+hp.RTTSeconds/2 <= hp.LatencyBudgetSeconds
			hp.WithinBudget = &ok
		}
	}

	// Per flow: formation + Σ (wait + own service + rtt/2) against the
	// budget; unbounded when a hop's queue is, or when its class's spool
	// grows (each event waits longer than the last).
	grows := map[string]bool{}
	for _, c := range p.Classes {
		grows[c.Name] = c.SpoolGrowthPerSec > 0
	}
	for i := range p.Flows {
		fp := &p.Flows[i]
		_, _, linger := classOf[fp.Class].Batch.Limits()
		lat := min(linger.Seconds(), (fp.EventsPerBatch-1)/fp.EventsPerSec)
		cost := shaper.MsgCost(fp.BatchWireBytes, overhead)
		stable := !(grows[fp.Class] && slices.Contains(fp.Hops, p.Link))
		for _, h := range fp.Hops {
			hp := &hops[hopIndex[h]]
			fp.PropagationSeconds += hp.RTTSeconds / 2
			if w := wait[h]; w != nil {
				lat += *w + shaper.ServiceTime(cost, hp.capacity) + hp.RTTSeconds/2
			} else {
				stable = false
			}
		}
		if stable {
			fp.LatencySeconds = &lat
		}
		if fp.LatencyBudgetSeconds > 0 {
			ok := stable && lat <= fp.LatencyBudgetSeconds
			fp.WithinBudget = &ok
		}
	}
	slices.SortStableFunc(hops, func(a, b HopPlan) int { return cmp.Compare(b.After.Utilization, a.After.Utilization) })
	for i := range hops {
		hops[i].Rank = i + 1
		if hops[i].After.Verdict == string(shaper.VerdictOverCapacity) {
			p.OverCapacity = append(p.OverCapacity, hops[i].Name)
		}
	}
	p.Hops = hops
	return p, nil
}

// checkClasses reports what priority.Validate finds in classes, with
// their byte rates and ceilings (the plan's to set) left out.
func checkClasses(classes []priority.Class, bad func(path, format string, args ...any)) {
	check := slices.Clone(classes)
	for i := range check {
		check[i].Rate.BytesPerSec, check[i].Ceil.BytesPerSec = 0, 0
	}
	if err := priority.Validate(check, priority.Rate{}); err != nil {
		for _, e := range splitErrors(err) {
			bad("classes", "%v", e)
		}
	}
}

// payloadSizes returns a flow's mean and p99 event sizes, as given or,
// for those not given, measured on its sample; or what is wrong with them.
func payloadSizes(f Flow) (mean, p99 float64, problem string) {
	var sm, s99 float64
	if SampleEvents(f.Sample) > 0 {
		sm, s99 = SampleSizes(f.Sample)
	}
	get := func(key string, v, measured float64) (float64, string) {
		switch {
		case v == 0 && f.Sample == nil:
			return 0, key + ": missing: want a size such as 1KB (or a sample to measure it)"
		case v == 0:
			return measured, ""
		case !(v > 0) || math.IsInf(v, 0):
			return 0, fmt.Sprintf("%s: %v: want > 0", key, v)
		}
		return v, ""
	}
	var msg string
	if mean, msg = get("mean", f.MeanBytes, sm); msg != "" {
		return 0, 0, msg
	}
	if p99, msg = get("p99", f.P99Bytes, s99); msg != "" {
		return 0, 0, msg
	}
	if p99 < mean {
		return 0, 0, fmt.Sprintf("p99 %v B < mean %v B", p99, mean)
	}
	return mean, p99, ""
}

// splitErrors returns the errors joined in err (errors.Join), or err.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func finite(f float64) bool { return !math.IsInf(f, 0) && !math.IsNaN(f) }

// hopLoad evaluates a load on a hop.
func hopLoad(l shaper.Load, c shaper.Capacity, headroom float64) Load {
	u := shaper.Utilization(l, c)
	out := Load{BitsPerSec: l.BitsPerSec(), PacketsPerSec: l.MsgsPerSec, Utilization: u,
		Verdict: string(shaper.HeadroomVerdict(u, headroom))}
	out.ServiceSeconds = shaper.ServiceTime(l.MeanMsgBytes(), c)
	mu := math.Inf(1)
	if out.ServiceSeconds > 0 {
		mu = 1 / out.ServiceSeconds
	}
	if w, ok := shaper.MD1Wait(l.MsgsPerSec, mu); ok {
		s := w.Seconds()
		out.QueueWaitSeconds = &s
	}
	return out
}
