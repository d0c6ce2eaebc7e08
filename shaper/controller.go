package shaper

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Controller defaults (proposed in shaping-notes §3).
const (
	DefaultTick          = 250 * time.Millisecond
	DefaultDwell         = 10 * time.Second
	DefaultMaxDwell      = 2 * time.Minute
	DefaultFlapWindow    = 60 * time.Second
	DefaultConfirmTicks  = 2
	DefaultQueueTarget   = 150 * time.Millisecond // batch linger (100 ms) + 50 ms
	DefaultQueueInterval = time.Second
	DefaultDemandTau     = 5 * time.Second
	DefaultGrowthFor     = 10 * time.Second
	// DefaultMinQueueDelay is the least queueing delay (round minimum RTT −
	// MinRtt) that counts as RTT inflation. On a sub-millisecond path (a
	// loopback, a LAN) a ratio alone trips on scheduling noise; the
	// estimator's congestion rule uses the same 5 ms floor.
	DefaultMinQueueDelay = 5 * time.Millisecond
)

// Signal thresholds for levels 1, 2, 3 (shaping-notes §3).
var (
	inflationEntry = [3]float64{1.5, 2.5, 4}
	errorEntry     = [3]float64{0.02, 0.10, 0.30}
	// Demand alone never reaches level 3 (shaping-notes proposes ρ ≥ 3):
	// overload is what the spool absorbs, and level 3 defers every class
	// but critical, which stops the very traffic that measures the link,
	// so a low estimate after a step down kept demand at 3 and the level
	// at 3 with it. Level 3 is for a failing link (errors, link down) and a
	// spool about to fill.
	demandEntry = [3]float64{1.0, 1.5, math.Inf(1)}
	ttfEntry    = [3]time.Duration{30 * time.Minute, 5 * time.Minute, 30 * time.Second}
)

const (
	inflationExit = 0.8 // exit below 0.8 × the entry value
	errorExit     = 0.5
	demandExit    = 0.8
	ttfExit       = 2 // exit above 2 × the entry value
)

// Signal names, indexes into ControllerStatus.Signals.
const (
	SignalInflation = iota
	SignalErrors
	SignalDemand
	SignalQueue
	SignalTimeToFull
	numSignals
)

// ControllerOptions tunes a Controller; zero values take the defaults.
type ControllerOptions struct {
	Dwell         time.Duration // minimum time between steps down; default 10 s
	MaxDwell      time.Duration // anti-flap doubling cap; default 2 min
	FlapWindow    time.Duration // re-entering a level within this doubles the dwell; default 60 s
	ConfirmTicks  int           // consecutive ticks above the level before raising; default 2
	QueueTarget   time.Duration // CoDel target sojourn; default 150 ms (linger + 50 ms)
	QueueInterval time.Duration // CoDel interval; default 1 s
	DemandTau     time.Duration // EWMA time constant of ingress and backlog growth; default 5 s
	MinQueueDelay time.Duration // least queueing delay that counts as inflation; default 5 ms
}

// Inputs are the controller's signals at one tick.
type Inputs struct {
	// Link is the estimator's snapshot (inflation, error rate, in-flight,
	// last ack, RTO, target).
	Link Snapshot
	// IngressBytesPerSec is the ingress rate *before* any shedding, over the
	// last tick (the controller smooths it). Feeding the post-shedding rate
	// makes the controller oscillate.
	IngressBytesPerSec int64
	// Sojourn is the time the oldest unsent batch has waited (CoDel's
	// sojourn, measured at the head of the send queue).
	Sojourn time.Duration
	// BacklogBytes and CapBytes are the spool's unsent bytes and its cap.
	// The backlog's growth is what the time to full extrapolates.
	BacklogBytes, CapBytes int64
	// DiskBytes is the spool's disk space, what CapBytes bounds: the
	// backlog plus acknowledged records in segments not yet deleted. The
	// room left is CapBytes less the larger of the two; 0 counts as
	// BacklogBytes. (Fed as the backlog, the disk grew between deletions
	// during a drain and the time to full put level 1 back.)
	DiskBytes int64
	// LinkDown forces level 3 at once (no confirmation).
	LinkDown bool
	// UnsentBytes is what waits to be sent (the classes' backlog, before
	// compression): the drain a recovery is about. Zero ends a recovery.
	UnsentBytes int64
}

