package shaper

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

const mb = 1_000_000

// linkSim is a deterministic discrete-event link: a FIFO bottleneck of rate
// R(t) with a byte buffer, propagation delay each way, seeded server jitter,
// optional batched acks (ack compression) and ack loss (seen as timeouts).
type linkSim struct {
	rate     func(t time.Time) int64
	prop     func(t time.Time) time.Duration
	buf      int64
	ackBatch int
	jitter   time.Duration
	ackLoss  float64
	timeout  time.Duration
	rng      *rand.Rand

	linkFree time.Time
	lastAck  time.Time
	events   []simEvent // ordered by at
	held     []simEvent
}

type simEvent struct {
	at  time.Time
	id  uint64
	err bool
}

func (s *linkSim) send(now time.Time, id uint64, bytes int) {
	arr := now.Add(s.prop(now))
	start := maxTime(arr, s.linkFree)
	r := s.rate(start)
	queued := mulDiv(int64(start.Sub(arr)), r, nano)
	if queued > s.buf || (s.ackLoss > 0 && s.rng.Float64() < s.ackLoss) {
		s.push(simEvent{at: now.Add(s.timeout), id: id, err: true})
		return
	}
	dep := start.Add(time.Duration(mulDiv(int64(bytes), nano, r)))
	s.linkFree = dep
	at := dep.Add(s.prop(dep))
	if s.jitter > 0 {
		at = at.Add(time.Duration(s.rng.Int64N(int64(s.jitter))))
	}
	at = maxTime(at, s.lastAck) // acks stay in order
	s.lastAck = at
	ev := simEvent{at: at, id: id}
	if s.ackBatch > 1 {
		s.held = append(s.held, ev)
		if len(s.held) < s.ackBatch {
			return
		}
		for _, h := range s.held {
			h.at = at
			s.push(h)
		}
		s.held = s.held[:0]
		return
	}
	s.push(ev)
}

func (s *linkSim) push(ev simEvent) {
	i := len(s.events)
	s.events = append(s.events, ev)
	for i > 0 && s.events[i-1].at.After(ev.at) {
		s.events[i] = s.events[i-1]
		i--
	}
	s.events[i] = ev
}

type simRun struct {
	e       *Estimator
	link    *linkSim
	now     time.Time
	id      uint64
	size    int
	nextTx  time.Time
	maxBwHi int64
	// app-limited source: offered bytes/s (0 = always backlogged)
	offered int64
}

func newSimRun(t testing.TB, o EstimatorOptions, l *linkSim) *simRun {
	t.Helper()
	e, err := NewEstimator(o)
	if err != nil {
		t.Fatal(err)
	}
	if l.rng == nil {
		l.rng = rand.New(rand.NewPCG(11, 12))
	}
	if l.timeout == 0 {
		l.timeout = time.Second
	}
	if l.prop == nil {
		l.prop = func(time.Time) time.Duration { return 20 * time.Millisecond }
	}
	if l.buf == 0 {
		l.buf = 4 * mb
	}
	e.SetBacklogAt(t0, true)
	return &simRun{e: e, link: l, now: t0, size: 16 << 10, nextTx: t0}
}

// run advances the simulation until end, calling check after each event.
func (r *simRun) run(end time.Time, check func(now time.Time, s Snapshot)) {
	for r.now.Before(end) {
		s := r.e.SnapshotAt(r.now)
		pace := s.Pacing
		limited := false
		if r.offered > 0 && r.offered < pace {
			pace, limited = r.offered, true
		}
		canSend := s.InflightMsgs < s.InflightCapMsgs
		next := end
		if canSend {
			next = earlier(next, later(r.nextTx, r.now))
		}
		if len(r.link.events) > 0 {
			next = earlier(next, r.link.events[0].at)
		}
		r.now = later(next, r.now)
		if !r.now.Before(end) {
			return
		}
		for len(r.link.events) > 0 && !r.link.events[0].at.After(r.now) {
			ev := r.link.events[0]
			r.link.events = r.link.events[1:]
			if ev.err {
				r.e.OnErrorAt(r.now, ev.id, OutcomeTimeout)
			} else {
				r.e.OnAckAt(r.now, ev.id)
			}
		}
		if canSend && !r.nextTx.After(r.now) {
			r.id++
			r.e.OnSendAt(r.now, r.id, r.size, limited)
			r.link.send(r.now, r.id, r.size)
			r.nextTx = r.now.Add(time.Duration(mulDiv(int64(r.size), nano, max(pace, 1))))
		}
		if check != nil {
			check(r.now, r.e.SnapshotAt(r.now))
		}
	}
}

func stepRate(at time.Time, before, after int64) func(time.Time) int64 {
	return func(t time.Time) int64 {
		if t.Before(at) {
			return before
		}
		return after
	}
}

// §2 worked example: 4×16 KB sent at t=0, acks at 100/110/120/130 ms.
func TestEstimatorWorkedExample(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{LinkCeil: 10 * mb})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		e.OnSendAt(t0, uint64(i), 16<<10, true)
	}
	before := e.SnapshotAt(t0).Capacity
	want := []float64{160, 290.9, 400, 492.3} // KiB/s
	for i := range 4 {
		s, ok := e.OnAckAt(ms(100+10*i), uint64(i))
		if !ok {
			t.Fatal("unknown id")
		}
		if got := float64(s.Rate) / 1024; math.Abs(got-want[i]) > 0.1 {
			t.Errorf("sample %d = %.1f KiB/s, want %.1f", i, got, want[i])
		}
		if !s.AppLimited {
			t.Errorf("sample %d not app-limited", i)
		}
	}
	if after := e.SnapshotAt(ms(130)).Capacity; after < before {
		t.Errorf("app-limited first-flight samples lowered C: %d → %d", before, after)
	}
	if _, ok := e.OnAckAt(ms(140), 0); ok {
		t.Error("duplicate ack accepted")
	}
}

