package aggregator

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/wire"
)

// link is the node's shaper: the token-bucket lanes, the link-health
// estimator, the degradation controller and the retrier. They are pure
// state machines; link holds them under one mutex, feeds them the clock,
// and runs the tick that turns link health into a target rate and a
// degradation level.
type link struct {
	n        *Node
	unshaped bool
	window   chan struct{} // the one FIFO window of all classes when unshaped

	mu      sync.Mutex
	lanes   *shaper.Lanes
	est     *shaper.Estimator
	ctl     *shaper.Controller
	retrier *shaper.Retrier
	nextID  uint64

	level       atomic.Int32
	linkLevel   atomic.Int32                  // the part of level the link's own health accounts for (shaper.ControllerStatus.LinkLevel)
	probing     atomic.Bool                   // the estimator probes: deferred classes may borrow
	pacing      int64                         // the lanes' target, bytes/s (k.mu)
	changed     atomic.Pointer[chan struct{}] // closed and replaced at each level change, and when probing starts or ends
	acked       atomic.Pointer[chan struct{}] // closed and replaced at each ack or failure
	alive       atomic.Pointer[chan struct{}] // closed and replaced at each ack
	up          atomic.Pointer[chan struct{}] // closed and replaced when the upstream is back (Node.watchUpstream)
	transitions atomic.Uint64

	ingress     atomic.Int64 // bytes accepted by Ingest, before any shedding
	lastIngress int64
	downSince   time.Time    // when the connection was first seen not connected; zero while connected
	lastOutcome atomic.Int64 // unix ns of the last ack or failure
	snap        atomic.Pointer[LinkStats]
}

// LinkStats is the shaper's view of the upstream link.
type LinkStats struct {
	Level       int           // degradation level 0..3
	LinkLevel   int           // the part of Level the link's own health accounts for; only its defers stop a class (shaper.EffectiveAction)
	Transitions uint64        // level changes since New
	Capacity    int64         // estimated capacity, bytes/s
	Target      int64         // min(Link.Ceil, Capacity) × Headroom, bytes/s
	Pacing      int64         // rate the lanes are given now (Target, or a probe), bytes/s
	Delivery    int64         // latest delivery-rate sample, bytes/s
	MinRTT      time.Duration // minimum ack RTT over the last 10 s
	SRTT        time.Duration // smoothed ack RTT
	ErrorRate   float64       // failed attempts per attempt, smoothed
	InFlight    int64         // bytes published and not yet acknowledged
	Probe       string        // estimator state: cruise, up, startup, probe_rtt
	Signals     [5]int        // raw level per signal: inflation, errors, demand, queue, time to full
}

