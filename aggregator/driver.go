package aggregator

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// shaping is the shaper driver as a lane sees it: what the class may do at
// the current level, admission of its batches, and the outcome of each
// attempt. The driver is its one implementation; the lanes hold it by
// this interface so that what they may ask of the shaper is written down
// in one place.
type shaping interface {
	// action is what class c does at the level the classes act at (the
	// level, or the signals' level while the node recovers), and that level;
	// unshaped, the zero action and level 0.
	action(c *priority.Class) (priority.Action, int)
	// levelChanged returns a channel closed when action's answer may
	// change.
	levelChanged() <-chan struct{}
	// target is the link's target rate in bytes/s, 0 when unshaped or not
	// known yet: the lanes size their batches from it.
	target() int64
	// linkEstimate is target; whether the estimator has found the link
	// (left its first startup, or seen a queue on the path: before, its
	// capacity is a guess); and
	// whether a send waited for the link within heldWindow. Unshaped, 0
	// and false.
	linkEstimate() (target int64, found, full bool)
	// linkLevel is the part of the level the link's own health accounts
	// for.
	linkLevel() int
	// reserve waits until lane id may send bytes (see driver.reserve).
	reserve(ctx context.Context, id, bytes int, critical bool, drain <-chan struct{}) (ok, held bool)
	// onSend records an attempt and returns its id; onAck and onFailure
	// its end. onFailure returns what the retrier decides.
	onSend(bytes int, first, limited bool) uint64
	onAck(id uint64)
	onFailure(id uint64, a shaper.Attempt) shaper.Decision
	// tryRetry asks the retry budget for one retry now.
	tryRetry() bool
	// aliveAfter and upAfter return channels closed at the next ack, and
	// the next time the upstream is back.
	aliveAfter() <-chan struct{}
	upAfter() <-chan struct{}
}

// driverInputs is what the driver reads of the node at each tick, handed
// to it rather than read from the node's lanes.
type driverInputs struct {
	// backlog returns the raw bytes waiting to be cut into batches and the
	// longest time an urgent class's batch has waited to go (sojourn).
	backlog func(now time.Time) (bytes int64, sojourn time.Duration)
	// ratio is the wire bytes per raw byte published so far (1 before any).
	ratio func() float64
	// spoolBytes is the disk space of the whole spool and what of it
	// is live (see spoolUse).
	spoolBytes func() (disk, live int64)
	// connected reports whether the upstream connection is up.
	connected func() bool
}

// spoolUse is the spool's disk space and the bytes of its live events (not
// yet acknowledged): per class, the live events at the class's mean event
// size since Open, at most its disk space; a class with nothing appended
// since Open counts its disk space whole. The disk space alone is no
// backlog: a segment's file is deleted only once all of it is
// acknowledged (and never the one being appended to), so during a drain
// with events still arriving it grows between deletions, and the
// controller read that growth as a spool filling up.
func spoolUse(st spool.Stats) (disk, live int64) {
	for _, c := range st.Classes {
		switch {
		case c.Depth == 0:
		case c.Appended == 0:
			live += c.Bytes
		default:
			mean := max(c.AppendedBytes/c.Appended, 1)
			if c.Bytes > 0 && c.Depth < uint64(c.Bytes)/mean {
				live += int64(c.Depth * mean)
			} else {
				live += c.Bytes
			}
		}
	}
	return st.Bytes, live
}