// (a) app- or shaper-limited traffic never lowers C.
func TestEstimatorAppLimitedNeverLowers(t *testing.T) {
	r := newSimRun(t, EstimatorOptions{LinkCeil: 10 * mb}, &linkSim{rate: func(time.Time) int64 { return 10 * mb }})
	r.offered = 1 * mb
	var last int64
	r.run(t0.Add(30*time.Second), func(now time.Time, s Snapshot) {
		if last != 0 && s.Capacity < last && s.State != StateUp {
			t.Fatalf("%v: C fell %d → %d while app-limited", now.Sub(t0), last, s.Capacity)
		}
		if s.State != StateUp {
			last = s.Capacity
		}
	})
}

// (b) with ack compression, MaxBw ≤ 1.1 × the true rate.
func TestEstimatorAckCompression(t *testing.T) {
	r := newSimRun(t, EstimatorOptions{LinkCeil: 20 * mb, InitialRate: 2 * mb},
		&linkSim{rate: func(time.Time) int64 { return 5 * mb }, ackBatch: 4, jitter: 2 * time.Millisecond})
	r.run(t0.Add(20*time.Second), func(now time.Time, s Snapshot) {
		if now.After(t0.Add(time.Second)) && s.MaxBw > 55*mb/10 {
			t.Fatalf("%v: MaxBw %d > 1.1 × 5 MB/s", now.Sub(t0), s.MaxBw)
		}
	})
	if c := r.e.SnapshotAt(r.now).Capacity; c < 4*mb {
		t.Errorf("C = %d, want ≈ 5 MB/s", c)
	}
}

// (c) a step 10 → 2 MB/s gives C ∈ [1.6, 2.4] MB/s within 5 rounds.
func TestEstimatorStepDown(t *testing.T) {
	step := t0.Add(10 * time.Second)
	r := newSimRun(t, EstimatorOptions{LinkCeil: 20 * mb}, &linkSim{rate: stepRate(step, 10*mb, 2*mb)})
	r.run(step, nil)
	if c := r.e.SnapshotAt(step).Capacity; c < 8*mb || c > 12*mb {
		t.Fatalf("before the step C = %d, want ≈ 10 MB/s", c)
	}
	startRounds := r.e.SnapshotAt(step).Rounds
	var at int64 = -1
	var lastR int64
	r.run(step.Add(10*time.Second), func(now time.Time, s Snapshot) {
		if testing.Verbose() && s.Rounds != lastR && s.Rounds-startRounds < 12 {
			lastR = s.Rounds
			t.Logf("round %d: C %d BwLo %d MaxBw %d infl %.2f cong %v state %v", s.Rounds-startRounds, s.Capacity, s.BwLo, s.MaxBw, s.Inflation, s.Congested, s.State)
		}
		if at < 0 && s.Capacity >= 16*mb/10 && s.Capacity <= 24*mb/10 {
			at = s.Rounds - startRounds
		}
	})
	if at < 0 || at > 5 {
		t.Errorf("C reached [1.6, 2.4] MB/s after %d rounds, want ≤ 5 (final %+v)", at, r.e.SnapshotAt(r.now))
	}
	if c := r.e.SnapshotAt(r.now).Capacity; c < 16*mb/10 || c > 26*mb/10 {
		t.Errorf("10 s after the step C = %d", c)
	}
}

// (d) a step 2 → 10 MB/s gives C ≥ 8 MB/s within 3 s + 8 rounds.
func TestEstimatorStepUp(t *testing.T) {
	step := t0.Add(10 * time.Second)
	r := newSimRun(t, EstimatorOptions{LinkCeil: 20 * mb}, &linkSim{rate: stepRate(step, 2*mb, 10*mb)})
	r.run(step, nil)
	if c := r.e.SnapshotAt(step).Capacity; c > 3*mb {
		t.Fatalf("before the step C = %d, want ≈ 2 MB/s", c)
	}
	var reached time.Time
	var roundsAt3s int64 = -1
	var lastState ProbeState = 99
	r.run(step.Add(15*time.Second), func(now time.Time, s Snapshot) {
		if testing.Verbose() && s.State != lastState {
			lastState = s.State
			t.Logf("%v: %v C %d MaxBw %d BwLo %d pacing %d rounds %d", now.Sub(step), s.State, s.Capacity, s.MaxBw, s.BwLo, s.Pacing, s.Rounds)
		}
		if roundsAt3s < 0 && !now.Before(step.Add(3*time.Second)) {
			roundsAt3s = s.Rounds
		}
		if reached.IsZero() && s.Capacity >= 8*mb {
			reached = now
			if roundsAt3s >= 0 && s.Rounds > roundsAt3s+8 {
				t.Errorf("C ≥ 8 MB/s only %d rounds after step+3 s", s.Rounds-roundsAt3s)
			}
		}
	})
	if reached.IsZero() {
		t.Fatalf("C never reached 8 MB/s: %+v", r.e.SnapshotAt(r.now))
	}
}

// (e) MinRtt follows a permanent base-RTT increase within 10 s + one ProbeRTT.
func TestEstimatorMinRttFollowsIncrease(t *testing.T) {
	step := t0.Add(5 * time.Second)
	prop := func(t time.Time) time.Duration {
		if t.Before(step) {
			return 10 * time.Millisecond
		}
		return 40 * time.Millisecond
	}
	r := newSimRun(t, EstimatorOptions{LinkCeil: 20 * mb}, &linkSim{rate: func(time.Time) int64 { return 5 * mb }, prop: prop})
	r.run(step, nil)
	if m := r.e.SnapshotAt(step).MinRtt; m > 30*time.Millisecond {
		t.Fatalf("MinRtt %v before the step", m)
	}
	r.run(step.Add(10*time.Second+2*time.Second), nil)
	if m := r.e.SnapshotAt(r.now).MinRtt; m < 75*time.Millisecond {
		t.Errorf("MinRtt %v 12 s after base RTT rose to 80 ms", m)
	}
}