// msgOverhead is what a batch costs on the wire besides its body: its
// headers as NATS encodes them and the HPUB line with its reply inbox,
// for the longest class name and 13-digit ranges. The lanes' default of
// 256 bytes was half of it: paced at the target by the lanes' count, the
// link carried about 2% more (seen: 80.6% of a 5 Mbit/s link at a
// headroom of 80%).
func msgOverhead(o Options, spoolID string) int {
	b := wire.Batch{Node: o.Node, Spool: spoolID, Count: 1000, First: 1e12, Last: 1e12 + 999, Oldest: time.Now(), Level: 1}
	for _, c := range o.Classes {
		b.Class = max(b.Class, strings.Repeat("x", len(c.Name)))
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range b.Header() {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	// HPUB <subject> <reply> <header bytes> <total bytes>\r\n … \r\n, the
	// reply a JetStream async inbox (_INBOX.<22>.<22>).
	const reply, sizes = 52, 2 * 8
	return n + len("HPUB ") + len(o.Subject) + 1 + len(b.Class) + 1 + reply + 1 + sizes + len("\r\n\r\n")
}

func newLink(n *Node) (*link, error) {
	o := n.opts
	k := &link{n: n, unshaped: o.Link.Unshaped}
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
	// Bucket depths follow the batches' air time (see lane.batchBytes), not
	// their byte bounds: a deep link bucket is a burst into the bottleneck's
	// queue that critical batches then wait behind.
	if k.lanes, err = shaper.NewLanes(o.Classes, target, shaper.LanesOptions{OverheadBytes: msgOverhead(o, n.spool.ID())}); err != nil {
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
	snap := k.est.SnapshotAt(time.Now())
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
func (k *link) Level() int { return int(k.level.Load()) }

// levelChanged returns a channel closed at the next level change, when
// the link's part of it changes, or when a probe starts or ends (deferred
// classes may send during a probe): whenever shaper.EffectiveAction may.
func (k *link) levelChanged() <-chan struct{} { return *k.changed.Load() }

// wakeLevel closes the levelChanged channel.
func (k *link) wakeLevel() {
	ch := make(chan struct{})
	close(*k.changed.Swap(&ch))
}

// run is the tick goroutine.
func (k *link) run() {
	t := time.NewTicker(k.n.opts.Link.Tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-k.n.ctx.Done():
			return
		case now := <-t.C:
			k.tick(now, now.Sub(last))
			last = now
		}
	}
}

func (k *link) tick(now time.Time, dt time.Duration) {
	in := k.ingress.Load()
	// Demand is compared with a target in wire bytes: scale raw ingress by
	// the compression seen so far (1 before the first batch).
	ingress := int64(float64(in-k.lastIngress) / max(dt.Seconds(), 1e-3) * k.n.wireRatio())
	k.lastIngress = in
	backlog, sojourn := k.n.backlog(now)
	sp := k.n.spool.Stats()
	// The link is down once the connection has been away for a second: a
	// reconnect in progress (or a first connect just after start) is not
	// an outage worth level 3 and its 30 s of dwell on the way back.
	if k.n.opts.Conn.Status() == nats.CONNECTED {
		k.downSince = time.Time{}
	} else if k.downSince.IsZero() {
		k.downSince = now
	}
	linkDown := !k.downSince.IsZero() && now.Sub(k.downSince) >= time.Second

	k.mu.Lock()
	k.est.SetLinkDownAt(now, linkDown)
	k.est.SetBacklogAt(now, backlog > 0)
	snap := k.est.SnapshotAt(now)
	health := snap
	if now.Sub(time.Unix(0, k.lastOutcome.Load())) > staleAfter {
		// Nothing sent has ended, well or badly, for a while: the error
		// rate, RTT inflation and in-flight count describe an older link.
		// Left as they are, a node whose level defers the traffic that
		// would measure the link never measures it again and keeps the
		// level for good (seen: level 1 held by the inflation of the last
		// burst before replication was deferred).
		health.ErrorRate, health.Inflation, health.InflightMsgs = 0, 0, 0
	}
	k.syncPacing(now)
	level := k.Level()
	if !k.unshaped {
		level = k.ctl.EvaluateAt(now, shaper.Inputs{
			Link:               health,
			IngressBytesPerSec: ingress,
			Sojourn:            sojourn,
			BacklogBytes:       sp.Bytes,
			CapBytes:           k.n.opts.Spool.MaxBytes,
			LinkDown:           linkDown,
		})
	}
	prev, prevLink := k.Level(), int(k.linkLevel.Load())
	st := k.ctl.Status()
	linkLevel := level
	if !k.unshaped {
		linkLevel = st.LinkLevel
	}
	if level != prev || linkLevel != prevLink {
		k.lanes.SetLevelsAt(now, level, linkLevel)
		// The estimator stops probing for a failing link, not for a
		// backlog: a load-only level is when a low estimate costs most.
		k.est.SetLevelAt(now, linkLevel)
	}
	// A probe is filled from the deferred classes' backlog (see
	// shaper.Lanes.SetProbingAt).
	state := k.est.SnapshotAt(now).State
	probing := !k.unshaped && (state == shaper.StateUp || state == shaper.StateStartup)
	k.lanes.SetProbingAt(now, probing)
	k.mu.Unlock()
	probeChanged := k.probing.Swap(probing) != probing

	if prev := k.snap.Load(); prev.Probe != snap.State.String() {
		k.n.opts.Logger.Debug("link estimator", "from", prev.Probe, "to", snap.State.String(),
			"capacity_bps", snap.Capacity*8, "max_bw_bps", snap.MaxBw*8, "bw_lo_bps", snap.BwLo*8,
			"delivery_bps", snap.DeliveryRate*8, "min_rtt", snap.MinRtt, "rounds", snap.Rounds)
	}
	k.snap.Store(&LinkStats{
		Level: level, LinkLevel: linkLevel, Transitions: k.transitions.Load(),
		Capacity: snap.Capacity, Target: snap.Target, Pacing: snap.Pacing, Delivery: snap.DeliveryRate,
		MinRTT: snap.MinRtt, SRTT: snap.SRTT, ErrorRate: snap.ErrorRate, InFlight: snap.InflightBytes,
		Probe: snap.State.String(), Signals: st.Signals,
	})
	k.linkLevel.Store(int32(linkLevel))
	if level != prev {
		k.level.Store(int32(level))
		k.transitions.Add(1)
		k.wakeLevel()
		k.n.opts.Logger.Info("degradation level changed", "from", prev, "to", level, "link_level", linkLevel,
			"capacity_bps", snap.Capacity*8, "target_bps", snap.Target*8, "min_rtt", snap.MinRtt,
			"inflation", snap.Inflation, "error_rate", snap.ErrorRate, "signals", st.Signals)
	} else if probeChanged || linkLevel != prevLink {
		k.wakeLevel()
	}
}

// reserve waits until class id may send bytes, and returns true; or false
// when the node stops, or when the class is deferred at the current level
// and drain is closed (its batch stays claimed in the spool and is sent
// after the next start). A batch may go when the lanes admit it and the
// bytes in flight leave room under the estimator's cap (two bandwidth-
// delay products, BBR's cwnd): the pacing rate bounds how fast the
// bottleneck's queue grows, the cap bounds how deep it gets when the
// capacity falls faster than the estimate. A batch larger than half the
// cap needs only half the cap free, so a batch cut for a faster link is
// not held back for as long as other classes keep anything in flight.
// Critical batches may exceed the cap, so that bulk in flight never holds
// them back. Waits are re-evaluated at least every tick, as the target
// and the cap move.
func (k *link) reserve(id, bytes int, drain <-chan struct{}) bool {
	ok, _ := k.reserveHeld(id, bytes, drain)
	return ok
}

// reserveHeld is reserve that also says whether the send was held back
// (by pacing, the in-flight cap or the level) before it was admitted: the
// estimator reads a send the shaper never held as limited by the sender.
func (k *link) reserveHeld(id, bytes int, drain <-chan struct{}) (ok, held bool) {
	if k.unshaped {
		return true, false
	}
	critical := k.n.lanes[id].cfg.Load().class.Critical
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := time.Now()
		k.mu.Lock()
		snap := k.est.SnapshotAt(now)
		full := !critical && snap.InflightBytes > 0 &&
			snap.InflightBytes+min(int64(bytes), snap.InflightCapBytes/2) > snap.InflightCapBytes
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
			return true, held
		case deferred && isClosed(drain):
			return false, held
		}
		held = true
		var tc <-chan time.Time
		if !deferred {
			wait := k.n.opts.Link.Tick // in-flight full: an ack wakes us first
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
		case <-k.n.ctx.Done():
			k.mu.Lock()
			k.lanes.SetBacklogAt(time.Now(), id, 0)
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
func (k *link) signalAck() {
	ch := make(chan struct{})
	close(*k.acked.Swap(&ch))
}

// onSend records a publish attempt of bytes and returns its id.
func (k *link) onSend(bytes int, first bool, limited bool) uint64 {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nextID++
	k.est.OnSendAt(now, k.nextID, bytes, limited)
	if first {
		k.retrier.OnFirstSendAt(now)
	}
	return k.nextID
}

// staleAfter: error signals with no attempt ending for this long are stale.
const staleAfter = 5 * time.Second

// syncPacing gives the lanes the estimator's pacing rate if it changed.
// It runs at every tick and after every ack and failure (k.mu held): a
// probe starts and ends on acks, often within one round, and a probe the
// lanes heard of only at the next tick had ended before it sent anything
// faster (seen: a step back up to 20 Mbit/s found after 19 s of failed
// probes, once the link bucket no longer held a 128 KiB burst).
func (k *link) syncPacing(now time.Time) {
	if p := k.est.PacingRateAt(now); p != k.pacing {
		k.pacing = p
		k.lanes.SetTargetAt(now, priority.Rate{BytesPerSec: p})
	}
}

func (k *link) onAck(id uint64) {
	now := time.Now()
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
func (k *link) aliveAfter() <-chan struct{} { return *k.alive.Load() }

// upAfter returns a channel closed the next time the upstream is back: the
// connection (re)made and the stream found or created.
func (k *link) upAfter() <-chan struct{} { return *k.up.Load() }

func (k *link) signalUp() {
	ch := make(chan struct{})
	close(*k.up.Swap(&ch))
}

// onFailure records a failed attempt and decides what happens next.
func (k *link) onFailure(id uint64, a shaper.Attempt) shaper.Decision {
	now := time.Now()
	k.lastOutcome.Store(now.UnixNano())
	k.mu.Lock()
	defer k.mu.Unlock()
	k.est.OnErrorAt(now, id, a.Outcome)
	k.syncPacing(now)
	// Retries are held back for a failing link, not for a backlog.
	a.Level = int(k.linkLevel.Load())
	d := k.retrier.OnFailureAt(now, a)
	k.signalAck()
	return d
}

// tryRetry asks the budget for one retry now.
func (k *link) tryRetry() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.retrier.Budget().TryRetryAt(time.Now())
}

// outcome classifies a publish error for the shaper.
func outcome(err error) shaper.Outcome {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return shaper.OutcomeAck
	case errors.Is(err, nats.ErrMaxPayload):
		return shaper.OutcomePayloadTooLarge
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return shaper.OutcomeTimeout
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return shaper.OutcomeNoResponders
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return shaper.OutcomeDisconnected
	case errors.As(err, &apiErr) && apiErr.Code == 503:
		return shaper.OutcomeUnavailable
	}
	return shaper.OutcomeOther
}