// driver is the node's shaper: the token-bucket lanes, the link-health
// estimator, the degradation controller and the retrier. They are pure
// state machines; the driver holds them under one mutex, feeds them the
// clock, and runs the tick that turns link health into a target rate and
// a degradation level. Its clock is now (time.Now in a node), so that its
// decisions can be driven over fixed instants.
type driver struct {
	in       driverInputs
	now      func() time.Time
	log      *slog.Logger
	tickIv   time.Duration // Link.Tick
	capBytes int64         // the spool's total cap (Options.Spool.MaxBytes)
	headroom float64       // Link.Headroom
	unshaped bool
	window   chan struct{} // the one FIFO window of all classes when unshaped

	mu      sync.Mutex
	lanes   *shaper.Lanes
	est     *shaper.Estimator
	ctl     *shaper.Controller
	retrier *shaper.Retrier
	nextID  uint64

	level       atomic.Int32
	linkLvl     atomic.Int32                  // the part of level the link's own health accounts for (shaper.ControllerStatus.LinkLevel)
	actLvl      atomic.Int32                  // the level the lanes act at (shaper.ControllerStatus.ActLevel)
	recovering  atomic.Bool                   // shaper.ControllerStatus.Recovering
	pacing      int64                         // the lanes' target, bytes/s (k.mu)
	changed     atomic.Pointer[chan struct{}] // closed and replaced at each level change, and when the link's part of it changes
	acked       atomic.Pointer[chan struct{}] // closed and replaced at each ack or failure
	alive       atomic.Pointer[chan struct{}] // closed and replaced at each ack
	up          atomic.Pointer[chan struct{}] // closed and replaced when the upstream is back (Node.watchUpstream)
	transitions atomic.Uint64
	found       atomic.Bool  // the estimator has left its first startup: its capacity is the link's
	lastHeld    atomic.Int64 // unix ns of the last send the shaper held back

	ingress     atomic.Int64 // bytes accepted by Ingest, before any shedding
	lastIngress int64
	downSince   time.Time    // when the connection was first seen not connected; zero while connected
	lastOutcome atomic.Int64 // unix ns of the last ack or failure
	snap        atomic.Pointer[LinkStats]
	cpu         shaper.CPUStatus // the node's CPU contention, sampled by run before each tick (zero when not run)
	cpuEcho     bool             // run times a loopback echo too (see cpuSampler); a synctest bubble cannot wait on a socket
}

var _ shaping = (*driver)(nil)

// LinkStats is the shaper's view of the upstream link.
type LinkStats struct {
	Level       int           // degradation level 0..3
	LinkLevel   int           // the part of ActLevel the link's own health accounts for; only its defers stop a class (shaper.EffectiveAction)
	ActLevel    int           // the level the classes act at: Level, or while Recovering the signals' level now (shaper.ControllerStatus.ActLevel)
	Recovering  bool          // the signals have cleared and the backlog the degradation built is draining
	Transitions uint64        // level changes since New
	Capacity    int64         // estimated capacity, bytes/s
	Target      int64         // min(Link.Ceil, Capacity) × Headroom, bytes/s
	Pacing      int64         // rate the lanes are given now (Target, a probe, or a recovery's drain), bytes/s
	Delivery    int64         // latest delivery-rate sample, bytes/s
	MinRTT      time.Duration // minimum ack RTT over the last 10 s
	SRTT        time.Duration // smoothed ack RTT
	ErrorRate   float64       // failed attempts per attempt, smoothed
	InFlight    int64         // bytes published and not yet acknowledged
	Probe       string        // estimator state: cruise, up, startup, probe_rtt
	Signals     [5]int        // raw level per signal: inflation, errors, demand, queue, time to full
	// SchedP99 is the node's worst 1-tick p99 of the time a goroutine
	// waited to run, and CPUDelay the RTT inflation the node's own CPU
	// explains (shaper.CPUStatus), over the last 3 s: the estimator does
	// not read that much of an ack's delay as the link's queue.
	SchedP99 time.Duration
	CPUDelay time.Duration
}

// msgOverhead is what a batch costs on the wire besides its body, for the
// longest class name: wire.MsgOverhead, the figure `sluice plan` charges
// too. The lanes' old default of 256 bytes was half of it: paced at the
// target by the lanes' count, the link carried about 2% more (seen: 80.6%
// of a 5 Mbit/s link at a headroom of 80%).
func msgOverhead(o Options, spoolID string) int {
	n := 0
	for _, c := range o.Classes {
		n = max(n, len(c.Name))
	}
	return wire.MsgOverhead(o.Subject, o.Node, spoolID, n)
}