// Controller turns link and queue signals into a degradation level 0..3
// with fast attack, slow decay and anti-flap. Not safe for concurrent use.
type Controller struct {
	o          ControllerOptions
	level      int
	lastChange time.Time
	dwell      time.Duration
	lastLeft   [4]time.Time
	upCount    int
	upMin      int
	sig        [numSignals]int
	hist       []rawAt // raw levels in (now − dwell, now]
	// signal state
	demand      int64 // EWMA bytes/s
	growth      int64 // EWMA bytes/s of backlog growth
	lastBacklog int64
	lastTick    time.Time
	firstAbove  time.Time // CoDel
	growingFrom time.Time
	transitions int64
	outageAt    time.Time // when the link was first seen failing (down, stalled, ≥ 30% errors); zero when it is not
	recovering  bool      // see ControllerStatus.Recovering
	degraded    bool      // the level has been above 0 since the last recovery ended
	actLevel    int       // ControllerStatus.ActLevel
	actLink     int       // ControllerStatus.LinkLevel
	actHold     held      // while recovering: ActLevel, with hysteresis
	linkHold    held      // while recovering: LinkLevel, with hysteresis
}

// held is a level that falls at once and rises only once the signal has
// stood above it for a whole dwell (at the least level it held there):
// the recovery's hysteresis. Without it the act level followed the raw
// level tick by tick, and a signal flickering at the level (an
// inflation burst of the drain itself, a spool growing between segment
// deletions) switched recovery, and field dropping with it, on and off
// every few seconds.
type held struct {
	v        int
	above    time.Time // since when the signal has stood above v; zero when it has not
	aboveMin int       // the least signal since above
}

func (h *held) at(now time.Time, v int, dwell time.Duration) int {
	switch {
	case v <= h.v:
		h.v, h.above = v, time.Time{}
	case h.above.IsZero():
		h.above, h.aboveMin = now, v
	default:
		h.aboveMin = min(h.aboveMin, v)
		if now.Sub(h.above) >= dwell {
			h.v, h.above = h.aboveMin, time.Time{}
		}
	}
	return h.v
}

type rawAt struct {
	t    time.Time
	raw  int
	link int // the raw level of the link's own signals (inflation, errors, down)
}

// ControllerStatus describes the controller for metrics and logs.
type ControllerStatus struct {
	Level       int
	Raw         int
	Signals     [numSignals]int
	Dwell       time.Duration
	LastChange  time.Time
	Transitions int64
	Demand      float64 // smoothed ingress / target
	TimeToFull  time.Duration
	// LinkLevel is the part of Level the link's own health accounts for:
	// the highest inflation or error signal (3 while the link is down)
	// over the dwell window, at most Level. The rest of Level comes from
	// load (demand, queue, time to full): ingress outrunning what is
	// shipped. Deferring a class on a healthy link only grows the backlog
	// that raised those signals (seen: time to full at level 3 deferred
	// ingest, the class filling the spool, and a node with a 68 MB/s link
	// shipped nothing for minutes), so the lanes defer a class only where
	// its plan defers it at LinkLevel too (see Lanes.SetLevelsAt). While
	// Recovering, the link's signals with the same hysteresis as ActLevel,
	// at most ActLevel.
	LinkLevel int
	// Recovering: the signals that raised the level have cleared below
	// it (the dwell holds Level), or the level is back at 0 and the
	// backlog a degradation left is still draining. It ends when the
	// level rises, when a signal has stood at the level for a whole dwell
	// (ControllerOptions.Dwell; a signal that comes and goes does not end
	// it), or at level 0 once nothing is left unsent (Inputs.UnsentBytes).
	Recovering bool
	// ActLevel is the level the lanes act at: Level, except while
	// Recovering, when it follows the raw level down at once and up only
	// once the raw level has stood above it for a dwell (so it does not
	// flap with a flickering signal). The dwell holds Level, and
	// with it the anti-flap doubling and the level the node reports, but
	// not the drain: a class held deferred through the dwell after its
	// signals had cleared only made the backlog older (the lanes ramp a
	// class that resumes instead, see Lanes.SetLevelsAt).
	ActLevel int
}

