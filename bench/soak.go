package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/internal/blast"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/wire"
)

// SoakConfig configures RunSoak.
type SoakConfig struct {
	Mode       string // one of the Mode constants; default ModeSegmentBatch
	Clients    int    // keep-alive clients; default 32
	PerRequest int    // events per request body; default 100
	// Duration is the paced run. Required.
	Duration time.Duration
	// Rate is the offered load in events/s. Zero: Fraction of the
	// end-to-end maximum, measured first (see RunSoak).
	Rate float64
	// Fraction of the end-to-end maximum to offer; default 0.8.
	Fraction float64
	// Calibrate is the unthrottled run that measures the intake maximum,
	// its first fifth not measured; default min(20s, Duration/5). Ignored
	// when Rate is set.
	Calibrate time.Duration
	// Step is the length of each paced step of the ramp that measures the
	// end-to-end maximum; default min(15s, Duration/10). Ignored when Rate
	// is set.
	Step time.Duration
	// Every is the sampling interval; default min(10s, Duration/6), at
	// least 1s.
	Every time.Duration
	// Node adjusts the node; Dir, Conn and Node are set by RunSoak.
	Node aggregator.Options
}

func (c *SoakConfig) setDefaults() error {
	if c.Duration <= 0 {
		return errors.New("bench: soak: Duration not set")
	}
	c.Mode = cmp.Or(c.Mode, ModeSegmentBatch)
	if c.Clients <= 0 {
		c.Clients = 32
	}
	if c.PerRequest <= 0 {
		c.PerRequest = 100
	}
	if c.Fraction <= 0 {
		c.Fraction = 0.8
	}
	if c.Calibrate <= 0 {
		c.Calibrate = min(20*time.Second, c.Duration/5)
	}
	if c.Step <= 0 {
		c.Step = min(15*time.Second, c.Duration/10)
	}
	if c.Every <= 0 {
		c.Every = max(min(10*time.Second, c.Duration/6), time.Second)
	}
	if c.Duration/c.Every < 3 {
		return fmt.Errorf("bench: soak: %v is less than three samples of %v", c.Duration, c.Every)
	}
	return nil
}

// SoakSample is one sampling interval of the paced run. Counters are of
// the interval; gauges are read at its end.
type SoakSample struct {
	At         time.Duration `json:"at_ns"`        // end of the interval, from the start of the paced run
	Events     uint64        `json:"events"`       // events answered 200 in the interval
	Rate       float64       `json:"events_per_s"` // the same per second
	P50        time.Duration `json:"p50_ns"`       // latency of requests answered in the interval, from their scheduled send time
	P99        time.Duration `json:"p99_ns"`
	Max        time.Duration `json:"max_ns"`
	RSS        int64         `json:"rss_bytes"`        // VmRSS of this process: node, handler, HTTP server, clients
	RSSAnon    int64         `json:"rss_anon_bytes"`   // its anonymous part (RssAnon): without the spool's mapped files
	HeapInuse  uint64        `json:"heap_inuse_bytes"` // Go heap spans in use
	Goroutines int           `json:"goroutines"`
	NATSRSS    int64         `json:"nats_rss_bytes"` // VmRSS of the NATS server child
	Depth      uint64        `json:"spool_depth"`    // events spooled and not yet acknowledged
	Level      int           `json:"level"`          // the node's degradation level
	Acked      uint64        `json:"acked"`          // events acknowledged by JetStream since the node started
	Dedup      int           `json:"dedup_entries"`  // event ids in the handler's dedup window
	CPU        float64       `json:"cpu_cores"`      // this process's CPU time per second of the interval
	NATSCPU    float64       `json:"nats_cpu_cores"`

	lat latencyHist
}

// SoakVerdict compares the last third of the samples with the second
// third; the first third is warm-up. Each field pair is (second third,
// last third).
type SoakVerdict struct {
	MidRSS         int64         `json:"mid_rss_bytes"` // highest RSS
	LastRSS        int64         `json:"last_rss_bytes"`
	MidGoroutines  int           `json:"mid_goroutines"` // most goroutines
	LastGoroutines int           `json:"last_goroutines"`
	MidP99         time.Duration `json:"mid_p99_ns"` // p99 of every request answered in the third
	LastP99        time.Duration `json:"last_p99_ns"`
	MidDepth       uint64        `json:"mid_spool_depth"`    // deepest spool of the second third
	EndDepth       uint64        `json:"end_spool_depth"`    // spool depth at the last sample
	DepthFloor     uint64        `json:"spool_depth_floor"`  // depth that always passes: the in-flight window and a few batches
	MidNATSRSS     int64         `json:"mid_nats_rss_bytes"` // highest NATS RSS; reported, not judged
	LastNATSRSS    int64         `json:"last_nats_rss_bytes"`
	Failures       []string      `json:"failures"` // why the run is not flat; empty if it is
}