// (f) no NaN, Inf or division by zero with zero samples, zero intervals or
// duplicate timestamps.
func TestEstimatorDegenerate(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := e.SnapshotAt(t0)
	if s.Capacity <= 0 || s.Target <= 0 || s.Pacing <= 0 || s.InflightCapMsgs < 1 || math.IsNaN(s.Inflation) || math.IsNaN(s.ErrorRate) {
		t.Fatalf("empty snapshot %+v", s)
	}
	for i := range 20 {
		e.OnSendAt(t0, uint64(i), 0, false)
	}
	for i := range 20 {
		e.OnAckAt(t0, uint64(i)) // zero RTT, zero interval, zero bytes
	}
	e.OnErrorAt(t0, 99, OutcomeTimeout) // unknown id
	for i := range 20 {
		e.OnSendAt(t0, uint64(100+i), 1000, false)
		e.OnErrorAt(t0, uint64(100+i), OutcomeTimeout)
	}
	s = e.SnapshotAt(t0)
	if s.Capacity <= 0 || math.IsNaN(s.Inflation) || math.IsInf(s.Inflation, 0) || math.IsNaN(s.ErrorRate) || s.ErrorRate < 0 || s.ErrorRate > 1 {
		t.Fatalf("degenerate snapshot %+v", s)
	}
	if _, err := NewEstimator(EstimatorOptions{Headroom: 1.5}); err == nil {
		t.Error("headroom 1.5 accepted")
	}
}

// Outage: every attempt times out; errors rise and C does not collapse to
// zero; after the link returns, the estimate recovers.
func TestEstimatorOutage(t *testing.T) {
	out0, out1 := t0.Add(5*time.Second), t0.Add(15*time.Second)
	r := newSimRun(t, EstimatorOptions{LinkCeil: 10 * mb}, &linkSim{rate: func(time.Time) int64 { return 5 * mb }})
	r.link.ackLoss = 0
	r.run(out0, nil)
	r.link.ackLoss = 1
	r.run(out1, nil)
	s := r.e.SnapshotAt(out1)
	if s.ErrorRate < 0.3 || s.Capacity < DefaultMinRate {
		t.Errorf("during outage: %+v", s)
	}
	r.link.ackLoss = 0
	r.run(out1.Add(20*time.Second), nil)
	if s := r.e.SnapshotAt(r.now); s.Capacity < 4*mb || s.ErrorRate > 0.05 {
		t.Errorf("after outage: C %d err %.3f", s.Capacity, s.ErrorRate)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestMinRttConfirmedWithinSlack: RTT samples that jitter just above the
// minimum (no standing queue) keep MinRtt fresh, so a busy sender is never
// sent into ProbeRTT by jitter alone; a path whose every sample sits well
// above the minimum still probes.
func TestMinRttConfirmedWithinSlack(t *testing.T) {
	for _, tc := range []struct {
		jitter    time.Duration
		wantProbe bool
	}{
		{time.Millisecond, false},     // 40 → 41 ms: within 5%
		{10 * time.Millisecond, true}, // 40 → 50 ms: a queue, or a longer path
	} {
		e, err := NewEstimator(EstimatorOptions{LinkCeil: 2_500_000})
		if err != nil {
			t.Fatal(err)
		}
		e.SetBacklogAt(t0, true)
		type pending struct {
			id uint64
			at time.Time
		}
		var q []pending
		probed := false
		for i := range 3000 { // 30 s, one batch every 10 ms
			now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
			for len(q) > 0 && !q[0].at.After(now) {
				e.OnAckAt(q[0].at, q[0].id)
				q = q[1:]
			}
			rtt := 40 * time.Millisecond
			if i > 0 {
				rtt += tc.jitter
			}
			e.OnSendAt(now, uint64(i+1), 20_000, false)
			q = append(q, pending{uint64(i + 1), now.Add(rtt)})
			probed = probed || e.SnapshotAt(now).State == StateProbeRTT
		}
		if probed != tc.wantProbe {
			t.Errorf("jitter %v: ProbeRTT entered %v, want %v", tc.jitter, probed, tc.wantProbe)
		}
	}
}

// Errors of attempts sent before the link came back describe the outage:
// they do not count once the link is up, and the error rate starts at 0.
func TestEstimatorOutageErrorsForgotten(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{LinkCeil: 10 * mb})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		e.OnSendAt(ms(i), uint64(i), 1000, false)
	}
	e.SetLinkDownAt(ms(100), true)
	for i := range 4 {
		e.OnErrorAt(ms(200+i), uint64(i), OutcomeTimeout)
	}
	e.SetLinkDownAt(ms(300), false)
	if r := e.SnapshotAt(ms(300)).ErrorRate; r != 0 {
		t.Fatalf("error rate %v right after the link came back, want 0", r)
	}
	for i := 4; i < 8; i++ { // sent before the outage, failing after it
		e.OnErrorAt(ms(400+i), uint64(i), OutcomeTimeout)
	}
	for i := 8; i < 16; i++ { // sent after: acked
		e.OnSendAt(ms(500+i), uint64(i), 1000, false)
		e.OnAckAt(ms(560+i), uint64(i))
	}
	if s := e.SnapshotAt(ms(700)); s.ErrorRate != 0 || s.InflightMsgs != 0 {
		t.Errorf("after the outage: error rate %v, in flight %d; want 0, 0", s.ErrorRate, s.InflightMsgs)
	}
}

