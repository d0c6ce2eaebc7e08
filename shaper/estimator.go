package shaper

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Estimator defaults (shaping-notes §2).
const (
	DefaultHeadroom        = 0.8
	DefaultInitialRate     = 1 << 20 // bytes/s when neither InitialRate nor LinkCeil is set
	DefaultMinRate         = 8 << 10 // bytes/s floor of the capacity estimate
	DefaultMinRttWindow    = 10 * time.Second
	DefaultProbeInterval   = 2 * time.Second // + U(0,1) s
	DefaultStaleAfter      = 20 * time.Second
	DefaultMinRoundSamples = 4
	bwWindowRounds         = 10
	probeRTTDuration       = 200 * time.Millisecond
)

// ProbeState is the estimator's probing phase.
// minRttSlack is the least tolerance within which an RTT sample confirms
// MinRtt (see OnAckAt).
const minRttSlack = 500 * time.Microsecond

// maxProbeLevel is the highest degradation level at which the estimator
// still probes upward. shaping-notes proposes 1; in the node a level-2 link
// whose capacity came back was never probed, so the low estimate kept the
// level at 2 (demand over a stale target) and the level kept the estimate
// low. Probing costs one round at 1.25 × C every 2–3 s. At level 3 (link
// down, critical only) it does not probe.
const maxProbeLevel = 2

type ProbeState uint8

const (
	StateStartup  ProbeState = iota // pace 2·C per round until growth stalls
	StateCruise                     // pace at Target = C × headroom
	StateUp                         // pace at 1.25·C for about one round
	StateProbeRTT                   // in-flight capped to refresh MinRtt
)

func (s ProbeState) String() string {
	switch s {
	case StateStartup:
		return "startup"
	case StateCruise:
		return "cruise"
	case StateUp:
		return "up"
	case StateProbeRTT:
		return "probe_rtt"
	}
	return fmt.Sprintf("ProbeState(%d)", uint8(s))
}

// EstimatorOptions configures an Estimator; zero values take the defaults.
type EstimatorOptions struct {
	// LinkCeil is the configured link ceiling in bytes/s; 0 = none.
	LinkCeil int64
	// Headroom: Target = min(LinkCeil, C) × Headroom. Default 0.8; (0, 1].
	Headroom float64
	// InitialRate is the capacity assumed before any sample, bytes/s.
	// Default LinkCeil, or 1 MiB/s without a ceiling.
	InitialRate int64
	// MinRate floors the capacity estimate, bytes/s. Default 8 KiB/s.
	MinRate int64
	// MinRttWindow: MinRtt older than this is re-probed. Default 10 s.
	MinRttWindow time.Duration
	// ProbeInterval: cruise this long (+ U(0,1) s) before probing up.
	// Default 2 s.
	ProbeInterval time.Duration
	// StaleAfter: the estimate is stale after this long with neither a
	// bandwidth-limited sample nor a send the shaper held back (nothing
	// tested it). A stale estimate halves every further StaleAfter, to no
	// less than a quarter of its last value, and the next held send
	// re-probes it (Startup). Default 20 s.
	StaleAfter time.Duration
	// Rand returns uniform values in [0, 1) for the probe timer's jitter;
	// nil means 0.5 (deterministic).
	Rand func() float64
}

// Snapshot is the estimator's view of the link at an instant. Rates are
// bytes/s.
type Snapshot struct {
	State        ProbeState
	DeliveryRate int64 // latest delivery-rate sample
	MaxBw        int64 // windowed max of bandwidth-limited samples
	BwLo         int64 // lower bound from congestion; 0 = none
	Capacity     int64 // C = min(MaxBw, BwLo), floored at MinRate
	Target       int64 // min(LinkCeil, C) × Headroom
	Pacing       int64 // what the lanes should use now (Target, or a probe rate)
	MinRtt       time.Duration
	SRTT, RTO    time.Duration
	// Inflation is the smaller of the last two rounds' minimum RTTs, less
	// CPUDelay, over MinRtt (1 = no queue); 0 before two rounds.
	Inflation float64
	// CPUDelay is the RTT inflation the node's own CPU explains, as last
	// given to SetCPUDelayAt: taken out of Inflation and of the standing
	// queue rule, so that acks queued behind a busy machine's work are not
	// read as the link's queue.
	CPUDelay time.Duration
	// Probing is true while the estimator probes upward and for the two
	// rounds after: a probe sends above capacity on purpose, so the
	// inflation of those rounds is its own doing, not the link's.
	Probing bool
	// ErrorRate is the per-round error fraction, EWMA α = 1/8.
	ErrorRate        float64
	InflightBytes    int64
	InflightMsgs     int64
	InflightCapBytes int64
	InflightCapMsgs  int64
	LastAckAt        time.Time
	Rounds           int64
	Congested        bool // the last round was congested
	// Stale: nothing tested the estimate for StaleAfter; Capacity is aged
	// (see EstimatorOptions.StaleAfter) and is re-measured at the next load.
	Stale bool
}