// newDriver builds the shaper for options o (defaults set), whose batches
// cost overhead bytes each besides their bodies, reading the node through
// in and the time through now.
func newDriver(o Options, overhead int, in driverInputs, now func() time.Time) (*driver, error) {
	k := &driver{
		in: in, now: now, log: o.Logger, tickIv: o.Link.Tick,
		capBytes: o.Spool.MaxBytes, headroom: o.Link.Headroom, unshaped: o.Link.Unshaped, cpuEcho: true,
	}
	ch, ach, lch, uch := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	k.changed.Store(&ch)
	k.acked.Store(&ach)
	k.alive.Store(&lch)
	k.up.Store(&uch)
	if k.unshaped {
		k.window = make(chan struct{}, o.MaxInFlight)
	}
	var err error
	var target priority.Rate
	if o.Link.Ceil > 0 {
		target.BytesPerSec = int64(float64(o.Link.Ceil) * o.Link.Headroom)
	}
	// Bucket depths follow the batches' air time (see batcher.batchBytes),
	// not their byte bounds: a deep link bucket is a burst into the
	// bottleneck's queue that critical batches then wait behind.
	if k.lanes, err = shaper.NewLanes(o.Classes, target, shaper.LanesOptions{OverheadBytes: overhead}); err != nil {
		return nil, err
	}
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	if k.est, err = shaper.NewEstimator(shaper.EstimatorOptions{
		LinkCeil: o.Link.Ceil, Headroom: o.Link.Headroom, Rand: rnd.Float64,
	}); err != nil {
		return nil, err
	}
	if k.ctl, err = shaper.NewController(shaper.ControllerOptions{Dwell: o.Link.Dwell, MaxDwell: max(o.Link.Dwell, 2*time.Minute)}); err != nil {
		return nil, err
	}
	// Batch sizes follow the target from the first batch on.
	snap := k.est.SnapshotAt(now())
	k.snap.Store(&LinkStats{Capacity: snap.Capacity, Target: snap.Target, Pacing: snap.Pacing, Probe: snap.State.String()})
	if k.retrier, err = shaper.NewRetrier(shaper.RetryOptions{
		Backoff: shaper.Backoff{Base: o.RetryMin, Cap: o.RetryMax},
		// Past the duplicate window a retry could store a second copy.
		Horizon: max(o.DuplicateWindow-20*time.Second, o.DuplicateWindow/2),
		Budget:  shaper.BudgetOptions{Ratio: o.RetryBudget},
		Rand:    rnd.Float64,
	}); err != nil {
		return nil, err
	}
	return k, nil
}

// Level returns the current degradation level.
func (k *driver) Level() int { return int(k.level.Load()) }

func (k *driver) linkLevel() int { return int(k.linkLvl.Load()) }

func (k *driver) action(c *priority.Class) (priority.Action, int) {
	if k.unshaped {
		return priority.Action{}, 0
	}
	level := int(k.actLvl.Load())
	return shaper.EffectiveAction(c, level, k.linkLevel()), level
}

func (k *driver) target() int64 {
	if k.unshaped {
		return 0
	}
	return k.snap.Load().Target
}

func (k *driver) linkEstimate() (int64, bool, bool) {
	if k.unshaped {
		return 0, false, false
	}
	return k.snap.Load().Target, k.found.Load(), k.now().Sub(time.Unix(0, k.lastHeld.Load())) <= heldWindow
}

// addIngress counts bytes an urgent class accepted: the demand signal.
func (k *driver) addIngress(bytes int) { k.ingress.Add(int64(bytes)) }

// levelChanged returns a channel closed at the next level change, or when
// the link's part of it changes: whenever shaper.EffectiveAction may.
func (k *driver) levelChanged() <-chan struct{} { return *k.changed.Load() }

// wakeLevel closes the levelChanged channel.
func (k *driver) wakeLevel() {
	ch := make(chan struct{})
	close(*k.changed.Swap(&ch))
}

// run is the tick goroutine; it returns when ctx ends.
func (k *driver) run(ctx context.Context) {
	t := time.NewTicker(k.tickIv)
	defer t.Stop()
	cpu := newCPUSampler(k.tickIv, k.cpuEcho)
	defer cpu.close()
	last := k.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := k.now()
			k.cpu = cpu.sampleAt(now)
			k.tick(now, now.Sub(last))
			last = now
		}
	}
}

// demand is the urgent classes' ingress rate in wire bytes/s: in raw bytes
// over dt, scaled by the compression seen so far, so that it compares
// with a target in wire bytes.
func demand(in int64, dt time.Duration, ratio float64) int64 {
	return int64(float64(in) / max(dt.Seconds(), 1e-3) * ratio)
}