// A probe capped by LinkCeil can never show the 1.15 × C that Startup
// needs when C is already within 1/1.15 of the ceiling (seen: C stuck at
// 17.5 of a 20 Mbit/s link after a step back up). What the probe delivered
// uncongested must lift the lower bound of an older cut.
func TestEstimatorProbeLiftsLowerBound(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{LinkCeil: 10 * mb})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw, e.minRtt = 10*mb, 40*time.Millisecond
	e.state, e.stateAt, e.probeStart = StateUp, t0, t0
	e.cPrev, e.bwLoSaved = 88*mb/10, 88*mb/10
	e.upBw, e.upSamples = 98*mb/10, DefaultMinRoundSamples
	e.r.acks = DefaultMinRoundSamples
	e.endRoundIf(t0.Add(time.Second), sentPkt{})
	s := e.SnapshotAt(t0.Add(time.Second))
	if s.State != StateCruise || s.Capacity != 98*mb/10 {
		t.Errorf("after a capped probe that delivered 9.8 MB/s: %v, C = %d; want cruise at 9.8 MB/s", s.State, s.Capacity)
	}
	if !s.Probing {
		t.Error("Probing false in the round right after the probe")
	}
}

// The first ack after a silence of outageGap ends an outage the estimator
// saw only as failures (a blackhole): the error rate restarts at 0.
func TestEstimatorSilenceThenAck(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{LinkCeil: 10 * mb})
	if err != nil {
		t.Fatal(err)
	}
	id := uint64(0)
	for i := range 8 { // acks, then failures only
		e.OnSendAt(ms(10*i), id, 1000, false)
		e.OnAckAt(ms(10*i+5), id)
		id++
	}
	for i := range 40 {
		e.OnSendAt(ms(100+100*i), id, 1000, false)
		e.OnErrorAt(ms(150+100*i), id, OutcomeTimeout)
		id++
	}
	if r := e.SnapshotAt(ms(4100)).ErrorRate; r < 0.3 {
		t.Fatalf("error rate %v while failing", r)
	}
	e.OnSendAt(ms(6000), id, 1000, false)
	e.OnAckAt(ms(6040), id)
	if r := e.SnapshotAt(ms(6040)).ErrorRate; r != 0 {
		t.Errorf("error rate %v after the first ack following 6 s of silence, want 0", r)
	}
}

// Within 5% of the ceiling the estimator does not probe (the probe would be
// capped at the ceiling and overshoot the target for a round); it drops
// the lower bound instead, and C returns to the ceiling.
func TestEstimatorNearCeilingNoProbe(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{LinkCeil: 10 * mb})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw, e.bwLo, e.minRtt = 10*mb, 96*mb/10, 40*time.Millisecond
	e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Second)
	e.SetBacklogAt(t0.Add(2*time.Second), true)
	s := e.SnapshotAt(t0.Add(2 * time.Second))
	if s.State != StateCruise || s.Capacity != 10*mb || s.Pacing != 8*mb {
		t.Errorf("near the ceiling: %v C %d pacing %d; want cruise at C = ceiling, pacing 0.8 of it", s.State, s.Capacity, s.Pacing)
	}
	// Further below the ceiling it probes as before.
	e.bwLo, e.probeAt = 8*mb, t0.Add(3*time.Second)
	e.SetBacklogAt(t0.Add(4*time.Second), true)
	if s := e.SnapshotAt(t0.Add(4 * time.Second)); s.State != StateUp {
		t.Errorf("at 0.8 of the ceiling: %v, want a probe", s.State)
	}
}

// A sender limited by its own CPU sees its acks queue behind its own work
// (a loopback: 1 ms RTT rising to 10 ms). That is not the link's queue: C
// is cut only when the shaper was holding sends back.
func TestEstimatorSelfQueueNotCongestion(t *testing.T) {
	for _, tc := range []struct {
		limited bool // OnSendAt's limited: the shaper held nothing back
		cut     bool
	}{
		{limited: true, cut: false},
		{limited: false, cut: true},
	} {
		e, err := NewEstimator(EstimatorOptions{LinkCeil: 100 * mb})
		if err != nil {
			t.Fatal(err)
		}
		id, now := uint64(0), t0
		send := func(rtt time.Duration) {
			for range 8 {
				id++
				e.OnSendAt(now, id, 10_000, tc.limited)
				e.OnAckAt(now.Add(rtt), id)
				now = now.Add(time.Millisecond)
			}
			now = now.Add(rtt)
		}
		for range 20 {
			send(time.Millisecond)
		}
		before := e.SnapshotAt(now).Capacity
		for range 40 {
			send(10 * time.Millisecond)
		}
		after := e.SnapshotAt(now).Capacity
		if cut := after < before*9/10; cut != tc.cut {
			t.Errorf("limited=%v: C %d → %d, cut %v, want %v", tc.limited, before, after, cut, tc.cut)
		}
	}
}

// ProbeRTT does not drain: the pacing at the target keeps the node's own
// queue empty, and a drained pipe cost a tenth of a second's goodput.
func TestEstimatorProbeRTTCap(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{LinkCeil: 10 * mb})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw, e.minRtt, e.avgMsg = 10*mb, 40*time.Millisecond, 1000
	e.state, e.stateAt = StateCruise, t0
	cruise := e.SnapshotAt(t0).InflightCapBytes
	e.state = StateProbeRTT
	if got := e.SnapshotAt(t0).InflightCapBytes; got != cruise || got != 2*(10*mb*40/1000+1000) {
		t.Errorf("ProbeRTT cap %d, cruise cap %d; want both 2 × (BDP + a batch)", got, cruise)
	}
}

// Startup paces at 2·C, and its cap follows the pacing: at 2·C·MinRtt
// it could send no faster than C, and never saw growth.
func TestEstimatorStartupCapFollowsPacing(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{LinkCeil: 100 * mb})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw, e.minRtt, e.avgMsg = 10*mb, 40*time.Millisecond, 1000
	e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Hour)
	cruise := e.SnapshotAt(t0)
	e.state = StateStartup
	s := e.SnapshotAt(t0)
	if s.Pacing != 2*cruise.Capacity || s.InflightCapBytes != 2*(s.Pacing*40/1000+1000) {
		t.Errorf("Startup: pacing %d, cap %d; cruise: capacity %d, cap %d", s.Pacing, s.InflightCapBytes, cruise.Capacity, cruise.InflightCapBytes)
	}
}