type sentPkt struct {
	bytes         int64
	delivered     int64
	deliveredTime time.Time
	firstSentTime time.Time
	sentTime      time.Time
	appLimited    bool
	senderLimited bool // OnSendAt's limited: the shaper did not hold this send back
}

type roundStats struct {
	acks, errs int64
	rttMin     time.Duration
	bwMax      int64 // max sample, including app-limited
	bwFull     int64 // max bandwidth-limited sample
	// ack clock: bytes delivered after the round's first ack, and when
	firstAck   time.Time
	ackedAfter int64
	// throttled: an attempt acked in the round had been held back by the
	// shaper (pacing or the in-flight cap), so the sender was limited by
	// the link's model, not by itself.
	throttled bool
	// busy: an app-limited sample of the round kept the pipe busy in
	// Startup (see startupBusy).
	busy bool
}

// ackRate is the round's ack-clock rate; with a standing queue all round
// the bottleneck was busy, so this measures its rate directly.
func (r roundStats) ackRate(now time.Time) int64 {
	if r.firstAck.IsZero() || !now.After(r.firstAck) || r.ackedAfter <= 0 {
		return 0
	}
	return mulDiv(r.ackedAfter, nano, int64(now.Sub(r.firstAck)))
}

// Estimator estimates link capacity from the publisher's acks and errors:
// delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation) and a
// BBR-style model (windowed max bandwidth, min RTT, a congestion-driven
// lower bound), with upward probing. Not safe for concurrent use.
type Estimator struct {
	o   EstimatorOptions
	rnd func() float64

	inflight      map[uint64]sentPkt
	inflightBytes int64
	avgMsg        int64
	delivered     int64
	deliveredTime time.Time
	firstSentTime time.Time
	appLimitedTo  int64 // app_limited marker: delivered value where it clears; 0 = none

	rounds        int64
	nextRoundDelv int64
	r             roundStats
	prevRttMin    time.Duration
	lastRttMin    time.Duration
	congested     bool
	standing      bool  // the last round's minimum RTT showed a standing queue
	ackRate       int64 // the last round's ack-clock rate

	bwRing   [bwWindowRounds]int64
	maxBw    int64
	bwLo     int64 // 0 = ∞
	minRtt   time.Duration
	minRttT  time.Time
	rto      RTO
	errPPM   int64
	lastAck  time.Time
	lastBw   int64
	lastFull time.Time
	latest   int64
	lastHeld time.Time // last send the shaper held back (OnSendAt's limited false)

	agedFrom int64 // the estimate when it went stale; 0 = not stale
	// rateHi is the highest delivery-rate sample of any kind within
	// MinRttWindow (rateHiT: when taken): the link carried it, so a byte
	// takes no longer than 1/rateHi on it. Unlike MaxBw it does not follow
	// the estimate down after a cut.
	rateHi  int64
	rateHiT time.Time
	sizeMin [sizeBuckets]sizeMin

	state            ProbeState
	stateAt          time.Time
	probeAt          time.Time
	cPrev            int64
	bwLoSaved        int64
	upBw             int64
	upRounds         int64
	probeStart       time.Time
	upSamples        int64
	startBw          int64
	stall            int
	rttProbeMin      time.Duration
	rttRoundsAtStart int64
	backlogged       bool
	level            int
	linkDown         bool
	probeEndRound    int64     // e.rounds when the last probe ended
	drainFrom        int64     // e.rounds when Startup ended and Drain began; 0 = not draining
	upSince          time.Time // when the link last came back; earlier attempts' errors are the outage's
	cpuDelay         time.Duration
}

// sizeBuckets are the batch size classes (powers of two) of the per-byte
// RTT slope: 1 B … 1 GiB.
const sizeBuckets = 31

// sizeMin is the minimum RTT seen for one size class within MinRttWindow.
type sizeMin struct {
	bytes int64
	rtt   time.Duration
	at    time.Time
}

// NewEstimator returns an estimator in Startup at the initial rate.
func NewEstimator(o EstimatorOptions) (*Estimator, error) {
	if o.Headroom == 0 {
		o.Headroom = DefaultHeadroom
	}
	if !(o.Headroom > 0 && o.Headroom <= 1) {
		return nil, fmt.Errorf("%w: headroom %v outside (0, 1]", ErrInvalidOptions, o.Headroom)
	}
	if o.LinkCeil < 0 || o.InitialRate < 0 || o.MinRate < 0 {
		return nil, fmt.Errorf("%w: negative rate", ErrInvalidOptions)
	}
	if o.InitialRate == 0 {
		o.InitialRate = o.LinkCeil
		if o.InitialRate == 0 {
			o.InitialRate = DefaultInitialRate
		}
	}
	if o.MinRate == 0 {
		o.MinRate = DefaultMinRate
	}
	if o.MinRttWindow == 0 {
		o.MinRttWindow = DefaultMinRttWindow
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = DefaultStaleAfter
	}
	e := &Estimator{o: o, inflight: make(map[uint64]sentPkt), rnd: o.Rand}
	if e.rnd == nil {
		e.rnd = func() float64 { return 0.5 }
	}
	e.maxBw = min(o.InitialRate, maxRate)
	return e, nil
}