// NewController returns a controller at level 0.
func NewController(o ControllerOptions) (*Controller, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.Dwell, DefaultDwell)
	def(&o.MaxDwell, DefaultMaxDwell)
	def(&o.FlapWindow, DefaultFlapWindow)
	def(&o.QueueTarget, DefaultQueueTarget)
	def(&o.QueueInterval, DefaultQueueInterval)
	def(&o.DemandTau, DefaultDemandTau)
	def(&o.MinQueueDelay, DefaultMinQueueDelay)
	if o.ConfirmTicks == 0 {
		o.ConfirmTicks = DefaultConfirmTicks
	}
	if o.Dwell < 0 || o.MaxDwell < o.Dwell || o.FlapWindow < 0 || o.ConfirmTicks < 1 || o.QueueTarget < 0 || o.QueueInterval <= 0 || o.DemandTau <= 0 {
		return nil, fmt.Errorf("%w: controller options %+v", ErrInvalidOptions, o)
	}
	return &Controller{o: o, dwell: o.Dwell}, nil
}

// Level returns the current level.
func (c *Controller) Level() int { return c.level }

// up maps v (higher is worse) to a level with Schmitt hysteresis.
func up(cur int, v float64, entry [3]float64, exit float64) int {
	lv := 0
	for i, e := range entry {
		if v >= e {
			lv = i + 1
		}
	}
	for l := cur; l > lv; l-- {
		if v >= entry[l-1]*exit {
			return l
		}
	}
	return lv
}

// down maps d (lower is worse; 0 = no signal) to a level with hysteresis.
func down(cur int, d time.Duration, entry [3]time.Duration) int {
	if d <= 0 {
		return 0
	}
	lv := 0
	for i, e := range entry {
		if d < e {
			lv = i + 1
		}
	}
	for l := cur; l > lv; l-- {
		if d <= entry[l-1]*ttfExit {
			return l
		}
	}
	return lv
}