// Drain: when Startup ends it has left up to a BDP queued; the estimator
// paces at half the target, counts as probing (its inflation is its own),
// and cruises at the target once the bytes in flight fit one BDP, within
// maxDrainRounds.
func TestEstimatorDrainAfterStartup(t *testing.T) {
	r := newSimRun(t, EstimatorOptions{LinkCeil: 20 * mb}, &linkSim{rate: func(time.Time) int64 { return 5 * mb }})
	var sawDrain, drained bool
	var startupEnd int64
	r.run(t0.Add(5*time.Second), func(now time.Time, s Snapshot) {
		switch {
		case s.State == StateStartup:
		case r.e.drainFrom > 0:
			if !sawDrain {
				startupEnd = s.Rounds
			}
			sawDrain = true
			if s.Pacing != s.Target/2 || !s.Probing {
				t.Fatalf("%v: draining with pacing %d (target %d), probing %v", now.Sub(t0), s.Pacing, s.Target, s.Probing)
			}
			if s.Rounds > startupEnd+maxDrainRounds {
				t.Fatalf("%v: still draining after %d rounds", now.Sub(t0), s.Rounds-startupEnd)
			}
		case sawDrain && !drained && s.State == StateCruise:
			drained = true
			if s.Pacing != s.Target {
				t.Fatalf("%v: after the drain pacing %d, target %d", now.Sub(t0), s.Pacing, s.Target)
			}
		}
	})
	if !sawDrain || !drained {
		t.Fatalf("drain seen %v, ended %v", sawDrain, drained)
	}
}

// Startup ends at the configured ceiling even when demand near the link
// makes most rounds app-limited (the stall rule then never sees three
// bandwidth-limited rounds, and Startup paced at the ceiling for good).
func TestEstimatorStartupEndsAtCeiling(t *testing.T) {
	r := newSimRun(t, EstimatorOptions{LinkCeil: 5 * mb}, &linkSim{rate: func(time.Time) int64 { return 5 * mb }})
	r.offered = 5 * mb * 97 / 100
	r.run(t0.Add(3*time.Second), nil)
	if s := r.e.SnapshotAt(r.now); s.State == StateStartup || s.Pacing > s.Target {
		t.Errorf("after 3 s: %v, pacing %d, target %d", s.State, s.Pacing, s.Target)
	}
}

// serialLink is a FIFO bottleneck of a fixed rate with a propagation delay
// each way and no queue limit: the ack of bytes sent at t comes back at
// max(t+prop, free) + bytes/rate + prop. Its instants are exact, so a test
// built on it is a step table over fixed instants.
type serialLink struct {
	rate int64 // bytes/s
	prop time.Duration
	free time.Time
}

func (l *serialLink) ackAt(sent time.Time, bytes int) time.Time {
	start := maxTime(sent.Add(l.prop), l.free)
	l.free = start.Add(time.Duration(mulDiv(int64(bytes), nano, l.rate)))
	return l.free.Add(l.prop)
}

// estEvent is one row of an estimator step table: a send (limited as
// OnSendAt's) or, with ack set, an ack.
type estEvent struct {
	at      time.Time
	ack     bool
	id      uint64
	bytes   int
	limited bool
}

// playEvents applies events in time order (sends before acks at the same
// instant), calling check after each.
func playEvents(e *Estimator, evs []estEvent, check func(ev estEvent)) {
	slices.SortStableFunc(evs, func(a, b estEvent) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmpBool(a.ack, b.ack)
	})
	for _, ev := range evs {
		if ev.ack {
			e.OnAckAt(ev.at, ev.id)
		} else {
			e.OnSendAt(ev.at, ev.id, ev.bytes, ev.limited)
		}
		if check != nil {
			check(ev)
		}
	}
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// Small messages that fit in a token-bucket bottleneck's burst (tbf) pass
// at the line rate: two 4 KB messages sent together on a 4 Mbit/s link
// behind a veth are acked 2.000 and 2.033 ms later, a "delivery rate" of
// 4 MB/s. Those sends were not held back by the shaper (app-limited), and
// app-limited samples are no evidence of capacity: C stays at the 0.5 MB/s
// measured before, whether cruising or probing (seen: the node read 8.2
// MB/s on a 4 Mbit/s tbf link).
func TestEstimatorBurstIsNotCapacity(t *testing.T) {
	const linkRate = 500_000
	for _, state := range []ProbeState{StateCruise, StateUp} {
		e, err := NewEstimator(EstimatorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.maxBw, e.minRtt, e.minRttT = linkRate, 2*time.Millisecond, t0
		e.state, e.stateAt, e.probeAt = state, t0, t0.Add(time.Hour)
		e.cPrev, e.probeStart = linkRate, t0
		var evs []estEvent
		for i := range 20 { // a pair every 100 ms for 2 s
			at := ms(100 * i)
			a, b := uint64(2*i+1), uint64(2*i+2)
			evs = append(evs,
				estEvent{at: at, id: a, bytes: 4096, limited: true},
				estEvent{at: at, id: b, bytes: 4096, limited: true},
				estEvent{at: at.Add(2 * time.Millisecond), ack: true, id: a},
				estEvent{at: at.Add(2033 * time.Microsecond), ack: true, id: b})
		}
		playEvents(e, evs, func(ev estEvent) {
			s := e.SnapshotAt(ev.at)
			if s.Capacity > linkRate*5/4 || s.Pacing > linkRate*5/4 || s.State == StateStartup {
				t.Fatalf("from %v, %v after the ack of %d: C %d, pacing %d, %v; want C 0.5 MB/s, no Startup",
					state, ev.at.Sub(t0), ev.id, s.Capacity, s.Pacing, s.State)
			}
		})
	}
}

// RTT samples net of the batch's own serialization, with no configured
// ceiling to take it at: on a 4 Mbit/s link with 20 ms each way, a 1 KB
// batch is acked after 42 ms and a 64 KB one after 171 ms on an empty
// link. The per-byte slope of the minimum RTT by size (2 µs/B) takes the
// 131 ms of air time out, so a phase of only large batches reads no
// inflation and C is not cut; MinRtt is the 40 ms of the path.
func TestEstimatorRTTNetOfSerialization(t *testing.T) {
	const linkRate = 500_000
	e, err := NewEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw = linkRate
	e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Hour)
	l := &serialLink{rate: linkRate, prop: 20 * time.Millisecond}
	var evs []estEvent
	id := uint64(0)
	send := func(at time.Time, bytes int, limited bool) {
		id++
		evs = append(evs, estEvent{at: at, id: id, bytes: bytes, limited: limited},
			estEvent{at: l.ackAt(at, bytes), ack: true, id: id})
	}
	for i := range 30 { // 0–6 s: a held 64 KB batch every 200 ms
		at := ms(200 * i)
		send(at, 64<<10, false)
		if i < 10 { // 0–2 s: and a 1 KB one after it has left the link
			send(at.Add(150*time.Millisecond), 1<<10, true)
		}
	}
	playEvents(e, evs, nil)
	s := e.SnapshotAt(ms(6200))
	if s.MinRtt < 39*time.Millisecond || s.MinRtt > 41*time.Millisecond {
		t.Errorf("MinRtt %v, want the path's 40 ms", s.MinRtt)
	}
	if s.Inflation > 1.1 || s.Congested || s.Capacity != linkRate {
		t.Errorf("after 4 s of 64 KB batches on an empty link: inflation %.2f, congested %v, C %d; want ≈ 1, false, %d",
			s.Inflation, s.Congested, s.Capacity, linkRate)
	}
}