func (e *Estimator) capacity() int64 {
	if e.state == StateUp {
		return e.cPrev
	}
	c := e.maxBw
	if e.bwLo > 0 {
		c = min(c, e.bwLo)
	}
	if e.o.LinkCeil > 0 {
		c = min(c, e.o.LinkCeil)
	}
	return max(c, e.o.MinRate)
}

// target is the model's rule (TargetRate), the one sluice plan evaluates.
func (e *Estimator) target() int64 { return TargetRate(e.capacity(), e.o.LinkCeil, e.o.Headroom) }

func (e *Estimator) capLink(r int64) int64 {
	if e.o.LinkCeil > 0 {
		return min(r, e.o.LinkCeil)
	}
	return min(r, maxRate)
}

func (e *Estimator) pacing() int64 {
	if e.drainFrom > 0 && e.state == StateCruise {
		return max(e.target()/2, e.o.MinRate)
	}
	switch e.state {
	case StateStartup:
		return e.capLink(2 * max(e.startBw, e.capacity()))
	case StateUp:
		return e.capLink(e.cPrev * 5 / 4)
	}
	return e.target()
}

// SetBacklogAt tells the estimator whether there is data waiting; it probes
// upward only with a backlog.
func (e *Estimator) SetBacklogAt(now time.Time, backlogged bool) {
	e.backlogged = backlogged
	e.tick(now)
}

// maxDrainRounds bounds Drain (see enterCruise).
const maxDrainRounds = 8

// bdp is the bandwidth-delay product C × MinRtt in bytes, 0 before an RTT.
func (e *Estimator) bdp() int64 {
	return int64(float64(e.capacity()) * e.minRtt.Seconds())
}

// nearCeilPct: a capacity at or above this percentage of LinkCeil is not
// probed; its lower bound is dropped instead (see tick).
const nearCeilPct = 95

// outageGap is the silence after which the next ack counts as the link
// coming back: the controller's stall rule (no ack for max(3·RTO, 5 s)
// with attempts in flight) at its floor.
const outageGap = 5 * time.Second

// SetLinkDownAt tells the estimator whether the connection to the
// upstream is down. When it comes back, the error rate starts again from
// zero and attempts sent before then no longer count as errors when they
// fail: they describe the outage, and left in the rate they would hold the
// node degraded for the many rounds the EWMA takes to forget them.
func (e *Estimator) SetLinkDownAt(now time.Time, down bool) {
	if e.linkDown && !down {
		e.upSince = now
		e.errPPM = 0
		e.r.errs = 0
	}
	e.linkDown = down
}

// SetCPUDelayAt tells the estimator how much RTT inflation the node's own
// CPU explains now (CPUStatus.Delay): that much of a round's queueing
// delay is not the link's. A busy 2-core machine delays its acks by
// milliseconds; read as a standing queue, that cut C to the ack clock of
// a CPU-bound sender and degraded a healthy link. The delay is
// subtracted, not a veto: a real queue larger than it still counts.
func (e *Estimator) SetCPUDelayAt(now time.Time, d time.Duration) {
	e.cpuDelay = max(d, 0)
	e.tick(now)
}

// netRtt is a round minimum RTT less the CPU's delay, not below MinRtt.
func (e *Estimator) netRtt(rtt time.Duration) time.Duration {
	return max(rtt-e.cpuDelay, min(rtt, e.minRtt))
}

// SetLevelAt tells the estimator the degradation level; it probes upward
// only at level ≤ 2 (maxProbeLevel).
func (e *Estimator) SetLevelAt(now time.Time, level int) {
	e.level = level
	e.tick(now)
}

// reprobe leaves a stale estimate for Startup from the aged value: the
// max filter's history was cleared when it went stale, so the rounds of
// this Startup replace the estimate rather than top it up.
func (e *Estimator) reprobe(now time.Time) {
	e.agedFrom = 0
	e.bwLo, e.drainFrom = 0, 0
	e.startBw, e.stall, e.upBw, e.upSamples, e.upRounds = 0, 0, 0, 0, 0
	e.state, e.stateAt, e.probeStart = StateStartup, now, now
}

// age runs the staleness rule (EstimatorOptions.StaleAfter): with nothing
// testing the estimate, a capacity measured long ago (or inflated by
// bursts a queue absorbed, or taken on a link that has since changed)
// would be trusted at full value by the next load, a burst into the
// bottleneck's queue that the critical classes then wait behind.
func (e *Estimator) age(now time.Time) {
	ev := e.lastHeld
	if e.lastFull.After(ev) {
		ev = e.lastFull
	}
	if ev.IsZero() {
		return // never tested: still the initial guess
	}
	d := now.Sub(ev) - e.o.StaleAfter
	if d <= 0 {
		return
	}
	if e.agedFrom == 0 {
		if e.state == StateUp {
			e.bwLo = e.bwLoSaved
		}
		e.state, e.drainFrom = StateCruise, 0
		e.agedFrom = e.capacity()
		e.bwLo = 0
		e.bwRing = [bwWindowRounds]int64{}
	}
	h := int64(e.o.StaleAfter)
	k, f := int64(d)/h, int64(d)%h
	c := e.agedFrom >> min(k, 62)
	c -= mulDiv(c, f, 2*h) // linear between halvings
	e.maxBw = max(c, e.agedFrom/4, e.o.MinRate)
}

