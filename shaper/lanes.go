package shaper

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// Phase says why a class may send: the order in which Lanes serves classes.
type Phase uint8

const (
	// PhaseNone: the class may not send now.
	PhaseNone Phase = iota
	// PhaseCritical: strict priority, bounded by the class ceil and the link.
	PhaseCritical
	// PhaseGuaranteed: within the class's (scaled) guaranteed rate.
	PhaseGuaranteed
	// PhaseBorrow: spare link capacity, up to the class ceil.
	PhaseBorrow
)

func (p Phase) String() string {
	switch p {
	case PhaseNone:
		return "none"
	case PhaseCritical:
		return "critical"
	case PhaseGuaranteed:
		return "guaranteed"
	case PhaseBorrow:
		return "borrow"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// Defaults of LanesOptions.
const (
	DefaultMaxMsgBytes   = 64 << 10
	DefaultOverheadBytes = 256
	DefaultClassDepth    = 100 * time.Millisecond
	DefaultLinkDepth     = 50 * time.Millisecond
	DefaultRamp          = 4 * time.Second
	// rampFloorPPM is where a resuming class's borrow starts: its ceiling
	// at 1/8 of the way from its guarantee, growing linearly to all of it
	// over LanesOptions.Ramp.
	rampFloorPPM = 125_000
	// vscale is the virtual-time unit for weighted sharing: bytes·vscale/weight.
	vscale = 1 << 10
)

// LanesOptions tunes Lanes. The zero value is the recommended design.
type LanesOptions struct {
	// MaxMsgBytes is the largest message (batch) the lanes expect, in bytes;
	// every class bucket is at least 2× this deep. Default 64 KiB, at most
	// 64 MiB.
	MaxMsgBytes int
	// OverheadBytes is added to every message's cost (headers, framing).
	// Default 256; negative means none.
	OverheadBytes int
	// ClassDepth is the rate and ceil buckets' depth in time at their rate:
	// depth = max(2×MaxMsgBytes, ClassDepth×rate). Default 100 ms.
	ClassDepth time.Duration
	// LinkDepth is the link bucket's depth in time at the target rate,
	// with no floor of MaxMsgBytes: a message deeper than the bucket is
	// admitted when the bucket is full and leaves it in debt, so the link
	// never bursts more than one message over LinkDepth. Default 50 ms.
	LinkDepth time.Duration
	// Ramp is how long a class that was deferred takes to resume its full
	// borrow: its guarantee comes back at once, its ceiling (or, with none,
	// the target) from 1/8 of the way above the guarantee to all of it,
	// linearly over Ramp. A deferred class resuming at full borrow is a
	// burst into the bottleneck's queue, read as RTT inflation (seen: level
	// 1 again, for 22 s). Default 4 s; negative means no ramp.
	Ramp time.Duration
}

func (o LanesOptions) withDefaults() (LanesOptions, error) {
	if o.MaxMsgBytes == 0 {
		o.MaxMsgBytes = DefaultMaxMsgBytes
	}
	if o.MaxMsgBytes < 0 || o.MaxMsgBytes > 64<<20 {
		return o, fmt.Errorf("%w: MaxMsgBytes %d outside 1..64MiB", ErrInvalidOptions, o.MaxMsgBytes)
	}
	switch {
	case o.OverheadBytes == 0:
		o.OverheadBytes = DefaultOverheadBytes
	case o.OverheadBytes < 0:
		o.OverheadBytes = 0
	}
	if o.ClassDepth == 0 {
		o.ClassDepth = DefaultClassDepth
	}
	if o.LinkDepth == 0 {
		o.LinkDepth = DefaultLinkDepth
	}
	if o.Ramp == 0 {
		o.Ramp = DefaultRamp
	}
	if o.ClassDepth < 0 || o.LinkDepth < 0 {
		return o, fmt.Errorf("%w: negative bucket depth", ErrInvalidOptions)
	}
	return o, nil
}

// Lanes is the per-class shaper: an HTB-style flat tree of token buckets
// (bytes/s and msgs/s) under a link bucket at the target rate. It is a pure
// state machine: not safe for concurrent use (the caller holds one mutex),
// no goroutines, time passed in.
//
// Two ways to drive it, one per Lanes:
//
//   - Scheduler: EnqueueAt per message, PickAt to take the next message to
//     send (or the instant to ask again).
//   - Admission, for one goroutine per class: SetBacklogAt when a class has
//     a batch ready, ReserveAt(now, class, bytes) to send it or learn when
//     to ask again.
//
// A retry is admitted exactly like a first send (call the same method again).
type Lanes struct {
	opts    LanesOptions
	classes []priority.Class
	lanes   []lane
	target  priority.Rate
	level   int
	// linkLevel ≤ level is the part of the level the link's own health
	// accounts for: only its defers stop a class (EffectiveAction).
	linkLevel int
	linkB     bucket
	linkM     bucket
	// A recovery's drain (SetDrainAt): the link rate it may use, and the
	// critical bytes sent lately, leaking over critWindow.
	drainB  int64
	critAcc int64
	critAt  time.Time
	scaleB  int64 // guarantee scale in ppm
	scaleM  int64
	gclock  [priority.MaxPriority + 1]int64 // virtual clocks, guaranteed phase
	bclock  [priority.MaxPriority + 1]int64 // virtual clocks, borrow phase
}

type lane struct {
	prio     int
	weight   int64
	critical bool
	deferred bool
	guar     bool // has a (non-zero) effective guaranteed rate
	effB     int64
	effM     int64
	rateB    bucket
	rateM    bucket
	ceilB    bucket
	ceilM    bucket
	rampFrom time.Time // when the class resumed from a defer; zero once its borrow is whole
	fifo     []int     // queued message sizes (scheduler mode)
	fifoHead int
	want     int // ready batch size (admission mode); 0 = none
	gv, bv   int64
	stats    LaneStats
}

// LaneStats are cumulative counters of one class.
type LaneStats struct {
	SentMsgs, SentBytes int64 // bytes include the overhead
	GuaranteedBytes     int64 // sent in the critical or guaranteed phase
	BorrowedBytes       int64 // sent in the borrow phase
	Refusals            int64 // ReserveAt answers "not now"
}

// NewLanes builds lanes for classes (in this order: a class's index is its
// id in every call) under the given target. Classes must pass
// priority.Validate; NewLanes re-checks what it relies on.
func NewLanes(classes []priority.Class, target priority.Rate, opts LanesOptions) (*Lanes, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(classes) == 0 {
		return nil, fmt.Errorf("%w: no classes", ErrInvalidOptions)
	}
	if err := priority.Validate(classes, priority.Rate{}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	l := &Lanes{opts: opts, classes: classes, lanes: make([]lane, len(classes)), target: target}
	l.linkB = newBucket(target.BytesPerSec, l.linkDepthB(target.BytesPerSec))
	l.linkM = newBucket(target.MsgsPerSec, depthM(target.MsgsPerSec, opts.LinkDepth))
	for i := range classes {
		c := &classes[i]
		ln := &l.lanes[i]
		ln.prio = c.Priority
		ln.weight = int64(c.EffectiveWeight())
		ln.critical = c.Critical
		ln.ceilB = newBucket(c.Ceil.BytesPerSec, l.depthB(c.Ceil.BytesPerSec, opts.ClassDepth))
		ln.ceilM = newBucket(c.Ceil.MsgsPerSec, depthM(c.Ceil.MsgsPerSec, opts.ClassDepth))
		ln.rateB = newBucket(0, 0)
		ln.rateM = newBucket(0, 0)
	}
	l.rescale(time.Time{})
	return l, nil
}

func (l *Lanes) depthB(rate int64, d time.Duration) int64 {
	return max(2*int64(l.opts.MaxMsgBytes), mulDiv(min(rate, maxRate), int64(d), nano))
}

// linkDepthB is the link bucket's depth in bytes: LinkDepth at rate, at
// least one packet. A floor of 2×MaxMsgBytes, as the class buckets have,
// let a 5 Mbit/s link take 128 KiB at once, 200 ms of its time: the
// standing queue read as RTT inflation and degraded the node.
func (l *Lanes) linkDepthB(rate int64) int64 {
	return max(1500, mulDiv(min(rate, maxRate), int64(l.opts.LinkDepth), nano))
}

func depthM(rate int64, d time.Duration) int64 {
	return max(2, mulDiv(min(rate, maxRate), int64(d), nano))
}

// Class returns the id of the class named name.
func (l *Lanes) Class(name string) (int, bool) {
	for i := range l.classes {
		if l.classes[i].Name == name {
			return i, true
		}
	}
	return -1, false
}

// SetTargetAt sets the link target (bytes/s and msgs/s; a zero dimension is
// unlimited) and rescales the guarantees.
func (l *Lanes) SetTargetAt(now time.Time, target priority.Rate) {
	l.target = target
	l.linkB.reconfigure(now, l.linkRateAt(now), l.linkDepthB(l.linkRateAt(now)))
	l.linkM.reconfigure(now, target.MsgsPerSec, depthM(target.MsgsPerSec, l.opts.LinkDepth))
	l.rescale(now)
}

// critWindow is the time over which the critical classes' recent sends
// count as their demand; drainGive is the bytes/s of a drain's headroom
// each byte/s of that demand gives back.
const (
	critWindow = time.Second
	drainGive  = 2
)

// SetDrainAt lets a recovery drain the backlog faster than the target:
// up to bytes/s on the link (0: no drain, the target only), less twice
// what the critical classes sent over the last second, and never below
// the target. The headroom the target keeps is what guards the critical
// classes' latency against an estimate that is off; while they send
// little it can go to the drain, and it comes back as their sends rise,
// from the critical send that raises them on. The guarantees stay scaled
// to the target.
func (l *Lanes) SetDrainAt(now time.Time, bytes int64) {
	l.drainB = max(0, bytes)
	l.relink(now)
}

// critRateAt is the critical classes' demand at now in bytes/s: what they
// sent over about the last critWindow.
func (l *Lanes) critRateAt(now time.Time) int64 {
	el := now.Sub(l.critAt)
	if l.critAcc == 0 || el >= critWindow {
		return 0
	}
	leaked := l.critAcc
	if el > 0 {
		leaked = mulDiv(leaked, int64(critWindow-el), int64(critWindow))
	}
	return mulDiv(leaked, nano, int64(critWindow))
}

// linkRateAt is the link bucket's rate at now: the target, or more while
// a drain may use the headroom (SetDrainAt).
func (l *Lanes) linkRateAt(now time.Time) int64 {
	t := l.target.BytesPerSec
	if t <= 0 || l.drainB <= t {
		return t
	}
	return max(t, l.drainB-drainGive*l.critRateAt(now))
}

// relink gives the link bucket its rate at now.
func (l *Lanes) relink(now time.Time) {
	if r := l.linkRateAt(now); r != l.linkB.rate || l.linkB.unlimited != (r <= 0) {
		l.linkB.reconfigure(now, r, l.linkDepthB(r))
	}
}

// LinkRate returns the rate the link bucket fills at now, bytes/s (0:
// unlimited): the target, or a recovery's drain (SetDrainAt).
func (l *Lanes) LinkRate() int64 {
	if l.linkB.unlimited {
		return 0
	}
	return l.linkB.rate
}

// SetClassesAt replaces the classes' settings at now, as a config reload
// does: rates, ceilings, priorities, weights, criticality and plans. The
// classes must be the same, by name and in the same order, and pass
// priority.Validate; otherwise nothing changes and the error says why.
// Tokens and counters carry over; a class that moves to another priority
// starts at that priority's virtual clock, so it neither gains nor loses
// credit.
func (l *Lanes) SetClassesAt(now time.Time, classes []priority.Class) error {
	if len(classes) != len(l.classes) {
		return fmt.Errorf("%w: %d classes, want the same %d", ErrInvalidOptions, len(classes), len(l.classes))
	}
	for i := range classes {
		if classes[i].Name != l.classes[i].Name {
			return fmt.Errorf("%w: class %d is %q, want %q", ErrInvalidOptions, i, classes[i].Name, l.classes[i].Name)
		}
	}
	if err := priority.Validate(classes, priority.Rate{}); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	l.classes = append(l.classes[:0:0], classes...)
	for i := range classes {
		c := &l.classes[i]
		ln := &l.lanes[i]
		if ln.prio != c.Priority {
			ln.prio = c.Priority
			ln.gv, ln.bv = l.gclock[ln.prio], l.bclock[ln.prio]
		}
		ln.weight = int64(c.EffectiveWeight())
		ln.critical = c.Critical
	}
	l.rescale(now)
	return nil
}

// SetLevelAt applies each class's plan at degradation level (0..3): Defer
// stops the class, Throttle removes its guarantee (borrow only). Field
// dropping is the batcher's business. It is SetLevelsAt(now, level,
// level): every defer of the plan applies.
func (l *Lanes) SetLevelAt(now time.Time, level int) { l.SetLevelsAt(now, level, level) }

// SetLevelsAt applies each class's plan at level, where the link's own
// health accounts for linkLevel ≤ level of it (ControllerStatus.LinkLevel)
// and load for the rest: a class the plan defers at level is deferred only
// if its plan defers it at linkLevel too, and is throttled otherwise (see
// EffectiveAction).
func (l *Lanes) SetLevelsAt(now time.Time, level, linkLevel int) {
	l.level = clampLevel(level)
	l.linkLevel = min(clampLevel(linkLevel), l.level)
	l.rescale(now)
}

func clampLevel(level int) int { return max(0, min(level, priority.Levels-1)) }

// EffectiveAction is what class c does at degradation level, where the
// link's own health (RTT inflation, errors, the link down) accounts for
// linkLevel of it and load (demand, a standing queue, a spool filling) for
// the rest. Its plan's action at level, except for a defer that the plan
// does not make at linkLevel too, which becomes a throttle (borrow only,
// after every class with a guarantee): on a link that is healthy,
// deferring a class only grows the backlog that raised the level, and a
// node whose spool is full of that class's events stalls for good;
// throttled, it drains on capacity no other class wants.
//
// A defer that stands sends nothing through the lanes: no first send, no
// retry, no split half, and no share of the estimator's upward probe.
// (Filling probes from deferred classes sent replication at 84–458
// events/s in some seconds of a level that deferred it; a probe is filled
// by the classes that may send, and a link whose own signals are clean
// lowers linkLevel, which lifts the defer.)
func EffectiveAction(c *priority.Class, level, linkLevel int) priority.Action {
	act := c.ActionAt(level)
	if act.Kind == priority.ActionDefer && c.ActionAt(min(linkLevel, level)).Kind != priority.ActionDefer {
		return priority.Action{Kind: priority.ActionThrottle}
	}
	return act
}

// Level returns the current degradation level.
func (l *Lanes) Level() int { return l.level }

// rescale recomputes effective guarantees: eff_c = rate_c × s with
// s = clamp((T − Σ critical rate) / Σ other active rates, 0, 1).
func (l *Lanes) rescale(now time.Time) {
	var critB, critM, sumB, sumM int64
	for i := range l.classes {
		c := &l.classes[i]
		ln := &l.lanes[i]
		act := EffectiveAction(c, l.level, l.linkLevel).Kind
		deferred := act == priority.ActionDefer
		if ln.deferred && !deferred && !now.IsZero() && l.opts.Ramp > 0 {
			ln.rampFrom = now
		}
		ln.deferred = deferred
		if deferred {
			ln.rampFrom = time.Time{}
		}
		if act == priority.ActionDefer || act == priority.ActionThrottle {
			continue
		}
		if c.Critical {
			critB += c.Rate.BytesPerSec
			critM += c.Rate.MsgsPerSec
		} else {
			sumB += c.Rate.BytesPerSec
			sumM += c.Rate.MsgsPerSec
		}
	}
	scale := func(t, crit, sum int64) int64 {
		if t <= 0 || sum == 0 || t-crit >= sum {
			return 1_000_000
		}
		return mulDiv(max(0, t-crit), 1_000_000, sum)
	}
	l.scaleB = scale(l.target.BytesPerSec, critB, sumB)
	l.scaleM = scale(l.target.MsgsPerSec, critM, sumM)
	for i := range l.classes {
		c := &l.classes[i]
		ln := &l.lanes[i]
		act := EffectiveAction(c, l.level, l.linkLevel).Kind
		effB, effM := c.Rate.BytesPerSec, c.Rate.MsgsPerSec
		if !c.Critical {
			if l.scaleB < 1_000_000 {
				effB = mulDiv(effB, max(0, l.target.BytesPerSec-critB), sumB)
			}
			if l.scaleM < 1_000_000 {
				effM = mulDiv(effM, max(0, l.target.MsgsPerSec-critM), sumM)
			}
		}
		if act == priority.ActionDefer || act == priority.ActionThrottle {
			effB, effM = 0, 0
		}
		ln.effB, ln.effM = effB, effM
		ln.guar = effB > 0 || effM > 0
		// A zero effective rate in a dimension means "not guaranteed in
		// that dimension": the bucket becomes unlimited, and ln.guar says
		// whether the class has any guarantee at all.
		ln.rateB.reconfigure(now, effB, l.depthB(effB, l.opts.ClassDepth))
		ln.rateM.reconfigure(now, effM, depthM(effM, l.opts.ClassDepth))
		l.setCeil(i, now)
	}
}

// ramped is a ceiling that ramps up from a guarantee: eff + (ceil − eff)
// × ppm/10⁶, where a zero ceil (none) ramps toward the target instead (and
// stays unlimited with no target either).
func ramped(eff, ceil, target, ppm int64) int64 {
	if ceil <= 0 {
		ceil = target
	}
	if ceil <= 0 || ppm >= 1_000_000 {
		return ceil
	}
	return eff + mulDiv(max(0, ceil-eff), ppm, 1_000_000)
}

// setCeil gives class i's ceil buckets the rate they have at now: the
// class's Ceil, or while it resumes from a defer, that ceiling ramped
// (LanesOptions.Ramp). A ramp that has run its course ends.
func (l *Lanes) setCeil(i int, now time.Time) {
	c, ln := &l.classes[i], &l.lanes[i]
	ceilB, ceilM := c.Ceil.BytesPerSec, c.Ceil.MsgsPerSec
	if !ln.rampFrom.IsZero() {
		el := now.Sub(ln.rampFrom)
		if el >= l.opts.Ramp || el < 0 {
			ln.rampFrom = time.Time{}
		} else {
			ppm := rampFloorPPM + mulDiv(1_000_000-rampFloorPPM, int64(el), int64(l.opts.Ramp))
			ceilB = ramped(ln.effB, ceilB, l.target.BytesPerSec, ppm)
			ceilM = ramped(ln.effM, ceilM, l.target.MsgsPerSec, ppm)
		}
	}
	ln.ceilB.reconfigure(now, ceilB, l.depthB(ceilB, l.opts.ClassDepth))
	ln.ceilM.reconfigure(now, ceilM, depthM(ceilM, l.opts.ClassDepth))
}

// ramp moves the ceilings of the classes resuming from a defer to now.
func (l *Lanes) ramp(now time.Time) {
	for i := range l.lanes {
		if !l.lanes[i].rampFrom.IsZero() {
			l.setCeil(i, now)
		}
	}
}

// Overcommitted reports whether the target is below the sum of the
// guarantees (they are scaled down; the controller should know).
func (l *Lanes) Overcommitted() bool { return l.scaleB < 1_000_000 || l.scaleM < 1_000_000 }

func (ln *lane) backlogged() bool { return ln.fifoHead < len(ln.fifo) || ln.want > 0 }

func (ln *lane) head() int {
	if ln.fifoHead < len(ln.fifo) {
		return ln.fifo[ln.fifoHead]
	}
	return ln.want
}

func (l *Lanes) cost(bytes int) int64 { return int64(max(bytes, 0) + l.opts.OverheadBytes) }

// activate starts a class's virtual times when it becomes backlogged, so
// idle time earns no credit (start-time fair queuing).
func (l *Lanes) activate(ln *lane) {
	ln.gv = max(ln.gv, l.gclock[ln.prio])
	ln.bv = max(ln.bv, l.bclock[ln.prio])
}

// phaseAt returns the phase in which class i could send a message of cost
// bytes at t by its own buckets (the link is checked separately).
func (l *Lanes) phaseAt(i int, t time.Time, cost int64) Phase {
	ln := &l.lanes[i]
	if ln.deferred || !ln.ceilB.has(t, cost) || !ln.ceilM.has(t, 1) {
		return PhaseNone
	}
	if ln.critical {
		return PhaseCritical
	}
	if ln.guar && ln.rateB.has(t, cost) && ln.rateM.has(t, 1) {
		return PhaseGuaranteed
	}
	return PhaseBorrow
}

// before reports whether class a (in phase pa) is served before class b.
func (l *Lanes) before(a int, pa Phase, b int, pb Phase) bool {
	if pa != pb {
		return pa < pb
	}
	la, lb := &l.lanes[a], &l.lanes[b]
	if la.prio != lb.prio {
		return la.prio < lb.prio
	}
	switch pa {
	case PhaseGuaranteed:
		if la.gv != lb.gv {
			return la.gv < lb.gv
		}
	case PhaseBorrow:
		if la.bv != lb.bv {
			return la.bv < lb.bv
		}
	}
	return a < b
}

func (l *Lanes) linkHas(t time.Time, reservedB, reservedM, cost int64) bool {
	okB := l.linkB.unlimited || l.linkB.tokensAt(t) >= reservedB*nano+l.linkB.need(cost)
	okM := l.linkM.unlimited || l.linkM.tokensAt(t) >= reservedM*nano+l.linkM.need(1)
	return okB && okM
}

func (l *Lanes) charge(i int, now time.Time, cost int64, ph Phase) {
	ln := &l.lanes[i]
	l.linkB.charge(now, cost)
	l.linkM.charge(now, 1)
	ln.ceilB.charge(now, cost)
	ln.ceilM.charge(now, 1)
	switch ph {
	case PhaseGuaranteed:
		ln.rateB.charge(now, cost)
		ln.rateM.charge(now, 1)
		l.gclock[ln.prio] = ln.gv
		ln.gv += cost * vscale / ln.weight
		ln.stats.GuaranteedBytes += cost
	case PhaseBorrow:
		l.bclock[ln.prio] = ln.bv
		ln.bv += cost * vscale / ln.weight
		ln.stats.BorrowedBytes += cost
	case PhaseCritical:
		ln.stats.GuaranteedBytes += cost
		// The critical demand, leaked to now, plus this send: the drain's
		// headroom shrinks with it at once.
		if el := now.Sub(l.critAt); el > 0 {
			l.critAcc = mulDiv(l.critAcc, int64(max(0, critWindow-el)), int64(critWindow))
		}
		l.critAcc += cost
		if now.After(l.critAt) {
			l.critAt = now
		}
		l.relink(now)
	}
	ln.stats.SentMsgs++
	ln.stats.SentBytes += cost
}

// best returns the class served first at t among backlogged classes, and
// its phase; -1 when none is admissible by its own buckets.
func (l *Lanes) best(t time.Time) (int, Phase) {
	bi, bp := -1, PhaseNone
	for i := range l.lanes {
		ln := &l.lanes[i]
		if !ln.backlogged() {
			continue
		}
		p := l.phaseAt(i, t, l.cost(ln.head()))
		if p == PhaseNone {
			continue
		}
		if bi < 0 || l.before(i, p, bi, bp) {
			bi, bp = i, p
		}
	}
	return bi, bp
}

// ---- scheduler mode ----

// EnqueueAt queues one message of bytes for class.
func (l *Lanes) EnqueueAt(now time.Time, class, bytes int) {
	ln := &l.lanes[class]
	if !ln.backlogged() {
		l.activate(ln)
	}
	if ln.fifoHead > 0 && ln.fifoHead == len(ln.fifo) {
		ln.fifo, ln.fifoHead = ln.fifo[:0], 0
	}
	ln.fifo = append(ln.fifo, bytes)
}

// Pick is one message PickAt lets through.
type Pick struct {
	Class int
	Bytes int
	Phase Phase
}

// PickAt dequeues the next message allowed at now: strict priority for
// critical classes, then classes within their guarantee (by priority, then
// weighted fair), then borrowers (by priority, then weighted fair). A class
// never jumps ahead of a better-placed one that only lacks link tokens. When
// nothing may go, ok is false and wait is the instant the answer changes
// (zero: not until something is enqueued or reconfigured).
func (l *Lanes) PickAt(now time.Time) (p Pick, ok bool, wait time.Time) {
	l.ramp(now)
	l.relink(now)
	i, ph := l.best(now)
	if i >= 0 {
		ln := &l.lanes[i]
		cost := l.cost(ln.head())
		if l.linkHas(now, 0, 0, cost) {
			var bytes int
			if ln.fifoHead < len(ln.fifo) {
				bytes = ln.fifo[ln.fifoHead]
				ln.fifoHead++
			} else {
				bytes, ln.want = ln.want, 0
			}
			l.charge(i, now, cost, ph)
			return Pick{Class: i, Bytes: bytes, Phase: ph}, true, time.Time{}
		}
	}
	return Pick{}, false, l.NextEventAt(now)
}

// Queued returns the number of messages queued for class (scheduler mode).
func (l *Lanes) Queued(class int) int { return len(l.lanes[class].fifo) - l.lanes[class].fifoHead }

// NextEventAt returns the earliest instant ≥ now at which some backlogged
// class may send (in scheduler mode, exactly when PickAt will succeed), or
// zero when no backlogged class can ever send without a change of level,
// target or backlog.
func (l *Lanes) NextEventAt(now time.Time) time.Time {
	// Admissibility only grows with time between mutations, and the
	// decision can change only at a bucket threshold; walk those instants
	// in order and return the first one at which a message would go.
	var cands []time.Time
	for i := range l.lanes {
		ln := &l.lanes[i]
		if !ln.backlogged() || ln.deferred {
			continue
		}
		cost := l.cost(ln.head())
		ceil := later(ln.ceilB.timeFor(now, ln.ceilB.need(cost)), ln.ceilM.timeFor(now, ln.ceilM.need(1)))
		link := later(l.linkB.timeFor(now, l.linkB.need(cost)), l.linkM.timeFor(now, l.linkM.need(1)))
		cands = append(cands, ceil, link)
		if ln.guar {
			cands = append(cands, later(ceil, later(ln.rateB.timeFor(now, ln.rateB.need(cost)), ln.rateM.timeFor(now, ln.rateM.need(1)))))
		}
	}
	var next time.Time
	for {
		// smallest candidate strictly after the last one tried
		var t time.Time
		for _, c := range cands {
			if c.IsZero() || (!next.IsZero() && !c.After(next)) {
				continue
			}
			t = earlier(t, c)
		}
		if t.IsZero() {
			return time.Time{}
		}
		next = t
		if i, _ := l.best(t); i >= 0 && l.linkHas(t, 0, 0, l.cost(l.lanes[i].head())) {
			return t
		}
	}
}

// ---- admission mode ----

// SetBacklogAt tells the lanes that class has a batch of bytes ready (bytes
// ≤ 0: nothing ready). Lower-priority classes will leave link tokens for it.
// The class's goroutine must call ReserveAt soon, or SetBacklogAt(…, 0) when
// it stops waiting, or it holds others back.
func (l *Lanes) SetBacklogAt(now time.Time, class, bytes int) {
	ln := &l.lanes[class]
	if bytes > 0 && !ln.backlogged() {
		l.activate(ln)
	}
	ln.want = max(bytes, 0)
}

// Reservation is ReserveAt's answer.
type Reservation struct {
	// OK: send now; the tokens are taken.
	OK bool
	// Phase in which the batch was admitted (OK) or could be next.
	Phase Phase
	// At is when to ask again if !OK: a hint, never earlier than the first
	// instant the answer could be yes; asking earlier is harmless. Zero means
	// the class is deferred at this level: wait for a level change.
	At time.Time
}

// ReserveAt asks whether class may send a batch of bytes now, and takes the
// tokens if so. It honours the same order as PickAt among the classes
// currently backlogged (SetBacklogAt or a refused ReserveAt): a class is
// admitted only if the link also holds the tokens of every backlogged class
// that is served before it and admissible by its own buckets. A refused
// class stays backlogged with this size; an admitted one is no longer
// backlogged. A retry calls ReserveAt like a first send.
func (l *Lanes) ReserveAt(now time.Time, class, bytes int) Reservation {
	l.ramp(now)
	l.relink(now)
	ln := &l.lanes[class]
	if !ln.backlogged() {
		l.activate(ln)
	}
	ln.want = max(bytes, 1)
	if ln.deferred {
		ln.stats.Refusals++
		return Reservation{}
	}
	cost := l.cost(bytes)
	ph := l.phaseAt(class, now, cost)
	var resB, resM int64
	if ph != PhaseNone {
		for j := range l.lanes {
			o := &l.lanes[j]
			if j == class || !o.backlogged() {
				continue
			}
			oc := l.cost(o.head())
			if op := l.phaseAt(j, now, oc); op != PhaseNone && l.before(j, op, class, ph) {
				resB += oc
				resM++
			}
		}
		if l.linkHas(now, resB, resM, cost) {
			l.charge(class, now, cost, ph)
			ln.want = 0
			return Reservation{OK: true, Phase: ph}
		}
	}
	ln.stats.Refusals++
	// When to ask again: own ceil buckets, and the link holding the
	// reserved tokens plus ours.
	at := later(ln.ceilB.timeFor(now, ln.ceilB.need(cost)), ln.ceilM.timeFor(now, ln.ceilM.need(1)))
	link := later(
		l.linkB.timeFor(now, min(resB*nano+l.linkB.need(cost), l.linkB.depth)),
		l.linkM.timeFor(now, min(resM*nano+l.linkM.need(1), l.linkM.depth)))
	at = later(at, link)
	if at.IsZero() || !at.After(now) {
		// Blocked only by better-placed waiters that have not taken their
		// tokens yet: ask again after roughly one message time.
		step := time.Millisecond
		if r := l.target.BytesPerSec; r > 0 {
			step = max(step, time.Duration(mulDiv(cost, nano, r)))
		}
		at = now.Add(step)
	}
	if ph == PhaseNone {
		ph = PhaseBorrow
		if ln.critical {
			ph = PhaseCritical
		}
	}
	return Reservation{Phase: ph, At: at}
}

// ---- introspection ----

// LaneSnapshot describes one class at an instant.
type LaneSnapshot struct {
	Name     string
	Deferred bool
	// Resuming: the class left a defer less than LanesOptions.Ramp ago
	// and its ceiling is ramping up.
	Resuming   bool
	Backlogged bool
	// Effective guaranteed rate after scaling and the level's plan, and the
	// ceiling (0 = none in that dimension).
	Rate, Ceil priority.Rate
	// Tokens available now, in bytes (and msgs); negative = in debt.
	RateTokens, CeilTokens int64
	LaneStats
}

// LanesSnapshot describes the lanes at an instant.
type LanesSnapshot struct {
	Target        priority.Rate
	Level         int
	Overcommitted bool
	ScalePPM      int64 // guarantee scale for bytes, parts per million
	LinkTokens    int64 // bytes
	Classes       []LaneSnapshot
}

// SnapshotAt returns the state at now, without changing it.
func (l *Lanes) SnapshotAt(now time.Time) LanesSnapshot {
	s := LanesSnapshot{Target: l.target, Level: l.level, Overcommitted: l.Overcommitted(), ScalePPM: l.scaleB,
		LinkTokens: tokens(&l.linkB, now)}
	for i := range l.lanes {
		ln := &l.lanes[i]
		s.Classes = append(s.Classes, LaneSnapshot{
			Name: l.classes[i].Name, Deferred: ln.deferred, Resuming: !ln.rampFrom.IsZero(), Backlogged: ln.backlogged(),
			Rate:       priority.Rate{BytesPerSec: ln.effB, MsgsPerSec: ln.effM},
			Ceil:       l.classes[i].Ceil,
			RateTokens: tokens(&ln.rateB, now), CeilTokens: tokens(&ln.ceilB, now),
			LaneStats: ln.stats,
		})
	}
	return s
}

// tokens reports a bucket's tokens for a snapshot (0 when unlimited).
func tokens(b *bucket, now time.Time) int64 {
	if b.unlimited {
		return 0
	}
	return b.tokensAt(now) / nano
}