// With no load the shaper held back for StaleAfter (20 s), the capacity
// estimate ages: it halves every further 20 s (linearly between halvings),
// to no less than a quarter of what was measured, and is flagged stale.
// The first load the shaper holds back then re-probes (Startup) and the
// measurement replaces the aged value within a few round trips.
func TestEstimatorIdleDecayThenReprobe(t *testing.T) {
	const linkRate = 2_500_000 // 20 Mbit/s
	e, err := NewEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw = linkRate
	e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Hour)
	e.OnSendAt(t0, 1, 16<<10, false) // held: the estimate was in use
	e.OnAckAt(ms(30), 1)
	for _, row := range []struct {
		idle  time.Duration
		c     int64
		stale bool
	}{
		{10 * time.Second, linkRate, false},
		{20 * time.Second, linkRate, false},
		{30 * time.Second, linkRate * 3 / 4, true},
		{40 * time.Second, linkRate / 2, true},
		{50 * time.Second, linkRate * 3 / 8, true},
		{60 * time.Second, linkRate / 4, true},
		{120 * time.Second, linkRate / 4, true},
	} {
		s := e.SnapshotAt(t0.Add(row.idle))
		if s.Capacity != row.c || s.Stale != row.stale {
			t.Errorf("idle %v: C %d, stale %v; want %d, %v", row.idle, s.Capacity, s.Stale, row.c, row.stale)
		}
	}
	// Load again after 2 min: 16 KB batches paced by the estimator.
	start := t0.Add(2 * time.Minute)
	l := &serialLink{rate: linkRate, prop: 10 * time.Millisecond, free: start}
	sawStartup := false
	now, id := start, uint64(10)
	var acks []estEvent
	var within time.Time
	for now.Before(start.Add(3 * time.Second)) {
		for len(acks) > 0 && !acks[0].at.After(now) {
			e.OnAckAt(acks[0].at, acks[0].id)
			acks = acks[1:]
		}
		s := e.SnapshotAt(now)
		sawStartup = sawStartup || s.State == StateStartup
		ok := s.Capacity >= linkRate*3/4 && s.Capacity <= linkRate*5/4
		switch {
		case ok && within.IsZero():
			within = now
		case !ok && !within.IsZero():
			t.Fatalf("%v after the load: C %d left ±25%% of %d", now.Sub(start), s.Capacity, linkRate)
		}
		if s.InflightBytes+16<<10 <= max(s.InflightCapBytes, 16<<10) {
			id++
			e.OnSendAt(now, id, 16<<10, false)
			acks = append(acks, estEvent{at: l.ackAt(now, 16<<10), id: id})
			now = now.Add(time.Duration(mulDiv(16<<10, nano, max(s.Pacing, 1))))
		} else {
			now = acks[0].at
		}
	}
	t.Logf("C within ±25%% of the link %v after the load came back", within.Sub(start))
	if !sawStartup {
		t.Error("no Startup when the load came back to a stale estimate")
	}
	if within.IsZero() || within.Sub(start) > 500*time.Millisecond {
		t.Errorf("C within ±25%% of the link %v after the load came back, want ≤ 500 ms (final %+v)", within.Sub(start), e.SnapshotAt(now))
	}
}

// The initial rate is a guess, not a measurement: on a 4 Mbit/s link (0.5
// MB/s) with the default 1 MiB/s guess and no ceiling, C is within ±25% of
// the link within a few round trips of the first backlogged load and stays
// there.
func TestEstimatorFirstLoadReplacesGuess(t *testing.T) {
	const linkRate = 500_000
	r := newSimRun(t, EstimatorOptions{}, &linkSim{rate: func(time.Time) int64 { return linkRate }, buf: 200_000})
	var within time.Time
	r.run(t0.Add(10*time.Second), func(now time.Time, s Snapshot) {
		ok := s.Capacity >= linkRate*3/4 && s.Capacity <= linkRate*5/4
		switch {
		case ok && within.IsZero():
			within = now
		case !ok && !within.IsZero() && s.State != StateUp:
			t.Fatalf("%v: C %d left ±25%% of %d (%v)", now.Sub(t0), s.Capacity, linkRate, s.State)
		}
	})
	t.Logf("C within ±25%% of the link %v after the first load", within.Sub(t0))
	if within.IsZero() || within.Sub(t0) > time.Second {
		t.Errorf("C within ±25%% of the link after %v, want ≤ 1 s (final %+v)", within.Sub(t0), r.e.SnapshotAt(r.now))
	}
}