// OnSendAt records that attempt id of bytes reached the socket at now.
// limited is true when the shaper did not hold the send back: the sender
// had nothing else to send, or was admitted at once (neither pacing nor the
// in-flight cap made it wait). Its samples are app-limited, and a round of
// only such sends never reads a standing queue as congestion. Samples taken
// while cruising below capacity are treated as app-limited in any case. Every attempt, retries included,
// needs its own id (its own reply inbox), so no sample is ambiguous.
func (e *Estimator) OnSendAt(now time.Time, id uint64, bytes int, limited bool) {
	e.tick(now)
	if !limited {
		// The shaper held this send back: the estimate is in use again.
		// A stale one is re-measured rather than trusted.
		e.lastHeld = now
		if e.agedFrom > 0 {
			e.reprobe(now)
		}
	}
	if len(e.inflight) == 0 {
		e.firstSentTime, e.deliveredTime = now, now
	}
	if limited || e.state == StateCruise || e.state == StateProbeRTT {
		e.appLimitedTo = max(e.delivered+e.inflightBytes+int64(bytes), 1)
	}
	b := int64(max(bytes, 0))
	e.inflight[id] = sentPkt{bytes: b, delivered: e.delivered, deliveredTime: e.deliveredTime,
		firstSentTime: e.firstSentTime, sentTime: now, appLimited: e.appLimitedTo != 0, senderLimited: limited}
	e.inflightBytes += b
	if e.avgMsg == 0 {
		e.avgMsg = b
	} else {
		e.avgMsg += (b - e.avgMsg) / 8
	}
}

// Sample is one delivery-rate sample.
type Sample struct {
	Rate       int64 // bytes/s; 0 when the interval was too short
	RTT        time.Duration
	AppLimited bool
}

// OnAckAt records the ack of attempt id and returns its sample. ok is false
// for an unknown id (already acked, errored or never sent).
func (e *Estimator) OnAckAt(now time.Time, id uint64) (s Sample, ok bool) {
	p, found := e.inflight[id]
	if !found {
		return Sample{}, false
	}
	delete(e.inflight, id)
	e.inflightBytes -= p.bytes
	e.delivered += p.bytes
	e.deliveredTime = now
	if !e.lastAck.IsZero() && now.Sub(e.lastAck) >= outageGap {
		// The first ack after a silence: the link is back (a blackhole
		// never shows as a disconnect), see SetLinkDownAt.
		e.upSince, e.errPPM, e.r.errs = now, 0, 0
	}
	e.lastAck = now
	if e.appLimitedTo != 0 && e.delivered > e.appLimitedTo {
		e.appLimitedTo = 0
	}
	rtt := now.Sub(p.sentTime)
	if rtt > 0 {
		// The queue-delay measures (MinRtt, each round's minimum, and so
		// inflation) leave out the attempt's own transmission time: a
		// bulk batch sized to 25 ms of air time took 20 ms longer than a
		// small critical one, and a round of only bulk batches read as
		// 1.5× inflation on an idle link (seen: level 1 at 5 Mbit/s).
		// SRTT and the RTO keep the whole RTT. See serialization.
		e.noteSize(now, p.bytes, rtt)
		q := max(rtt-e.serialization(now, p.bytes), min(e.baseRtt(now), rtt), rtt/64, time.Nanosecond)
		switch {
		case e.minRtt == 0 || q <= e.minRtt:
			e.minRtt, e.minRttT = q, now
		case q <= e.minRtt+max(e.minRtt/20, minRttSlack):
			// A sample within 5% of MinRtt shows the path still has no
			// standing queue: MinRtt is confirmed without a ProbeRTT.
			// (BBR re-measures only on a new minimum; with jitter that
			// meant a ProbeRTT every 10 s, each costing ~15% of a second's
			// goodput at 2 BDP in flight.)
			e.minRttT = now
		}
		e.rto.Sample(rtt)
		if e.r.rttMin == 0 || q < e.r.rttMin {
			e.r.rttMin = q
		}
		if e.state == StateProbeRTT && (e.rttProbeMin == 0 || q < e.rttProbeMin) {
			e.rttProbeMin = q
		}
	}
	s = Sample{RTT: rtt, AppLimited: p.appLimited}
	data := e.delivered - p.delivered
	interval := max(p.sentTime.Sub(p.firstSentTime), now.Sub(p.deliveredTime))
	e.firstSentTime = p.sentTime
	if interval > 0 && interval >= e.minRtt && data > 0 {
		s.Rate = mulDiv(data, nano, int64(interval))
		e.latest = s.Rate
		if s.Rate >= e.rateHi || now.Sub(e.rateHiT) > e.o.MinRttWindow {
			e.rateHi, e.rateHiT = s.Rate, now
		}
		e.r.bwMax = max(e.r.bwMax, s.Rate)
		// Only a sample whose sends the shaper held back measures the
		// link. BBR lets an app-limited sample raise the max when it
		// exceeds it; here that was the burst a queue absorbed: two 4 KB
		// batches a token-bucket bottleneck passed at the line rate,
		// acked 33 µs apart after a 2 ms RTT, "deliver" 4 MB/s on a 4
		// Mbit/s link (seen: 8.2 MB/s read there). Startup's exception
		// is startupBusy's.
		busy := p.appLimited && e.startupBusy(p)
		e.r.busy = e.r.busy || busy
		full := !p.appLimited || (busy && s.Rate > e.maxBw)
		if full {
			e.r.bwFull = max(e.r.bwFull, s.Rate)
			e.maxBw = max(e.maxBw, s.Rate)
			e.lastFull = now
		}
		if full && (e.state == StateUp || e.state == StateStartup) && !p.firstSentTime.Before(e.probeStart) {
			// a sample whose whole send interval lies inside the probe
			e.upBw = max(e.upBw, s.Rate)
			e.upSamples++
		}
	}
	e.r.throttled = e.r.throttled || !p.senderLimited
	if e.r.firstAck.IsZero() {
		e.r.firstAck = now
	} else {
		e.r.ackedAfter += p.bytes
	}
	e.r.acks++
	e.endRoundIf(now, p)
	e.tick(now)
	return s, true
}

