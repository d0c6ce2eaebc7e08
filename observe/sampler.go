package observe

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/priority"
)

// SamplerOptions configure a Sampler. The zero value works.
type SamplerOptions struct {
	// Name names the node in the status document. Default "" (not shown).
	Name string
	// Version names the running binary in the status document. Default ""
	// (not shown).
	Version string
	// Interval is the time between samples, and how often the status page
	// polls. Default 1s; at least 10ms.
	Interval time.Duration
	// Window is the span rates and latency quantiles average over.
	// Default 5s; at least Interval.
	Window time.Duration
	// History is how far back the status document's History reaches: one
	// point (a few dozen bytes of JSON) per Interval. Default 5m; at least
	// Window, at most 24h.
	History time.Duration
}

func (o *SamplerOptions) setDefaults() error {
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.Window == 0 {
		o.Window = max(5*time.Second, o.Interval)
	}
	if o.History == 0 {
		o.History = max(5*time.Minute, o.Window)
	}
	switch {
	case o.Interval < 10*time.Millisecond:
		return fmt.Errorf("%w: SamplerOptions.Interval %v below 10ms", ErrInvalidOptions, o.Interval)
	case o.Window < o.Interval:
		return fmt.Errorf("%w: SamplerOptions.Window %v shorter than Interval %v", ErrInvalidOptions, o.Window, o.Interval)
	case o.History < o.Window:
		return fmt.Errorf("%w: SamplerOptions.History %v shorter than Window %v", ErrInvalidOptions, o.History, o.Window)
	case o.History > 24*time.Hour:
		return fmt.Errorf("%w: SamplerOptions.History %v over 24h", ErrInvalidOptions, o.History)
	}
	return nil
}

// Sampler samples a node's snapshots at a fixed interval, keeps a bounded
// history, and derives from it the Status served at /api/v1/status: rates
// from counter deltas, windowed latency quantiles, the level's history.
//
// NewSampler takes the first sample; Run takes the others and is the only
// goroutine involved, started and stopped by the caller. Status and the
// handler may be used concurrently with Run.
type Sampler struct {
	node    Node
	opts    SamplerOptions
	max     int // samples kept
	running atomic.Bool

	mu      sync.Mutex
	samples []sample // oldest first
	status  Status
	body    []byte // status as JSON
}

// sample is one snapshot of the counters the status derives rates from.
type sample struct {
	t       time.Time
	classes map[string]counters
	wire    uint64 // over all classes
	point   HistoryPoint
	// hists are kept only while the sample may still start a window.
	hists map[string]aggregator.Histogram
}

type counters struct {
	ingested, ingestedBytes, acked, wire, retries, errors uint64
}

// NewSampler returns a sampler of node that has taken its first sample.
func NewSampler(node Node, opts SamplerOptions) (*Sampler, error) {
	return newSamplerAt(node, opts, time.Now())
}

// newSamplerAt is NewSampler with the first sample taken at now.
func newSamplerAt(node Node, opts SamplerOptions, now time.Time) (*Sampler, error) {
	if isNil(node) {
		return nil, fmt.Errorf("%w: NewSampler: node is nil", ErrInvalidOptions)
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	s := &Sampler{node: node, opts: opts, max: int(opts.History/opts.Interval) + 1}
	s.sampleAt(now)
	return s, nil
}

// Run samples every Interval until ctx ends, and returns ctx.Err(). It
// returns ErrRunning at once if another Run of s has not returned. The
// caller owns the goroutine: `go s.Run(ctx)`, then cancel ctx to stop it.
func (s *Sampler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			s.sampleAt(now)
		}
	}
}

// Status returns the status derived at the latest sample. Its slices and
// maps are shared with other callers: read them, do not modify them.
func (s *Sampler) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// statusJSON returns Status encoded as JSON (shared: do not modify).
func (s *Sampler) statusJSON() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body
}