// A probe at 1.25·C for T queues a quarter of T of delay at the
// bottleneck: a round of the probe whose minimum RTT carries only that is
// not congestion and does not cut C. A queue beyond it still does.
func TestEstimatorProbeOwnQueueNoCut(t *testing.T) {
	const linkRate = 2_500_000
	for _, tc := range []struct {
		extra time.Duration // the round's minimum RTT over MinRtt
		cut   bool
	}{
		{25 * time.Millisecond, false}, // round ends 95 ms into the probe: allowance 5 + 23.75 ms
		{60 * time.Millisecond, true},  // 130 ms in: allowance 5 + 32.5 ms
	} {
		e, err := NewEstimator(EstimatorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.maxBw, e.minRtt, e.minRttT = linkRate, 40*time.Millisecond, t0
		for i := range e.bwRing {
			e.bwRing[i] = linkRate
		}
		e.state, e.stateAt, e.probeStart, e.cPrev = StateUp, t0, t0, linkRate
		for range 40 { // a queue that has stood a while: RTTVAR small
			e.rto.Sample(40*time.Millisecond + tc.extra)
		}
		// One round of four held 16 KB sends, 10 ms apart from the probe's
		// start, each acked 40 ms + extra later.
		var evs []estEvent
		for i := range 4 {
			at := ms(10 * i)
			evs = append(evs, estEvent{at: at, id: uint64(i + 1), bytes: 16 << 10},
				estEvent{at: at.Add(40*time.Millisecond + tc.extra), ack: true, id: uint64(i + 1)})
		}
		playEvents(e, evs, nil)
		s := e.SnapshotAt(ms(300))
		if cut := s.BwLo > 0 && s.BwLo < linkRate; cut != tc.cut {
			t.Errorf("probe round %v over MinRtt: BwLo %d (C %d, %v), cut %v, want %v", tc.extra, s.BwLo, s.Capacity, s.State, cut, tc.cut)
		}
	}
}

// A slope fitted too steep (the large size class's minimum was read in a
// queue) with a low MaxBw takes more than the air time out of a large
// batch's RTT; MinRtt never falls below the path's RTT as the smallest
// batches show it (their minimum less their own air time) (seen: 31 ms on a 40 ms emulated path, then a cut every
// round).
func TestEstimatorMinRttNotBelowSmallest(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw = 200_000
	e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Hour)
	playEvents(e, []estEvent{
		{at: ms(0), id: 1, bytes: 1 << 10, limited: true},
		{at: ms(0).Add(42048 * time.Microsecond), ack: true, id: 1}, // 40 ms + 2 ms of air
		{at: ms(100), id: 2, bytes: 64 << 10},
		{at: ms(400), ack: true, id: 2}, // queued: 300 ms
		{at: ms(1000), id: 3, bytes: 40 << 10},
		{at: ms(1122), ack: true, id: 3}, // empty link: 40 ms + 82 ms of air, less than the 164 ms the slope takes
	}, nil)
	// The floor is the 1 KB batch's RTT less its air time at the steep
	// slope (4 µs/B: 4 ms); without it MinRtt fell to rtt/64.
	if m := e.SnapshotAt(ms(1200)).MinRtt; m < 37*time.Millisecond {
		t.Errorf("MinRtt %v, want no less than the 1 KB batch's 42 ms less its air time", m)
	}
}

// A slow first ack (a stream being created) in the smallest size class
// does not hold MinRtt up: later, faster samples lower it at once.
func TestEstimatorSlowFirstAckNoFloor(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evs := []estEvent{
		{at: ms(0), id: 1, bytes: 1 << 10},
		{at: ms(345), ack: true, id: 1},
	}
	for i := range 8 {
		at := ms(400 + 10*i)
		evs = append(evs, estEvent{at: at, id: uint64(i + 2), bytes: 16 << 10},
			estEvent{at: at.Add(50 * time.Millisecond), ack: true, id: uint64(i + 2)})
	}
	playEvents(e, evs, nil)
	if m := e.SnapshotAt(ms(600)).MinRtt; m > 50*time.Millisecond {
		t.Errorf("MinRtt %v after 50 ms acks that followed a 345 ms first one, want ≤ 50 ms", m)
	}
}

// The queue a probe leaves is its own: in the two rounds after it, a
// standing queue does not cut C; in the third it does.
func TestEstimatorNoCutForProbeQueue(t *testing.T) {
	const linkRate = 500_000
	e, err := NewEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw, e.minRtt, e.minRttT = linkRate, 40*time.Millisecond, t0
	for i := range e.bwRing {
		e.bwRing[i] = linkRate
	}
	e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Hour)
	e.rounds, e.probeEndRound = 5, 5
	for range 40 {
		e.rto.Sample(100 * time.Millisecond)
	}
	id := uint64(0)
	for j, wantCut := range []bool{false, false, true} {
		var evs []estEvent
		for i := range 4 { // held sends, each acked after a 60 ms queue
			id++
			at := ms(300*j + 10*i)
			evs = append(evs, estEvent{at: at, id: id, bytes: 4 << 10},
				estEvent{at: at.Add(100 * time.Millisecond), ack: true, id: id})
		}
		playEvents(e, evs, nil)
		s := e.SnapshotAt(ms(300*j + 200))
		if cut := s.BwLo > 0; cut != wantCut || !s.Congested {
			t.Errorf("round %d after the probe: congested %v, BwLo %d; want congested, cut %v", s.Rounds-5, s.Congested, s.BwLo, wantCut)
		}
	}
}