// startupBusy says whether an app-limited sample taken in Startup still
// measures the link: its sends kept the pipe busy for at least MinRtt.
// Such a sample may raise MaxBw when it is above it (BBR's rule for
// app-limited samples), and a round of them counts for the full-pipe rule,
// so that Startup ends when they stop growing. After an idle minute
// the lanes have tokens, so a load that fills the link is admitted unheld
// and every sample is app-limited; ignored, they left Startup at the aged
// quarter of the link for 14 s while the link carried four times that
// (seen in the idle-overload scenario). A burst sent at once into an empty
// pipe (send interval 0, the tbf case of TestEstimatorBurstIsNotCapacity)
// still never counts: its rate is the queue's burst, not the link's. The
// rule is only Startup's: it paces at 2·C on purpose to be measured, while
// cruising below C an app-limited sample is the offered load.
func (e *Estimator) startupBusy(p sentPkt) bool {
	return e.state == StateStartup && e.minRtt > 0 &&
		p.sentTime.Sub(p.firstSentTime) >= e.minRtt && !p.firstSentTime.Before(e.probeStart)
}

// OnErrorAt records that attempt id failed (timeout, error outcome). The
// bytes leave the in-flight count; the round's error fraction grows.
func (e *Estimator) OnErrorAt(now time.Time, id uint64, o Outcome) {
	p, found := e.inflight[id]
	if !found {
		return
	}
	delete(e.inflight, id)
	e.inflightBytes -= p.bytes
	switch {
	case o.IsError() && p.sentTime.Before(e.upSince):
		// Sent before the link came back: it failed because of the
		// outage, which is over, not because of the link as it is now.
	case o == OutcomeDisconnected:
		// The connection dropped under the attempt: not a measure of
		// the link's congestion. A connection that stays away is seen
		// by the node as the link going down (SetLinkDownAt).
	case o.IsError():
		e.r.errs++
	default:
		e.r.acks++
	}
	e.endRoundIf(now, p)
	e.tick(now)
}