// linkDownAt tracks the connection: since is when it was first seen not
// connected (zero while connected). The link is down once the connection
// has been away for a second: a reconnect in progress (or a first connect
// just after start) is not an outage worth level 3 and its 30 s of dwell
// on the way back.
func linkDownAt(now, since time.Time, connected bool) (time.Time, bool) {
	if connected {
		return time.Time{}, false
	}
	if since.IsZero() {
		since = now
	}
	return since, now.Sub(since) >= time.Second
}

// freshHealth is the estimator's snapshot s as the controller should see
// it at now, the last attempt having ended at last. With nothing sent
// ended, well or badly, for staleAfter, the error rate, RTT inflation and
// in-flight count describe an older link. Left as they are, a node whose
// level defers the traffic that would measure the link never measures it
// again and keeps the level for good (seen: level 1 held by the inflation
// of the last burst before replication was deferred).
func freshHealth(s shaper.Snapshot, now, last time.Time) shaper.Snapshot {
	if now.Sub(last) > staleAfter {
		s.ErrorRate, s.Inflation, s.InflightMsgs = 0, 0, 0
	}
	return s
}

func (k *driver) tick(now time.Time, dt time.Duration) {
	in := k.ingress.Load()
	ingress := demand(in-k.lastIngress, dt, k.in.ratio())
	k.lastIngress = in
	backlog, sojourn := k.in.backlog(now)
	spoolDisk, spoolLive := k.in.spoolBytes()
	var linkDown bool
	k.downSince, linkDown = linkDownAt(now, k.downSince, k.in.connected())

	k.mu.Lock()
	k.est.SetCPUDelayAt(now, k.cpu.Delay)
	k.est.SetLinkDownAt(now, linkDown)
	k.est.SetBacklogAt(now, backlog > 0)
	snap := k.est.SnapshotAt(now)
	health := freshHealth(snap, now, time.Unix(0, k.lastOutcome.Load()))
	k.syncPacing(now)
	level := k.Level()
	if !k.unshaped {
		level = k.ctl.EvaluateAt(now, shaper.Inputs{
			Link:               health,
			IngressBytesPerSec: ingress,
			Sojourn:            sojourn,
			BacklogBytes:       spoolLive,
			DiskBytes:          spoolDisk,
			CapBytes:           k.capBytes,
			LinkDown:           linkDown,
			UnsentBytes:        backlog,
		})
	}
	prev, prevLink, prevAct := k.Level(), k.linkLevel(), int(k.actLvl.Load())
	st := k.ctl.Status()
	linkLevel, actLevel := level, level
	if !k.unshaped {
		// While the node recovers, the classes act at the signals' level,
		// not at the level the dwell holds (shaper.ControllerStatus).
		linkLevel, actLevel = st.LinkLevel, st.ActLevel
	}
	if actLevel != prevAct || linkLevel != prevLink {
		k.lanes.SetLevelsAt(now, actLevel, linkLevel)
		// The estimator stops probing for a failing link, not for a
		// backlog: a load-only level is when a low estimate costs most.
		k.est.SetLevelAt(now, linkLevel)
	}
	k.lanes.SetDrainAt(now, k.drainRate(st.Recovering, snap.Target))
	pacing := k.lanes.LinkRate()
	if k.est.SnapshotAt(now).State != shaper.StateStartup || standingQueue(snap) {
		k.found.Store(true)
	}
	k.mu.Unlock()

	if prev := k.snap.Load(); prev.Probe != snap.State.String() {
		k.log.Debug("link estimator", "from", prev.Probe, "to", snap.State.String(),
			"capacity_bps", snap.Capacity*8, "max_bw_bps", snap.MaxBw*8, "bw_lo_bps", snap.BwLo*8,
			"delivery_bps", snap.DeliveryRate*8, "min_rtt", snap.MinRtt, "rounds", snap.Rounds, "cpu_delay", k.cpu.Delay)
	}
	k.snap.Store(&LinkStats{
		Level: level, LinkLevel: linkLevel, ActLevel: actLevel, Recovering: st.Recovering, Transitions: k.transitions.Load(),
		Capacity: snap.Capacity, Target: snap.Target, Pacing: pacing, Delivery: snap.DeliveryRate,
		MinRTT: snap.MinRtt, SRTT: snap.SRTT, ErrorRate: snap.ErrorRate, InFlight: snap.InflightBytes,
		Probe: snap.State.String(), Signals: st.Signals, SchedP99: k.cpu.SchedP99, CPUDelay: k.cpu.Delay,
	})
	k.linkLvl.Store(int32(linkLevel))
	k.actLvl.Store(int32(actLevel))
	if was := k.recovering.Swap(st.Recovering); was != st.Recovering {
		k.log.Info("recovery", "recovering", st.Recovering, "level", level, "act_level", actLevel, "unsent_bytes", backlog)
	}
	if level != prev {
		k.level.Store(int32(level))
		k.transitions.Add(1)
		k.wakeLevel()
		k.log.Info("degradation level changed", "from", prev, "to", level, "link_level", linkLevel, "act_level", actLevel,
			"capacity_bps", snap.Capacity*8, "target_bps", snap.Target*8, "min_rtt", snap.MinRtt,
			"inflation", snap.Inflation, "error_rate", snap.ErrorRate, "signals", st.Signals, "cpu_delay", k.cpu.Delay)
	} else if linkLevel != prevLink || actLevel != prevAct {
		k.wakeLevel()
	}
}