// sampleAt takes a sample of the node at now and derives the status.
func (s *Sampler) sampleAt(now time.Time) {
	st := s.node.Stats()
	shapes := s.node.Shape()
	hists := s.node.LatencyHistograms()
	accepting := s.node.Accepting()

	cur := sample{t: now, classes: make(map[string]counters, len(st.Classes)), hists: hists}
	var backlog uint64
	for name, cs := range st.Classes {
		cur.classes[name] = counters{
			ingested: cs.Ingested, ingestedBytes: cs.IngestedBytes, acked: cs.Acked,
			wire: cs.WireBytes, retries: cs.Retries, errors: cs.Errors,
		}
		cur.wire += cs.WireBytes
		backlog += cs.Depth
	}
	l := st.Link
	cur.point = HistoryPoint{
		UnixMilli: now.UnixMilli(), Level: l.Level,
		Capacity: l.Capacity, Target: l.Target, SRTT: l.SRTT.Seconds(), Backlog: backlog,
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.samples); n > 0 {
		prev := &s.samples[n-1]
		if !now.After(prev.t) {
			return // out of order: keep the history monotonic
		}
		cur.point.Rate = perSecond(cur.wire, prev.wire, now.Sub(prev.t))
	}
	s.samples = append(s.samples, cur)
	// Bound the history by age and by count.
	drop := 0
	for drop < len(s.samples)-1 && (len(s.samples)-drop > s.max || now.Sub(s.samples[drop].t) > s.opts.History) {
		drop++
	}
	s.samples = slices.Delete(s.samples, 0, drop)

	// The window starts at the newest sample at least Window old, or at
	// the oldest one; histograms older than that are no longer needed.
	base := 0
	for i := len(s.samples) - 1; i >= 0; i-- {
		if now.Sub(s.samples[i].t) >= s.opts.Window {
			base = i
			break
		}
	}
	for i := range base {
		s.samples[i].hists = nil
	}
	s.status = s.derive(st, shapes, accepting, &s.samples[base], &s.samples[len(s.samples)-1])
	body, err := json.Marshal(s.status)
	if err != nil {
		// Status holds only finite numbers, strings, maps and slices.
		body = fmt.Appendf(nil, `{"schema":%d,"error":%q}`, StatusSchema, err.Error())
	}
	s.body = body
}

// derive builds the status from the latest snapshot and the window from
// base to cur. Called with s.mu held.
func (s *Sampler) derive(st aggregator.Stats, shapes []aggregator.ClassShape, accepting bool, base, cur *sample) Status {
	dt := cur.t.Sub(base.t)
	l := st.Link
	out := Status{
		Schema: StatusSchema, Node: s.opts.Name, Version: s.opts.Version, Time: cur.t.UTC().Truncate(time.Millisecond),
		IntervalSeconds: s.opts.Interval.Seconds(), WindowSeconds: dt.Seconds(), Accepting: accepting,
		StreamRefused: st.StreamRefused,
		Link: LinkStatus{
			Level: l.Level, LinkLevel: l.LinkLevel, Recovering: l.Recovering, Transitions: l.Transitions,
			CapacityBytesPerSecond: l.Capacity, TargetBytesPerSecond: l.Target,
			PacingBytesPerSecond: l.Pacing, DeliveryBytesPerSecond: l.Delivery,
			RateBytesPerSecond: perSecond(cur.wire, base.wire, dt),
			MinRTTSeconds:      l.MinRTT.Seconds(), SRTTSeconds: l.SRTT.Seconds(),
			CPUDelaySeconds: l.CPUDelay.Seconds(), SchedP99Seconds: l.SchedP99.Seconds(),
			ErrorRate: finite(l.ErrorRate), InFlightBytes: l.InFlight, State: l.Probe,
			Signals: make(map[string]int, len(signalNames)),
		},
		Spool:   SpoolStatus{Bytes: st.SpoolBytes, Quarantined: st.Quarantined},
		Classes: make([]ClassStatus, 0, len(shapes)),
		History: make([]HistoryPoint, 0, len(s.samples)),
	}
	for i, name := range signalNames {
		out.Link.Signals[name] = l.Signals[i]
	}
	for _, sh := range shapes {
		cs, ok := st.Classes[sh.Class]
		if !ok {
			continue
		}
		c, b := cur.classes[sh.Class], base.classes[sh.Class]
		cls := ClassStatus{
			Name: sh.Class, Priority: sh.Priority, Critical: sh.Critical,
			Action: sh.Action.String(), Deferred: sh.Deferred,

			RateBytesPerSecond:                perSecond(c.wire, b.wire, dt),
			GuaranteedBytesPerSecond:          sh.Rate.BytesPerSec,
			CeilingBytesPerSecond:             sh.Ceil.BytesPerSec,
			EffectiveGuaranteedBytesPerSecond: sh.Guaranteed.BytesPerSec,
			EffectiveCeilingBytesPerSecond:    sh.CeilNow.BytesPerSec,
			CeilingSource:                     ceilingSource(sh),
			Share:                             share(sh),

			InEventsPerSecond:    perSecond(c.ingested, b.ingested, dt),
			InBytesPerSecond:     perSecond(c.ingestedBytes, b.ingestedBytes, dt),
			AckedEventsPerSecond: perSecond(c.acked, b.acked, dt),
			RetriesPerSecond:     perSecond(c.retries, b.retries, dt),
			ErrorsPerSecond:      perSecond(c.errors, b.errors, dt),

			BacklogEvents:    cs.Depth,
			BacklogBytes:     backlogBytes(cs),
			SpoolBytes:       cs.SpoolBytes,
			OldestAgeSeconds: cs.OldestAge.Seconds(),
			InFlightBatches:  cs.InFlight,
			Refused:          cs.Refused,
			DroppedByReason:  dropReasons(cs),
		}
		cls.DroppedByReason["expired"] = cs.Expired
		for _, v := range cls.DroppedByReason {
			cls.Dropped += v
		}
		cls.Compression, cls.CompressionAuto = cs.Compression.Level, cs.Compression.Auto
		cls.BatchTargetBytes, cls.Bottleneck = cs.Compression.BatchBytes, cs.Compression.Bottleneck
		cls.CompressionBusy = cs.Compression.Busy
		if cs.WireBytes > 0 {
			cls.CompressionRatio = float64(cs.RawBytes) / float64(cs.WireBytes)
		}
		if cs.Batches > 0 {
			cls.EventsPerBatch = float64(cs.Published) / float64(cs.Batches)
		}
		cls.Dictionary = DictStatus{Mode: string(cs.DictMode), ID: cs.Dict, Ratio: cs.DictRatio, PlainRatio: cs.DictPlainRatio,
			Batches: cs.DictBatches, Trainings: cs.DictTrainings, Adoptions: cs.DictAdoptions, PublishErrors: cs.DictPublishErrors}
		if base != cur && base.hists != nil {
			h := cur.hists[sh.Class].Sub(base.hists[sh.Class])
			cls.Latency = LatencyStatus{
				Count:      h.Count,
				P50Seconds: h.Quantile(0.50).Seconds(),
				P95Seconds: h.Quantile(0.95).Seconds(),
				P99Seconds: h.Quantile(0.99).Seconds(),
			}
		}
		out.Classes = append(out.Classes, cls)
	}
	for i := range s.samples {
		out.History = append(out.History, s.samples[i].point)
	}
	return out
}