func (e *Estimator) endRoundIf(now time.Time, p sentPkt) {
	if p.delivered < e.nextRoundDelv || e.r.acks+e.r.errs < DefaultMinRoundSamples {
		return
	}
	e.nextRoundDelv = e.delivered
	e.rounds++
	r := e.r
	e.r = roundStats{}

	// error rate EWMA (ppm), α = 1/8
	frac := r.errs * 1_000_000 / (r.acks + r.errs)
	if e.rounds == 1 {
		e.errPPM = frac
	} else {
		e.errPPM += (frac - e.errPPM) / 8
	}
	e.prevRttMin, e.lastRttMin = e.lastRttMin, r.rttMin
	// congestion: ≥ 2% errors, or a standing queue.
	e.congested = r.errs*50 >= r.acks+r.errs
	// A standing queue is congestion only in a round where the shaper held
	// a send back: a sender limited by its own CPU (a loopback, a fast
	// LAN) sees its acks queue behind its own work, and reading that as
	// the link's queue cut C to the node's CPU rate and degraded traffic
	// on a healthy link.
	excess := max(5*time.Millisecond, e.rto.RTTVar()*5/2)
	if e.state == StateUp {
		// The probe's own queue is not congestion: paced at 1.25·C for
		// T, it queues 0.25·C·T bytes, a quarter of T of delay. Once RTT
		// samples were net of serialization (MinRtt the path's, not the
		// smallest batch's), that queue alone passed the 1.5 × MinRtt
		// rule and each probe cut C to its round's ack clock, about 0.65
		// of a 20 Mbit/s link (seen on the emulated link).
		excess += now.Sub(e.stateAt) / 4
	}
	q := e.netRtt(r.rttMin)
	e.standing = r.throttled && r.rttMin > 0 && e.minRtt > 0 && 2*q >= 3*e.minRtt &&
		q-e.minRtt >= excess
	e.congested = e.congested || e.standing
	e.ackRate = r.ackRate(now)
	// windowed max: the ring keeps each round's bandwidth-limited max; with
	// no qualifying sample in the window the estimate persists.
	e.bwRing[e.rounds%bwWindowRounds] = r.bwFull
	var wmax int64
	for _, v := range e.bwRing {
		wmax = max(wmax, v)
	}
	if wmax > 0 {
		e.maxBw = wmax
	}

	if e.drainFrom > 0 && (e.state != StateCruise || e.inflightBytes <= e.bdp() || e.rounds >= e.drainFrom+maxDrainRounds) {
		e.drainFrom = 0
		e.probeEndRound = e.rounds // its queue is the probe's: excused for two more rounds
	}
	switch e.state {
	case StateUp:
		e.upRounds++
		switch {
		case e.congested:
			e.bwLo = e.bwLoSaved
			e.cut(r)
			e.enterCruise(now)
		case (e.upSamples >= DefaultMinRoundSamples || e.upRounds >= 8) && now.Sub(e.stateAt) >= e.minRtt:
			if e.upBw*100 >= e.cPrev*115 {
				e.state, e.stateAt = StateStartup, now
				e.startBw, e.stall = e.upBw, 0
			} else {
				// Not enough for Startup, but what the probe delivered
				// uncongested is there: a lower bound from an older cut
				// must not hold C under it (seen: C stuck at 0.88 of a
				// link whose configured ceiling capped the probe below
				// the 1.15 needed for Startup).
				e.bwLo = e.bwLoSaved
				if e.bwLo > 0 {
					e.bwLo = max(e.bwLo, min(e.upBw, e.pacing()))
				}
				e.enterCruise(now)
			}
		}
	case StateStartup:
		if e.congested {
			e.cut(r)
			e.enterCruise(now)
			break
		}
		switch {
		case r.bwFull == 0 && !r.busy:
			// An app-limited round says nothing about the pipe being full
			// (BBR's full-pipe rule skips them too), unless its sends kept
			// the pipe busy (startupBusy).
		case e.upBw*4 < e.startBw*5: // grew < 25%
			e.stall++
		default:
			e.stall = 0
		}
		e.startBw = max(e.startBw, e.upBw)
		e.upBw = 0
		// At the configured ceiling the pipe is full by definition: a
		// sender whose demand is near the link sends some attempts
		// unheld, their samples are app-limited, and the three
		// bandwidth-limited rounds the stall rule needs may never come
		// (seen: 15 s of Startup paced at the ceiling, the link at 99%).
		atCeil := e.o.LinkCeil > 0 && max(e.startBw, r.bwMax)*100 >= e.o.LinkCeil*nearCeilPct
		if e.stall >= 3 || atCeil {
			e.bwLo = 0
			e.maxBw = max(e.startBw, e.maxBw, min(r.bwMax, e.o.LinkCeil))
			e.enterCruise(now)
		}
	case StateProbeRTT:
		if now.Sub(e.stateAt) >= probeRTTDuration && e.rounds > e.rttRoundsAtStart {
			if e.rttProbeMin > 0 {
				e.minRtt = e.rttProbeMin
			}
			e.minRttT = now
			e.enterCruise(now)
		}
	default:
		// A queue in the two rounds after a probe, or while Startup's is
		// drained, is the probe's own (the controller is told so too, see
		// Snapshot.Probing): cutting C for it cut after nearly every probe,
		// to 0.7 of a 4 Mbit/s emulated link for seconds at a time. Errors
		// still cut.
		own := e.drainFrom > 0 || (e.probeEndRound > 0 && e.rounds <= e.probeEndRound+2)
		if e.congested && r.acks >= DefaultMinRoundSamples && (!own || r.errs*50 >= r.acks+r.errs) {
			e.cut(r)
		}
	}
}

// noteSize keeps the minimum RTT of each batch size class (powers of two)
// over MinRttWindow, the lower envelope that serialization fits.
func (e *Estimator) noteSize(now time.Time, bytes int64, rtt time.Duration) {
	if bytes <= 0 {
		return
	}
	m := &e.sizeMin[min(bits.Len64(uint64(bytes)), sizeBuckets-1)]
	if m.at.IsZero() || now.Sub(m.at) > e.o.MinRttWindow || rtt <= m.rtt {
		*m = sizeMin{bytes: bytes, rtt: rtt, at: now}
	}
}

// slope is the per-byte serialization time, ns per bytes, fitted to the
// lower envelope of RTT by size: the smallest and the largest size class
// seen within MinRttWindow, at least 2× apart. An empty path acks a batch
// of n bytes after the base RTT + n/R, so the difference of the two
// minima over the difference of their sizes is 1/R, measured by the RTTs
// alone. 0 (per 1) without two such classes.
func (e *Estimator) slope(now time.Time) (ns, per int64) {
	var lo, hi *sizeMin
	for i := range e.sizeMin {
		m := &e.sizeMin[i]
		if m.at.IsZero() || now.Sub(m.at) > e.o.MinRttWindow {
			continue
		}
		if lo == nil {
			lo = m
		}
		hi = m
	}
	if lo == nil || hi.bytes < 2*lo.bytes || hi.rtt <= lo.rtt {
		return 0, 1
	}
	return int64(hi.rtt - lo.rtt), hi.bytes - lo.bytes
}