// ewma moves avg toward x with weight dt/(tau+dt), in integers. A step
// that rounds to zero lands on x: truncated steps stopped short of it for
// good (a backlog that stopped growing kept a growth of a few bytes/s,
// and a full spool's time to full stayed at 1 ns, level 3, forever).
func ewma(avg, x int64, dt, tau time.Duration) int64 {
	if dt <= 0 {
		return avg
	}
	d := x - avg
	step := mulDiv(abs64(d), int64(dt), int64(tau+dt))
	if step == 0 {
		return x
	}
	if d < 0 {
		return avg - step
	}
	return avg + step
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// EvaluateAt updates the signals with in and returns the level. Call it on
// a regular tick (DefaultTick).
func (c *Controller) EvaluateAt(now time.Time, in Inputs) int {
	before := c.level
	dt := time.Duration(0)
	if !c.lastTick.IsZero() && now.After(c.lastTick) {
		dt = now.Sub(c.lastTick)
	}
	first := c.lastTick.IsZero()
	if first || now.After(c.lastTick) {
		c.lastTick = now
	}

	// RTT inflation and errors.
	infl := in.Link.Inflation
	if queue := time.Duration((infl - 1) * float64(in.Link.MinRtt)); queue < c.o.MinQueueDelay {
		infl = min(infl, 1) // too little delay to be a queue
	}
	sig := up(c.sig[SignalInflation], infl, inflationEntry, inflationExit)
	if in.Link.Probing {
		// A probe's inflation is its own queue: it never raises the
		// signal. Nor does the probe clear it: ignored, a signal cleared
		// by every probe ended a level's hold on the classes (see
		// ControllerStatus.Recovering) for the probe's length.
		sig = min(sig, c.sig[SignalInflation])
	}
	c.sig[SignalInflation] = sig
	c.sig[SignalErrors] = up(c.sig[SignalErrors], in.Link.ErrorRate, errorEntry, errorExit)
	if in.Link.InflightMsgs > 0 && !in.Link.LastAckAt.IsZero() {
		if now.Sub(in.Link.LastAckAt) >= max(3*in.Link.RTO, 5*time.Second) {
			c.sig[SignalErrors] = 3
		}
	}

	// Demand ρ = smoothed pre-shedding ingress / target.
	if !first {
		// The first tick has no interval to weigh; a burst in it must not
		// count as a sustained rate.
		c.demand = ewma(c.demand, in.IngressBytesPerSec, dt, c.o.DemandTau)
	}
	rho := 0.0
	if in.Link.Target > 0 {
		rho = float64(c.demand) / float64(in.Link.Target)
	}
	c.sig[SignalDemand] = up(c.sig[SignalDemand], rho, demandEntry, demandExit)

	// Backlog growth and time to full.
	if !first && dt > 0 {
		g := mulDiv(abs64(in.BacklogBytes-c.lastBacklog), nano, int64(dt))
		if in.BacklogBytes < c.lastBacklog {
			g = -g
		}
		c.growth = ewma(c.growth, g, dt, c.o.DemandTau)
	}
	c.lastBacklog = in.BacklogBytes
	ttf := c.timeToFull(in)
	c.sig[SignalTimeToFull] = down(c.sig[SignalTimeToFull], ttf, ttfEntry)

	// CoDel-style standing queue.
	standing := false
	if in.Sojourn < c.o.QueueTarget || in.BacklogBytes <= 0 {
		c.firstAbove = time.Time{}
	} else if c.firstAbove.IsZero() {
		c.firstAbove = now.Add(c.o.QueueInterval)
	} else if !now.Before(c.firstAbove) {
		standing = true
	}
	if c.growth > 0 {
		if c.growingFrom.IsZero() {
			c.growingFrom = now
		}
	} else {
		c.growingFrom = time.Time{}
	}
	q := 0
	// A queue that stands but shrinks is a backlog draining at the link's
	// rate: what the level would shed is what the link is catching up on,
	// and deferring classes would only make the backlog older.
	if standing && c.growth >= 0 {
		q = 1
		if !c.growingFrom.IsZero() && now.Sub(c.growingFrom) >= DefaultGrowthFor {
			q = 2
		}
	}
	c.sig[SignalQueue] = q

	raw := 0
	for _, s := range c.sig {
		raw = max(raw, s)
	}
	link := max(c.sig[SignalInflation], c.sig[SignalErrors])
	if in.LinkDown {
		link = 3
	}
	c.record(now, raw, link)

	if (in.LinkDown || c.sig[SignalErrors] == 3) && c.outageAt.IsZero() {
		c.outageAt = now
	}
	switch {
	case in.LinkDown:
		if c.level < 3 {
			c.enter(now, 3)
		}
		c.upCount = 0
	case !c.outageAt.IsZero() && c.sig[SignalErrors] == 0 && in.Link.LastAckAt.After(c.outageAt):
		// The link failed (down, stalled, or most attempts failing) and
		// is delivering again without errors. An outage is not
		// congestion: the level goes straight to what the signals say
		// now, with no dwell and no anti-flap, and the queue signal,
		// which measured the outage's backlog, starts again. (A flaky
		// link keeps its error rate up, and stays on the dwell rule.)
		c.outageAt = time.Time{}
		c.hist = c.hist[:0]
		c.dwell = c.o.Dwell
		c.lastLeft = [4]time.Time{}
		c.firstAbove, c.growingFrom, c.growth = time.Time{}, time.Time{}, 0
		c.sig[SignalQueue] = 0
		raw = 0
		for _, s := range c.sig {
			raw = max(raw, s)
		}
		c.record(now, raw, link)
		c.enter(now, raw)
	case raw > c.level:
		if c.upCount == 0 || raw < c.upMin {
			c.upMin = raw
		}
		c.upCount++
		if c.upCount >= c.o.ConfirmTicks {
			c.enter(now, c.upMin)
		}
	default:
		c.upCount = 0
		if raw < c.level && !now.Before(c.lastChange.Add(c.dwell)) && c.windowMax() < c.level {
			c.enter(now, c.level-1)
		}
	}
	if c.dwell > c.o.Dwell && now.Sub(c.lastChange) >= c.o.MaxDwell {
		c.dwell = c.o.Dwell // calm for long enough: forget the flapping
	}
	c.recover(now, max(raw, link), link, in.UnsentBytes, c.level > before) // link is 3 while the link is down
	return c.level
}

// recover runs the recovery phase (ControllerStatus.Recovering) once the
// level is set, raw and link being the signals' levels now and rose
// whether the level rose at this tick. Above level 0 it begins when the
// raw level is below the level (the dwell holds it) and lasts until the
// level rises or a signal has stood at the level for a dwell; at level
// 0, until nothing is left unsent of what a degradation left.
func (c *Controller) recover(now time.Time, raw, link int, unsent int64, rose bool) {
	was := c.recovering
	switch {
	case rose:
		c.degraded, c.recovering = true, false
	case c.level > 0:
		c.degraded = true
		c.recovering = c.recovering || raw < c.level
	default:
		c.recovering = c.degraded && unsent > 0
		c.degraded = c.recovering
	}
	if c.recovering && !was {
		c.actHold = held{v: min(raw, c.level)}
		c.linkHold = held{v: min(link, c.level)}
	}
	if c.recovering {
		c.actLevel = c.actHold.at(now, min(raw, c.level), c.o.Dwell)
		c.actLink = min(c.linkHold.at(now, min(link, c.level), c.o.Dwell), c.actLevel)
		if c.level > 0 && c.actLevel >= c.level {
			c.recovering = false // a signal stood at the level for a dwell
		}
	}
	if !c.recovering {
		c.actLevel, c.actLink = c.level, c.linkLevel()
	}
}

func (c *Controller) timeToFull(in Inputs) time.Duration {
	if in.CapBytes <= 0 || c.growth <= 0 {
		return 0
	}
	room := max(0, in.CapBytes-max(in.BacklogBytes, in.DiskBytes))
	if room == 0 {
		return time.Nanosecond
	}
	return time.Duration(mulDiv(room, nano, c.growth))
}

func (c *Controller) record(now time.Time, raw, link int) {
	c.hist = append(c.hist, rawAt{now, raw, link})
	cut := now.Add(-c.dwell)
	i := 0
	for i < len(c.hist) && !c.hist[i].t.After(cut) {
		i++
	}
	if i > 0 {
		c.hist = slices.Delete(c.hist, 0, i)
	}
}

func (c *Controller) windowMax() int {
	m := 0
	for _, h := range c.hist {
		m = max(m, h.raw)
	}
	return m
}

// linkLevel is Status().LinkLevel.
func (c *Controller) linkLevel() int {
	m := 0
	for _, h := range c.hist {
		m = max(m, h.link)
	}
	return min(m, c.level)
}

func (c *Controller) enter(now time.Time, level int) {
	if level == c.level {
		return
	}
	if level > c.level {
		if last := c.lastLeft[level]; !last.IsZero() && now.Sub(last) < c.o.FlapWindow {
			c.dwell = min(2*c.dwell, c.o.MaxDwell)
		}
	} else {
		c.lastLeft[c.level] = now
	}
	c.level = level
	c.lastChange = now
	c.upCount = 0
	c.transitions++
}

// NextEventAt returns when the level could next fall by time alone (the
// dwell's end), or zero at level 0.
func (c *Controller) NextEventAt(now time.Time) time.Time {
	if c.level == 0 {
		return time.Time{}
	}
	return later(now, c.lastChange.Add(c.dwell))
}

// Status returns the controller's state.
func (c *Controller) Status() ControllerStatus {
	s := ControllerStatus{Level: c.level, Signals: c.sig, Dwell: c.dwell, LastChange: c.lastChange, Transitions: c.transitions,
		LinkLevel: c.actLink, ActLevel: c.actLevel, Recovering: c.recovering}
	if len(c.hist) > 0 {
		s.Raw = c.hist[len(c.hist)-1].raw
	}
	return s
}