// share names how class sh gets capacity now (ClassStatus.Share).
func share(sh aggregator.ClassShape) string {
	switch {
	case sh.Unshaped:
		return "unshaped"
	case sh.Deferred:
		return "deferred"
	case sh.Critical:
		return "strict"
	case sh.Action == priority.ActionThrottle:
		return "leftover"
	case !sh.Guaranteed.IsZero():
		return "guaranteed"
	}
	return "priority"
}

// ceilingSource says whose limit sh's ceiling in force is: "class" when
// its own ceiling is the lower (or the lanes have no rate), "link" when
// the rate the lanes share is, "" when none is in force.
func ceilingSource(sh aggregator.ClassShape) string {
	switch {
	case sh.CeilNow.BytesPerSec <= 0:
		return ""
	case sh.Ceil.BytesPerSec > 0 && sh.Ceil.BytesPerSec == sh.CeilNow.BytesPerSec:
		return "class"
	}
	return "link"
}

// backlogBytes estimates the bytes of a class's unacknowledged events:
// their count times the mean size of the events ingested since start,
// bounded by the spool's disk bytes (the bound itself when nothing was
// ingested since start, as after a restart with a backlog).
func backlogBytes(cs aggregator.ClassStats) int64 {
	if cs.Depth == 0 {
		return 0
	}
	if cs.Ingested == 0 {
		return cs.SpoolBytes
	}
	est := float64(cs.Depth) * float64(cs.IngestedBytes) / float64(cs.Ingested)
	return int64(min(est, float64(cs.SpoolBytes)))
}

// perSecond is the rate of a counter between two readings dt apart; 0
// when dt is not positive or the counter went backwards.
func perSecond(now, then uint64, dt time.Duration) float64 {
	if dt <= 0 || now < then {
		return 0
	}
	return float64(now-then) / dt.Seconds()
}

// finite replaces NaN and infinities, which JSON cannot carry, with 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