// Flat reports whether the run passed.
func (v SoakVerdict) Flat() bool { return len(v.Failures) == 0 }

// The verdict's bounds.
const (
	soakRSSGrowth       = 0.10     // RSS may grow by 10% of the second third's…
	soakRSSSlack        = 16 << 20 // …or by 16 MiB, whichever is more
	soakGoroutineGrowth = 10
	soakP99Growth       = 1.5                   // p99 may grow 1.5×…
	soakP99Slack        = 20 * time.Millisecond // …or by 20 ms, whichever is more
	soakDepthGrowth     = 1.5
)

// judgeSoak computes the verdict of samples (at least three).
func judgeSoak(samples []SoakSample, depthFloor uint64) SoakVerdict {
	n := len(samples)
	mid, last := samples[n/3:2*n/3], samples[2*n/3:]
	v := SoakVerdict{EndDepth: samples[n-1].Depth, DepthFloor: depthFloor}
	var midLat, lastLat latencyHist
	for _, s := range mid {
		v.MidRSS, v.MidGoroutines = max(v.MidRSS, s.RSS), max(v.MidGoroutines, s.Goroutines)
		v.MidNATSRSS, v.MidDepth = max(v.MidNATSRSS, s.NATSRSS), max(v.MidDepth, s.Depth)
		midLat.merge(&s.lat)
	}
	for _, s := range last {
		v.LastRSS, v.LastGoroutines = max(v.LastRSS, s.RSS), max(v.LastGoroutines, s.Goroutines)
		v.LastNATSRSS = max(v.LastNATSRSS, s.NATSRSS)
		lastLat.merge(&s.lat)
	}
	v.MidP99, v.LastP99 = midLat.quantile(0.99), lastLat.quantile(0.99)

	fail := func(format string, a ...any) { v.Failures = append(v.Failures, fmt.Sprintf(format, a...)) }
	if allowed := max(int64(float64(v.MidRSS)*soakRSSGrowth), soakRSSSlack); v.LastRSS-v.MidRSS > allowed {
		fail("RSS grew %.1f MiB (%.1f → %.1f MiB), allowed %.1f MiB", mib(v.LastRSS-v.MidRSS), mib(v.MidRSS), mib(v.LastRSS), mib(allowed))
	}
	if v.LastGoroutines-v.MidGoroutines > soakGoroutineGrowth {
		fail("goroutines grew by %d (%d → %d), allowed %d", v.LastGoroutines-v.MidGoroutines, v.MidGoroutines, v.LastGoroutines, soakGoroutineGrowth)
	}
	if allowed := max(time.Duration(float64(v.MidP99)*soakP99Growth), v.MidP99+soakP99Slack); v.LastP99 > allowed {
		r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
		fail("p99 rose from %v to %v, allowed %v", r(v.MidP99), r(v.LastP99), r(allowed))
	}
	if allowed := max(uint64(float64(v.MidDepth)*soakDepthGrowth), depthFloor); v.EndDepth > allowed {
		fail("spool depth %d at the end, deepest in the second third %d, allowed %d: the node falls behind", v.EndDepth, v.MidDepth, allowed)
	}
	return v
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// The ramp that measures the end-to-end maximum: paced steps from
// rampStart × the intake maximum, each rampFactor × the last, until a step
// is not kept: fewer than rampKeep of its offered events answered, or
// acknowledged by JetStream, within it.
const (
	rampStart  = 0.2
	rampFactor = 1.1
	rampKeep   = 0.97
)

// SoakStep is one step of the ramp, its rates over the step.
type SoakStep struct {
	Offered  float64 `json:"offered_events_per_s"`
	Answered float64 `json:"answered_events_per_s"` // events answered 200
	Acked    float64 `json:"acked_events_per_s"`    // events acknowledged by JetStream
	Depth    uint64  `json:"spool_depth"`           // at the end of the step
	Kept     bool    `json:"kept"`
}

// SoakResult is one soak run.
type SoakResult struct {
	Mode       string  `json:"mode"`
	Clients    int     `json:"clients"`
	PerRequest int     `json:"per_request"`
	Calibrated float64 `json:"calibrated_events_per_s"` // intake maximum, unthrottled; 0 if the rate was given
	// EndToEnd is the end-to-end maximum: the highest step of the ramp
	// kept; 0 if the rate was given.
	EndToEnd    float64       `json:"end_to_end_events_per_s"`
	Steps       []SoakStep    `json:"steps"`
	CalibDrain  time.Duration `json:"calibration_drain_ns"` // end of the ramp → all acked
	Rate        float64       `json:"rate_events_per_s"`    // offered load of the paced run
	Duration    time.Duration `json:"duration_ns"`
	Samples     []SoakSample  `json:"samples"`
	P99         time.Duration `json:"p99_ns"` // of the whole paced run
	Max         time.Duration `json:"max_ns"`
	Drain       time.Duration `json:"drain_ns"` // end of the paced run → all acked
	Accepted    uint64        `json:"accepted"` // events answered 200, calibration included
	Acked       uint64        `json:"acked"`    // events acknowledged by JetStream
	Stored      uint64        `json:"stored"`   // events in the stream, from its batches' headers
	Batches     int           `json:"batches"`  // stream messages
	Degraded    int           `json:"degraded_batches"`
	Transitions uint64        `json:"level_transitions"`
	Verdict     SoakVerdict   `json:"verdict"`
}

// defaultMaxInFlight is aggregator.Options.MaxInFlight's default.
const defaultMaxInFlight = 16

// RunSoak runs the HTTP ingest path of RunHTTPIngest (node with cfg.Node
// spooling in dir and publishing to srv, ingest.Handler on 127.0.0.1,
// cfg.Clients keep-alive clients) at a steady load for cfg.Duration and
// samples the process every cfg.Every. Without cfg.Rate it first measures
// the end-to-end maximum and offers cfg.Fraction of it. Unthrottled
// clients measure the intake maximum (requests answered); but answered is
// not shipped: on a small machine the intake's fsyncs and parsing take the
// cores the shipper needs, and at full intake the spool grows. So a ramp
// of paced steps follows, from a fifth of the intake maximum up by 10% a
// step, and the end-to-end maximum is the highest step whose events were
// both answered and acknowledged by JetStream within it (97%).
//
// The paced run is open-loop: request r is due at start + r/rate, each
// client sends the next request due and waits for its time, and a
// request's latency counts from when it was due, so a stall shows in the
// latencies of every request it delayed (no coordinated omission).
//
// At the end it waits for JetStream to acknowledge every event answered
// 200 and counts the events of the stream from its batches' headers: each
// spool range once, as many events as were accepted. The result carries
// the samples and the verdict; the error is for a failed request or a
// count that does not add up, and comes with the samples taken so far.
func RunSoak(ctx context.Context, srv *blast.Server, dir string, events [][]byte, cfg SoakConfig, progress func(SoakSample)) (SoakResult, error) {
	if err := cfg.setDefaults(); err != nil {
		return SoakResult{}, err
	}
	res := SoakResult{Mode: cfg.Mode, Clients: cfg.Clients, PerRequest: cfg.PerRequest, Duration: cfg.Duration}
	pl, err := buildPayload(cfg.Mode, events, cfg.PerRequest, cfg.Mode == ModeSegmentBatch)
	if err != nil {
		return res, err
	}
	nc, err := Connect(srv.URL)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	opts := cfg.Node
	opts.Dir, opts.Conn, opts.Node = dir, nc, httpNode
	node, err := aggregator.New(opts)
	if err != nil {
		return res, err
	}
	defer node.Close()
	h, err := ingest.NewHandler(node, ingest.Options{Node: httpNode})
	if err != nil {
		return res, err
	}
	addr, stop, err := serveLoopback(h)
	if err != nil {
		return res, err
	}
	defer stop()
	gen := newLoadGen("http://"+addr+pl.path, pl, cfg.Clients)
	defer gen.close()
	s := &soakRig{gen: gen, per: cfg.PerRequest}

	// Calibration: unthrottled, a fifth of it to warm up, then measured.
	// It also warms the paced run: the dedup window fills, the spool has
	// rotated segments.
	if cfg.Rate > 0 {
		res.Rate = cfg.Rate
	} else {
		warm := time.Now().Add(cfg.Calibrate / 5)
		if err := s.phase(ctx, warm, 0)(); err != nil {
			return res, fmt.Errorf("bench: soak: calibration: %w", err)
		}
		t0, n0 := time.Now(), s.answered.Load()
		if err := s.phase(ctx, t0.Add(cfg.Calibrate-cfg.Calibrate/5), 0)(); err != nil {
			return res, fmt.Errorf("bench: soak: calibration: %w", err)
		}
		res.Calibrated = float64(s.answered.Load()-n0) / time.Since(t0).Seconds()
		if err := waitAcked(ctx, node, s.total.Load()); err != nil {
			return res, fmt.Errorf("bench: soak: calibration: %w", err)
		}
		if err := s.ramp(ctx, node, &res, cfg.Step); err != nil {
			return res, fmt.Errorf("bench: soak: ramp: %w", err)
		}
		res.Rate = cfg.Fraction * res.EndToEnd
		t1 := time.Now()
		if err := waitAcked(ctx, node, s.total.Load()); err != nil {
			return res, fmt.Errorf("bench: soak: calibration: %w", err)
		}
		res.CalibDrain = time.Since(t1)
	}

	// The paced run, sampled from here.
	n := int(cfg.Duration / cfg.Every)
	every := cfg.Every
	spacing := float64(time.Second) * float64(cfg.PerRequest) / res.Rate
	s.rec.reset()
	s.answered.Store(0)
	prev := soakCounters{at: time.Now(), cpu: processCPU(), natsCPU: srv.CPUTime()}
	start := prev.at
	var all latencyHist
	wait := s.phase(ctx, start.Add(time.Duration(n)*every), spacing)
	var runErr error
	for k := 1; k <= n; k++ {
		if k < n {
			select {
			case <-time.After(time.Until(start.Add(time.Duration(k) * every))):
			case <-s.stopped:
				k = n // a request failed: take the last sample now
			}
		}
		if k == n {
			runErr = wait()
		}
		smp := s.sample(&prev, start, node, h, srv)
		all.merge(&smp.lat)
		res.Samples = append(res.Samples, smp)
		if progress != nil {
			progress(smp)
		}
	}
	if runErr != nil {
		return res, fmt.Errorf("bench: soak: %w", runErr)
	}
	res.P99, res.Max = all.quantile(0.99), all.max

	// Every answered event must reach the stream, once.
	accepted := s.total.Load()
	t1 := time.Now()
	if err := waitAcked(ctx, node, accepted); err != nil {
		return res, fmt.Errorf("bench: soak: drain: %w", err)
	}
	res.Drain = time.Since(t1)
	st := h.Stats()
	if st.Accepted != accepted || st.Failed != 0 || st.Rejected != 0 || st.Duplicates != 0 || st.Dropped != 0 {
		return res, fmt.Errorf("bench: soak: handler stats %+v, want %d accepted and nothing else", st, accepted)
	}
	stop()
	if err := node.Shutdown(ctx); err != nil {
		return res, err
	}
	ns := node.Stats()
	cs := ns.Classes[ingest.DefaultClass]
	res.Accepted, res.Acked, res.Transitions = accepted, cs.Acked, ns.Link.Transitions
	if cs.Acked != accepted || cs.Ingested != accepted {
		return res, fmt.Errorf("bench: soak: node ingested %d and acked %d events, want %d", cs.Ingested, cs.Acked, accepted)
	}
	stored, batches, degraded, err := countStream(ctx, nc, opts.Stream)
	res.Stored, res.Batches, res.Degraded = stored, batches, degraded
	if err != nil {
		return res, err
	}
	if stored != accepted {
		return res, fmt.Errorf("bench: soak: %d events in the stream, %d acknowledged", stored, accepted)
	}

	batch := uint64(1)
	if cs.Batches > 0 {
		batch = max(cs.Published/cs.Batches, 1)
	}
	floor := uint64(cmp.Or(cfg.Node.MaxInFlight, defaultMaxInFlight)+4) * batch
	res.Verdict = judgeSoak(res.Samples, floor)
	return res, nil
}

// soakRig is the load generator of a soak: the clients, the next request
// number (shared by every phase, so Segment messageIds stay unique) and
// what was answered.
type soakRig struct {
	gen      *loadGen
	per      int
	next     atomic.Int64  // next request number
	answered atomic.Uint64 // events answered 200 since the last sample (paced run) or ever (calibration)
	total    atomic.Uint64 // events answered 200 ever
	rec      latencyRec
	stopped  chan struct{} // closed when the current phase's requests fail
}

// phase starts the clients sending requests until end: each one when it
// is due, spacing nanoseconds apart from now, or back to back with
// spacing 0. It returns a function that waits for the clients and returns
// the first failure.
func (s *soakRig) phase(ctx context.Context, end time.Time, spacing float64) func() error {
	ctx, cancel := context.WithCancelCause(ctx)
	s.stopped = make(chan struct{})
	stopped := s.stopped
	context.AfterFunc(ctx, func() { close(stopped) })
	start, first := time.Now(), s.next.Load()
	var wg sync.WaitGroup
	for _, c := range s.gen.clients {
		wg.Go(func() {
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			for ctx.Err() == nil {
				r := s.next.Add(1) - 1
				due := time.Now()
				if spacing > 0 {
					due = start.Add(time.Duration(float64(r-first) * spacing))
				}
				if !due.Before(end) {
					return
				}
				if d := time.Until(due); d > 0 {
					t.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
				}
				if err := c.post(ctx, s.gen.url, s.gen.pl, int(r)); err != nil {
					cancel(fmt.Errorf("request %d: %w", r, err))
					return
				}
				s.rec.observe(time.Since(due))
				s.answered.Add(uint64(s.per))
				s.total.Add(uint64(s.per))
			}
		})
	}
	return func() error {
		wg.Wait()
		defer cancel(nil)
		return context.Cause(ctx) // nil unless a request failed or ctx ended
	}
}

// ramp runs the steps of the end-to-end calibration from res.Calibrated
// and sets res.EndToEnd and res.Steps.
func (s *soakRig) ramp(ctx context.Context, node *aggregator.Node, res *SoakResult, step time.Duration) error {
	acked := func() uint64 { return node.Stats().Classes[ingest.DefaultClass].Acked }
	for rate := rampStart * res.Calibrated; ; rate *= rampFactor {
		a0, k0, t0 := s.total.Load(), acked(), time.Now()
		if err := s.phase(ctx, t0.Add(step), float64(time.Second)*float64(s.per)/rate)(); err != nil {
			return err
		}
		secs := time.Since(t0).Seconds()
		st := SoakStep{
			Offered:  rate,
			Answered: float64(s.total.Load()-a0) / secs,
			Acked:    float64(acked()-k0) / secs,
			Depth:    node.Stats().Classes[ingest.DefaultClass].Depth,
		}
		st.Kept = st.Answered >= rampKeep*rate && st.Acked >= rampKeep*rate
		res.Steps = append(res.Steps, st)
		if !st.Kept {
			break
		}
		res.EndToEnd = rate
	}
	if res.EndToEnd == 0 {
		return fmt.Errorf("the first step, %.0f events/s (%.0f%% of the intake maximum), was not kept", res.Steps[0].Offered, 100*rampStart)
	}
	return nil
}

// soakCounters are the cumulative counters a sample takes differences of.
type soakCounters struct {
	at           time.Time
	cpu, natsCPU time.Duration
}

// sample takes the sample of the interval since prev and advances prev.
func (s *soakRig) sample(prev *soakCounters, start time.Time, node *aggregator.Node, h *ingest.Handler, srv *blast.Server) SoakSample {
	now := soakCounters{at: time.Now(), cpu: processCPU(), natsCPU: srv.CPUTime()}
	secs := now.at.Sub(prev.at).Seconds()
	smp := SoakSample{
		At:      now.at.Sub(start),
		Events:  s.answered.Swap(0),
		CPU:     (now.cpu - prev.cpu).Seconds() / secs,
		NATSCPU: (now.natsCPU - prev.natsCPU).Seconds() / secs,
		RSS:     procStatus("self", "VmRSS"),
		RSSAnon: procStatus("self", "RssAnon"),
		NATSRSS: procStatus(strconv.Itoa(srv.Pid()), "VmRSS"),
	}
	*prev = now
	smp.Rate = float64(smp.Events) / secs
	s.rec.take(&smp.lat)
	smp.P50, smp.P99, smp.Max = smp.lat.quantile(0.5), smp.lat.quantile(0.99), smp.lat.max
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	smp.HeapInuse, smp.Goroutines = ms.HeapInuse, runtime.NumGoroutine()
	st := node.Stats()
	smp.Depth, smp.Acked, smp.Level = st.Classes[ingest.DefaultClass].Depth, st.Classes[ingest.DefaultClass].Acked, st.Link.Level
	smp.Dedup = h.Stats().DedupEntries
	return smp
}

// procStatus is the field key (in kB, such as VmRSS) of /proc/<pid>/status
// in bytes, 0 where there is none.
func procStatus(pid, key string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	_, v, ok := bytes.Cut(b, []byte("\n"+key+":"))
	if !ok {
		return 0
	}
	v, _, _ = bytes.Cut(v, []byte("\n"))
	v = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))
	kb, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0
	}
	return kb << 10
}