// serialization is the time a batch of bytes took on the bottleneck, to
// take out of its RTT: the fitted slope (see slope), at most bytes over
// the larger of MaxBw and the highest delivery sample of the last
// MinRttWindow, and at least bytes/LinkCeil. The link has carried that
// rate, so a byte cannot take longer than that on it: an
// envelope distorted by a queue (a size class whose minimum expired and
// was re-read in a queue) cannot take away more than the batch's air
// time at the measured rate. LinkCeil bounds it from below because the
// link is never faster. The subtraction does not follow BwLo (C), nor
// MaxBw alone: both fed back (a cut lowered the probes' rates and so
// MaxBw, raised the subtraction, lowered MinRtt below the path's RTT, made
// the next rounds look queued and cut C again: to a tenth of the link in
// the sims, to 0.1 of a 20 Mbit/s emulated link).
func (e *Estimator) serialization(now time.Time, bytes int64) time.Duration {
	ns, per := e.slope(now)
	ser := mulDiv(bytes, ns, per)
	if hi := max(e.maxBw, e.rateHi); hi > 0 {
		ser = min(ser, mulDiv(bytes, nano, hi))
	}
	if e.o.LinkCeil > 0 {
		ser = max(ser, mulDiv(bytes, nano, e.o.LinkCeil))
	}
	return time.Duration(ser)
}

// baseRtt is the path's RTT as the smallest batches show it: the smallest
// size class's minimum RTT net of its own serialization. No sample's
// queue delay is taken below it: a slope fitted too steep (a large size
// class whose minimum was read in a queue) with MaxBw low took away more
// than the air time, MinRtt fell below the path's RTT (31 ms on a 40 ms
// emulated path) and every round after read as a standing queue. A
// sample below it is taken whole (a first ack, slow while the stream was
// being created, once held the floor at 345 ms for 10 s, above every later
// RTT, so MinRtt never fell and every rate sample was dropped as shorter
// than it).
func (e *Estimator) baseRtt(now time.Time) time.Duration {
	for i := range e.sizeMin {
		m := &e.sizeMin[i]
		if m.at.IsZero() || now.Sub(m.at) > e.o.MinRttWindow {
			continue
		}
		return m.rtt - e.serialization(now, m.bytes)
	}
	return 0
}

// cut applies the congestion response BwLo = max(bw_latest, 0.7·min(BwLo,
// MaxBw)). When the round's minimum RTT shows a queue that stood all round,
// the bottleneck was busy throughout, so the round's ack-clock rate is a
// direct measurement of it: BwLo = that rate (never above the 0.7 cut).
func (e *Estimator) cut(r roundStats) {
	lo := e.maxBw
	if e.bwLo > 0 {
		lo = min(lo, e.bwLo)
	}
	next := max(r.bwMax, lo*7/10)
	// Only a round with more to send than it sent (bandwidth-limited, or
	// paced with a backlog) measures the bottleneck by its ack clock; with
	// nothing waiting, the ack rate is just what was offered, and taking it
	// would collapse the estimate to the trickle of a quiet class.
	// While draining, the sender paces at half the target on purpose:
	// its ack clock measures that pacing, not the bottleneck, and cutting
	// to it lowered the target, which halved the drain pacing, whose ack
	// clock cut again (seen: 12.7 Mbit/s to the 8 KiB/s floor in three
	// rounds after a step to 5 Mbit/s, and stuck there for a minute).
	if e.standing && e.ackRate > 0 && (r.bwFull > 0 || e.backlogged) && e.drainFrom == 0 {
		next = min(next, max(e.ackRate, r.bwMax))
	}
	e.bwLo = max(min(next, lo), e.o.MinRate)
}

func (e *Estimator) enterCruise(now time.Time) {
	if e.state == StateUp || e.state == StateStartup {
		e.probeEndRound = e.rounds
	}
	if e.state == StateStartup {
		// BBR's Drain: Startup paced at up to 2·C (or the ceiling) and
		// left up to a BDP queued at the bottleneck. Cruising at 0.8·C
		// drains it at 0.2·C, several rounds of inflated RTT that the
		// controller read as congestion (seen on a 5 Mbit/s link: level
		// 1 and the bulk classes deferred a second after start). Pace at
		// half the target until the bytes in flight fit one BDP.
		e.drainFrom = max(e.rounds, 1)
	}
	e.state, e.stateAt = StateCruise, now
	jitter := time.Duration(math.Round(max(0, min(e.rnd(), 1)) * float64(time.Second)))
	e.probeAt = now.Add(e.o.ProbeInterval + jitter)
	e.upBw = 0
}