// drainHeadroom is the part of the link's capacity a recovery may drain
// the backlog at (shaper.Lanes.SetDrainAt), where the target keeps
// Link.Headroom (0.8 by default) of it.
const drainHeadroom = 0.95

// drainRate is the link rate a recovery may drain at, given the target
// (min(ceil, capacity) × headroom): drainHeadroom of the same capacity,
// or none when not recovering or the headroom is already that thin.
func (k *driver) drainRate(recovering bool, target int64) int64 {
	if k.unshaped || !recovering || k.headroom <= 0 || k.headroom >= drainHeadroom {
		return 0
	}
	return int64(float64(target) / k.headroom * drainHeadroom)
}

// inflightFull reports whether a batch of bytes must wait for room in
// flight: the bytes in flight leave no room under the estimator's cap (two
// bandwidth-delay products, BBR's cwnd). A batch larger than half the cap
// needs only half the cap free, so a batch cut for a faster link is not
// held back for as long as other classes keep anything in flight; a
// critical batch, or one with nothing in flight, never waits.
func inflightFull(critical bool, bytes, inflight, capBytes int64) bool {
	return !critical && inflight > 0 && inflight+min(bytes, capBytes/2) > capBytes
}

// reserve waits until lane id may send bytes, and returns ok; or not ok
// when ctx ends, or when the class is deferred at the current level and
// drain is closed (its batch stays claimed in the spool and is sent after
// the next start). A batch may go when the lanes admit it and the bytes in
// flight leave room (inflightFull): the pacing rate bounds how fast the
// bottleneck's queue grows, the cap bounds how deep it gets when the
// capacity falls faster than the estimate. Critical batches may exceed the
// cap, so that bulk in flight never holds them back. Waits are
// re-evaluated at least every tick, as the target and the cap move. held
// says whether the send was held back (by pacing, the in-flight cap or the
// level) before it was admitted: the estimator reads a send the shaper
// never held as limited by the sender.
func (k *driver) reserve(ctx context.Context, id, bytes int, critical bool, drain <-chan struct{}) (ok, held bool) {
	if k.unshaped {
		return true, false
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := k.now()
		k.mu.Lock()
		snap := k.est.SnapshotAt(now)
		full := inflightFull(critical, int64(bytes), snap.InflightBytes, snap.InflightCapBytes)
		var r shaper.Reservation
		if !full {
			r = k.lanes.ReserveAt(now, id, bytes)
		}
		deferred := !full && !r.OK && r.At.IsZero()
		if deferred && isClosed(drain) {
			k.lanes.SetBacklogAt(now, id, 0) // leaving: hold nobody back
		}
		changed, acked := k.levelChanged(), *k.acked.Load()
		k.mu.Unlock()
		switch {
		case r.OK:
			if held {
				k.lastHeld.Store(now.UnixNano())
			}
			return true, held
		case deferred && isClosed(drain):
			return false, held
		}
		held = true
		var tc <-chan time.Time
		if !deferred {
			wait := k.tickIv // in-flight full: an ack wakes us first
			if !full {
				wait = min(r.At.Sub(now), wait)
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tc = timer.C
		}
		var ackc <-chan struct{}
		if full {
			ackc = acked
		}
		wake := drain
		if isClosed(drain) {
			wake = nil
		}
		select {
		case <-ctx.Done():
			k.mu.Lock()
			k.lanes.SetBacklogAt(k.now(), id, 0)
			k.mu.Unlock()
			return false, held
		case <-wake:
		case <-changed:
		case <-ackc:
		case <-tc:
		}
	}
}

// signalAck wakes the lanes waiting for room in flight.
func (k *driver) signalAck() {
	ch := make(chan struct{})
	close(*k.acked.Swap(&ch))
}

// onSend records a publish attempt of bytes and returns its id.
func (k *driver) onSend(bytes int, first bool, limited bool) uint64 {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nextID++
	k.est.OnSendAt(now, k.nextID, bytes, limited)
	if first {
		k.retrier.OnFirstSendAt(now)
	}
	return k.nextID
}

// standingQueue reports whether the last two rounds' minimum RTT stood at
// least shaper.DefaultMinQueueDelay above the path's minimum: a queue on
// the path, so the link, not the node, bounds what is sent. A minimum per
// round ignores the outliers of a loaded machine (seen on loopback: a
// smoothed RTT 5 ms above a 0.3 ms minimum).
func standingQueue(s shaper.Snapshot) bool {
	return s.Inflation > 1 && time.Duration((s.Inflation-1)*float64(s.MinRtt)) >= shaper.DefaultMinQueueDelay
}

// staleAfter: error signals with no attempt ending for this long are stale.
const staleAfter = 5 * time.Second

// syncPacing gives the lanes the estimator's pacing rate if it changed.
// It runs at every tick and after every ack and failure (k.mu held): a
// probe starts and ends on acks, often within one round, and a probe the
// lanes heard of only at the next tick had ended before it sent anything
// faster (seen: a step back up to 20 Mbit/s found after 19 s of failed
// probes, once the link bucket no longer held a 128 KiB burst).
func (k *driver) syncPacing(now time.Time) {
	if p := k.est.PacingRateAt(now); p != k.pacing {
		k.pacing = p
		k.lanes.SetTargetAt(now, priority.Rate{BytesPerSec: p})
	}
}

func (k *driver) onAck(id uint64) {
	now := k.now()
	k.lastOutcome.Store(now.UnixNano())
	k.mu.Lock()
	k.est.OnAckAt(now, id)
	k.syncPacing(now)
	k.mu.Unlock()
	k.signalAck()
	ch := make(chan struct{})
	close(*k.alive.Swap(&ch))
}

// aliveAfter returns a channel closed at the next successful ack.
func (k *driver) aliveAfter() <-chan struct{} { return *k.alive.Load() }

// upAfter returns a channel closed the next time the upstream is back: the
// connection (re)made and the stream found or created.
func (k *driver) upAfter() <-chan struct{} { return *k.up.Load() }

func (k *driver) signalUp() {
	ch := make(chan struct{})
	close(*k.up.Swap(&ch))
}

// onFailure records a failed attempt and decides what happens next.
func (k *driver) onFailure(id uint64, a shaper.Attempt) shaper.Decision {
	now := k.now()
	k.lastOutcome.Store(now.UnixNano())
	k.mu.Lock()
	defer k.mu.Unlock()
	k.est.OnErrorAt(now, id, a.Outcome)
	k.syncPacing(now)
	// Retries are held back for a failing link, not for a backlog.
	a.Level = k.linkLevel()
	d := k.retrier.OnFailureAt(now, a)
	k.signalAck()
	return d
}

// tryRetry asks the budget for one retry now.
func (k *driver) tryRetry() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.retrier.Budget().TryRetryAt(k.now())
}

// setClasses gives the lanes' buckets the classes' new settings.
func (k *driver) setClasses(classes []priority.Class) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lanes.SetClassesAt(k.now(), classes)
}

// lanesSnapshot returns the token buckets' state now.
func (k *driver) lanesSnapshot() shaper.LanesSnapshot {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lanes.SnapshotAt(k.now())
}