// countStream reads the headers of every message of the stream and
// returns the events they count, the messages and those shipped with
// fields dropped. Each batch must be of the default class and no two may
// cover the same spool sequence.
func countStream(ctx context.Context, nc *nats.Conn, stream string) (events uint64, batches, degraded int, err error) {
	stream = cmp.Or(stream, "SLUICE")
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, 0, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	oc, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return 0, 0, 0, err
	}
	it, err := oc.Messages()
	if err != nil {
		return 0, 0, 0, err
	}
	defer it.Stop()
	type span struct{ first, last uint64 }
	spans := make(map[string][]span) // by spool id
	for batches < int(info.State.Msgs) {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return events, batches, degraded, fmt.Errorf("bench: read stream headers: message %d of %d: %w", batches+1, info.State.Msgs, err)
		}
		batches++
		b, err := wire.ParseHeader(nats.Header(m.Headers()))
		if err != nil {
			return events, batches, degraded, fmt.Errorf("bench: stream message %d: %w", batches, err)
		}
		if b.Class != ingest.DefaultClass {
			return events, batches, degraded, fmt.Errorf("bench: stream message %d: class %q", batches, b.Class)
		}
		if len(b.Dropped) > 0 {
			degraded++
		}
		events += uint64(b.Count)
		spans[b.Spool] = append(spans[b.Spool], span{b.First, b.Last})
	}
	for id, ss := range spans {
		slices.SortFunc(ss, func(a, b span) int { return cmp.Compare(a.first, b.first) })
		for i := 1; i < len(ss); i++ {
			if ss[i].first <= ss[i-1].last {
				return events, batches, degraded, fmt.Errorf("bench: spool %s: ranges %d-%d and %d-%d overlap", id, ss[i-1].first, ss[i-1].last, ss[i].first, ss[i].last)
			}
		}
	}
	return events, batches, degraded, nil
}