// tick runs the time-driven transitions.
func (e *Estimator) tick(now time.Time) {
	if e.stateAt.IsZero() {
		e.stateAt = now
	}
	e.age(now)
	switch e.state {
	case StateCruise:
		if e.minRtt > 0 && now.Sub(e.minRttT) > e.o.MinRttWindow && len(e.inflight) > 0 {
			e.state, e.stateAt = StateProbeRTT, now
			e.rttProbeMin = 0
			e.rttRoundsAtStart = e.rounds
			return
		}
		if e.o.LinkCeil > 0 && e.capacity() >= e.o.LinkCeil {
			// Already at the configured ceiling: a probe could only find
			// what the operator said is not there, and would overshoot.
			break
		}
		due := e.backlogged && e.level <= maxProbeLevel && !e.probeAt.IsZero() && !now.Before(e.probeAt)
		if due && e.o.LinkCeil > 0 && e.bwLo > 0 && e.capacity()*100 >= e.o.LinkCeil*nearCeilPct {
			// Within 5% of the ceiling, a probe at 1.25·C is capped at
			// the ceiling and shows nothing Startup could use, but its
			// pacing lands a few percent over the target for a round
			// (seen: +6% windows every 3 s). Instead, forget the lower
			// bound, as BBRv2 does after a probe cycle without loss: the
			// pacing rises by at most 5%, and a real limit cuts it again.
			e.bwLo = 0
			e.enterCruise(now)
			break
		}
		if due {
			e.cPrev = e.capacity()
			e.bwLoSaved = e.bwLo
			e.bwLo = 0
			e.upBw, e.upRounds, e.upSamples = 0, 0, 0
			e.state, e.stateAt, e.probeStart = StateUp, now, now
		}
	case StateUp, StateStartup:
		if e.level > maxProbeLevel {
			if e.state == StateUp {
				e.bwLo = e.bwLoSaved
			}
			e.enterCruise(now)
		}
	}
}

// PacingRateAt returns the rate (bytes/s) the lanes should use as their
// link target now: Target while cruising, a probe rate while probing.
func (e *Estimator) PacingRateAt(now time.Time) int64 {
	e.tick(now)
	return e.pacing()
}

// NextEventAt returns when the estimator's pacing can next change by time
// alone (the probe timer), or zero.
func (e *Estimator) NextEventAt(now time.Time) time.Time {
	if e.state == StateCruise && e.backlogged && e.level <= maxProbeLevel && !e.probeAt.IsZero() {
		return later(now, e.probeAt)
	}
	return time.Time{}
}

// SnapshotAt returns the estimate at now (running time-driven transitions).
func (e *Estimator) SnapshotAt(now time.Time) Snapshot {
	e.tick(now)
	c := e.capacity()
	s := Snapshot{
		State: e.state, DeliveryRate: e.latest, MaxBw: e.maxBw, BwLo: e.bwLo, Capacity: c,
		Target: e.target(), Pacing: e.pacing(), MinRtt: e.minRtt, SRTT: e.rto.SRTT(), RTO: e.rto.Timeout(),
		ErrorRate:     float64(e.errPPM) / 1e6,
		InflightBytes: e.inflightBytes, InflightMsgs: int64(len(e.inflight)),
		LastAckAt: e.lastAck, Rounds: e.rounds, Congested: e.congested,
		Stale: e.agedFrom > 0, CPUDelay: e.cpuDelay,
	}
	if e.minRtt > 0 && e.lastRttMin > 0 && e.prevRttMin > 0 {
		s.Inflation = float64(e.netRtt(min(e.lastRttMin, e.prevRttMin))) / float64(e.minRtt)
	}
	s.Probing = e.state == StateUp || e.state == StateStartup || e.drainFrom > 0 || (e.probeEndRound > 0 && e.rounds < e.probeEndRound+2)
	avg := max(e.avgMsg, 1)
	// The pipe holds the rate × MinRtt plus a batch on the wire: MinRtt is
	// net of serialization, so without the batch a cap of 2·C·MinRtt
	// bound the node below C whenever a batch's air time passed MinRtt.
	// The rate is the pacing when it is above C (Startup, a probe): capped
	// at 2·C·MinRtt, a Startup paced at 2·C could not send more than the
	// C it started from, its rounds showed no growth, and after an idle
	// minute the aged estimate (a quarter of the link) held the node at
	// a quarter to a third of the link through 20 s of 3× overload (seen
	// in the idle-overload scenario).
	bdp := mulDiv(max(c, s.Pacing), int64(e.minRtt), nano) + avg
	s.InflightCapBytes = max(4*avg, 2*bdp)
	// No drain in ProbeRTT (BBR's cwnd of 4 packets, or half a BDP):
	// the lanes pace at the target, 0.8 C, which keeps the node's own
	// queue empty, so ProbeRTT only re-reads the minimum RTT of a round
	// of batches as they are sent. Draining cost the utilization
	// scenario −11% in the second of each ProbeRTT, and the minimum it
	// read held the same batches' serialization anyway.
	s.InflightCapMsgs = (s.InflightCapBytes + avg - 1) / avg
	return s
}