// After cuts the probes run slower and MaxBw falls below the link; the
// serialization taken out of an RTT stays bounded by the fastest delivery
// seen in the last 10 s (500 KB/s here), so MinRtt stays at the path's 40
// ms instead of following MaxBw (200 KB/s) below it.
func TestEstimatorSerializationBoundedByDelivery(t *testing.T) {
	e, err := NewEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.maxBw = 200_000
	e.rateHi, e.rateHiT = 500_000, t0
	e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Hour)
	playEvents(e, []estEvent{
		{at: ms(0), id: 1, bytes: 1 << 10, limited: true},
		{at: ms(0).Add(42048 * time.Microsecond), ack: true, id: 1},
		{at: ms(100), id: 2, bytes: 64 << 10},
		{at: ms(400), ack: true, id: 2}, // queued
		{at: ms(1000), id: 3, bytes: 40 << 10},
		{at: ms(1122), ack: true, id: 3}, // empty link: 40 ms + 82 ms of air at 500 KB/s
	}, nil)
	if m := e.SnapshotAt(ms(1200)).MinRtt; m < 39*time.Millisecond || m > 41*time.Millisecond {
		t.Errorf("MinRtt %v, want the path's 40 ms", m)
	}
}

// After an idle minute the lanes have tokens, so a load that fills the link
// is admitted unheld: after the one held send that re-probes, every sample
// is app-limited. Those whose sends kept the pipe busy for MinRtt still
// measure the link in Startup (startupBusy): on a 20 Mbit/s link aged to a
// quarter, C is within ±25% of the link within 5 s of samples and stays
// there, and Startup ends (seen: Startup for 14 s at the aged quarter in
// the idle-overload scenario). Unheld pairs sent at once into an empty
// pipe (the tbf burst of TestEstimatorBurstIsNotCapacity) still never
// raise C in Startup.
func TestEstimatorStartupAfterIdleUnheldLoad(t *testing.T) {
	const linkRate = 2_500_000 // 20 Mbit/s
	for _, burst := range []bool{false, true} {
		e, err := NewEstimator(EstimatorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.maxBw = linkRate
		e.state, e.stateAt, e.probeAt = StateCruise, t0, t0.Add(time.Hour)
		rtt := 30 * time.Millisecond
		if burst {
			rtt = 2 * time.Millisecond // the tbf link behind a veth
		}
		e.OnSendAt(t0, 1, 16<<10, false) // held: the estimate was in use
		e.OnAckAt(t0.Add(rtt), 1)
		start := t0.Add(90 * time.Second) // 60 s past StaleAfter: aged to a quarter
		if s := e.SnapshotAt(start); s.Capacity != linkRate/4 || !s.Stale {
			t.Fatalf("burst %v: after the idle minute C %d, stale %v; want %d, stale", burst, s.Capacity, s.Stale, linkRate/4)
		}
		l := &serialLink{rate: linkRate, prop: 10 * time.Millisecond, free: start}
		var evs []estEvent
		id := uint64(1)
		send := func(at time.Time, bytes int, limited bool) {
			id++
			evs = append(evs, estEvent{at: at, id: id, bytes: bytes, limited: limited},
				estEvent{at: l.ackAt(at, bytes), ack: true, id: id})
		}
		if burst {
			// The held send, then a pair of 4 KB every 100 ms that the
			// bucket's burst passes at the line rate: acked 2.000 and
			// 2.033 ms later, 4 MB/s "delivered" (as in the burst test).
			evs = append(evs, estEvent{at: start, id: 2, bytes: 4096},
				estEvent{at: start.Add(2 * time.Millisecond), ack: true, id: 2})
			for i := range 50 {
				at := start.Add(100*time.Millisecond + time.Duration(i)*100*time.Millisecond)
				a, b := uint64(2*i+3), uint64(2*i+4)
				evs = append(evs,
					estEvent{at: at, id: a, bytes: 4096, limited: true},
					estEvent{at: at, id: b, bytes: 4096, limited: true},
					estEvent{at: at.Add(2 * time.Millisecond), ack: true, id: a},
					estEvent{at: at.Add(2033 * time.Microsecond), ack: true, id: b})
			}
		} else {
			send(start, 16<<10, false) // the one held send: re-probe
			gap := time.Duration(mulDiv(16<<10, nano, linkRate))
			for at := start.Add(gap); at.Before(start.Add(5 * time.Second)); at = at.Add(gap) {
				send(at, 16<<10, true) // the link's rate, unheld
			}
		}
		var within time.Time
		sawStartup := false
		playEvents(e, evs, func(ev estEvent) {
			s := e.SnapshotAt(ev.at)
			sawStartup = sawStartup || s.State == StateStartup
			if s.Capacity > linkRate*5/4 {
				t.Fatalf("burst %v: %v after the load: C %d above the %d link", burst, ev.at.Sub(start), s.Capacity, linkRate)
			}
			ok := s.Capacity >= linkRate*3/4
			switch {
			case burst:
			case ok && within.IsZero():
				within = ev.at
			case !ok && !within.IsZero():
				t.Fatalf("%v after the load: C %d left ±25%% of %d", ev.at.Sub(start), s.Capacity, linkRate)
			}
		})
		s := e.SnapshotAt(start.Add(5 * time.Second))
		if !sawStartup {
			t.Errorf("burst %v: no Startup after the held send", burst)
		}
		if burst {
			if s.Capacity > linkRate/4 {
				t.Errorf("bursts into an empty pipe raised C to %d from the aged %d", s.Capacity, linkRate/4)
			}
			continue
		}
		if !within.IsZero() {
			t.Logf("C within ±25%% of the link %v after the load came back", within.Sub(start))
		}
		if within.IsZero() || s.State == StateStartup {
			t.Errorf("5 s of unheld load filling the link: C %d (within at %v), %v; want within ±25%% of %d, Startup over",
				s.Capacity, within, s.State, linkRate)
		}
	}
}