// latencyRec collects the latencies of an interval from concurrent
// clients.
type latencyRec struct {
	mu sync.Mutex
	h  latencyHist
}

func (r *latencyRec) observe(d time.Duration) {
	r.mu.Lock()
	r.h.observe(d)
	r.mu.Unlock()
}

// take moves the interval's latencies to dst and starts the next interval.
func (r *latencyRec) take(dst *latencyHist) {
	r.mu.Lock()
	*dst = r.h
	r.h = latencyHist{}
	r.mu.Unlock()
}

func (r *latencyRec) reset() { r.take(new(latencyHist)) }

// latencyHist counts durations in buckets histSub to a doubling (4.4%
// wide) from 1µs to about 18 minutes; quantiles are bucket upper bounds,
// never above the largest duration seen.
type latencyHist struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histSub     = 16
	histBuckets = 30*histSub + 1
)

// histBucket is d's bucket: 0 up to 1µs, then i covers
// [2^((i-1)/histSub), 2^(i/histSub)) µs.
func histBucket(d time.Duration) int {
	if d <= time.Microsecond {
		return 0
	}
	i := int(math.Log2(float64(d)/float64(time.Microsecond))*histSub) + 1
	return min(i, histBuckets-1)
}

func (h *latencyHist) observe(d time.Duration) {
	h.counts[histBucket(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *latencyHist) merge(o *latencyHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile is the q-quantile's bucket's upper bound, at most h.max; 0
// for no durations.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			up := time.Duration(float64(time.Microsecond) * math.Exp2(float64(i)/histSub))
			return min(up, h.max)
		}
	}
	return h.max
}
