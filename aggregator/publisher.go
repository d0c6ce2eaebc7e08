package aggregator

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/spool"
)

// A flight is a batch on its way: the message made of it and the state of
// its current attempt.
type flight struct {
	batch
	msg *nats.Msg

	fut       jetstream.PubAckFuture
	err       error  // publish error before any future existed
	attempt   uint64 // the shaper's id of the current attempt
	attempts  int
	firstSent time.Time
	// reconnects is the connection's reconnect count at the attempt, and
	// connected whether the connection was up.
	reconnects uint64
	connected  bool
	// alive and up are the link's ack and upstream-back signals as of the
	// attempt (shaping.aliveAfter, upAfter): a failed attempt waits on
	// these, so that a signal between its send and its failure is not lost.
	alive, up <-chan struct{}
}

// hdrStale labels a batch of events that were past their class's max age
// when it was cut, shipped after the class's newer events (expiry by
// demotion). Its value is the max age in seconds. See docs/wire.md.
const hdrStale = "Sluice-Stale"

// rangeAcker is the spool as the publisher sees it.
type rangeAcker interface {
	// Ack records that JetStream took r: the spool may reclaim it.
	Ack(class string, r spool.Range) error
	// Trim gives a fully acknowledged tail segment back to the disk.
	Trim(class string) error
	// Last is the last seq spooled.
	Last(class string) uint64
}

// A publisher sends one class's batches: it waits for a window slot and
// the shaper's admission, publishes asynchronously, waits for each ack on
// a goroutine of its own (at most a window of them), retries failures
// with the same message id as the shaper decides, splits batches too
// large for the server, and acknowledges acked ranges to the spool.
type publisher struct {
	id    int // the class's index in the shaper's lanes
	class string
	subj  string
	cfg   *atomic.Pointer[laneConfig]
	js    jetstream.Publisher
	conn  *nats.Conn
	sp    rangeAcker
	drv   shaping
	bt    *batcher // cuts the halves of a split batch
	stats *laneStats
	log   *slog.Logger
	now   func() time.Time
	drain <-chan struct{} // closed when the node drains
	gate  *streamGate     // holds sends back while the node refuses its stream
	once  *onceGuard      // looks late attempts up in the stream first (stream_once.go)

	retryMin, retryMax, ackTimeout time.Duration

	failing  atomic.Bool   // a batch has failed twice and none was acked since: logged once per episode
	waiting  atomic.Int64  // ingest time (unix ns) of the oldest event of a batch waiting to be sent; 0 if none
	window   chan struct{} // one token per batch in flight
	inflight chan *flight  // send → run, in publish order
}

// send waits for a window slot and the shaper's admission, publishes f
// and hands it to run. It returns false if ctx ends, or if the class is
// deferred, or its stream refused, while the node drains (f stays claimed
// in the spool).
func (p *publisher) send(ctx context.Context, f *flight) bool {
	if !p.gate.wait(ctx, p.drain) {
		return false
	}
	ready := f.Oldest
	if f.stale > 0 {
		// Held back on purpose: its wait starts now.
		ready = p.now()
	}
	p.waiting.Store(ready.UnixNano())
	defer p.waiting.Store(0)
	select {
	case p.window <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	ok, held := p.drv.reserve(ctx, p.id, f.size(), p.cfg.Load().class.Critical, p.drain)
	if !ok {
		<-p.window
		return false
	}
	// Limited by the sender, not the link: nothing else to send right
	// now, or admitted without waiting.
	limited := !held || p.sp.Last(p.class) <= f.Last
	p.publish(f, p.drv.onSend(f.size(), true, limited))
	p.stats.batches.Add(1)
	p.stats.published.Add(uint64(f.Count))
	if f.stale > 0 {
		p.stats.demoted.Add(uint64(f.Count))
	}
	p.stats.rawBytes.Add(uint64(f.raw))
	p.stats.wireBytes.Add(uint64(f.size()))
	if f.Level > 0 && (len(f.Dropped) > 0) {
		p.stats.degraded.Add(1)
	}
	p.stats.inflight.Add(1)
	p.inflight <- f // never blocks: the window is no larger than the channel
	return true
}

// publish makes one attempt at f, as shaper attempt id.
func (p *publisher) publish(f *flight, id uint64) {
	if f.msg == nil {
		f.msg = &nats.Msg{Subject: p.subj, Header: f.Header(), Data: *f.body}
		if f.stale > 0 {
			f.msg.Header[hdrStale] = []string{strconv.FormatFloat(f.stale.Seconds(), 'f', -1, 64)}
		}
	}
	if f.attempts == 0 {
		f.firstSent = p.now()
	}
	f.attempts++
	f.attempt = id
	f.reconnects = p.conn.Stats().Reconnects
	f.connected = p.conn.IsConnected()
	f.alive, f.up = p.drv.aliveAfter(), p.drv.upAfter()
	f.fut, f.err = p.once.publish(p.js, f)
}

// run is the acker goroutine; it returns once close(p.inflight) and every
// batch in flight is done. Each batch in flight is delivered on its own
// goroutine (at most a window of them), so that one batch waiting for the
// link or the retry budget never holds back the acks of the batches behind
// it: those acks are what tells a waiting batch the link is back, and what
// frees room in flight. The spool takes acks in any order.
func (p *publisher) run(ctx context.Context) {
	var wg sync.WaitGroup
	for f := range p.inflight {
		wg.Go(func() {
			ok := p.deliver(ctx, f)
			p.bt.putBody(f.body)
			<-p.window
			if p.stats.inflight.Add(-1) == 0 && ok {
				// Maybe idle: give a fully acknowledged tail segment back to the disk.
				if err := p.sp.Trim(p.class); err != nil {
					p.log.Error("trim spool", "class", p.class, "err", err)
				}
			}
		})
	}
	wg.Wait()
}

// deliver waits for f's ack, retrying and splitting as the shaper decides,
// and acknowledges its range to the spool. It returns false if ctx ends
// first.
func (p *publisher) deliver(ctx context.Context, f *flight) bool {
	k := p.drv
	for {
		ack, err := p.wait(ctx, f)
		if err == nil {
			k.onAck(f.attempt)
			if p.failing.CompareAndSwap(true, false) {
				p.log.Info("upstream publishing again", "class", p.class)
			}
			if ack.Duplicate {
				p.stats.duplicates.Add(1)
			}
			p.done(f)
			return true
		}
		if errors.Is(err, context.Canceled) {
			return false
		}
		p.stats.errors.Add(1)
		o := outcome(err)
		if o == shaper.OutcomeTimeout && p.conn.Stats().Reconnects != f.reconnects {
			// The connection was reset under the attempt: its ack was
			// lost with it. Counted as congestion, a 200 ms reset cut C
			// by 30% a round, held the level at 2-3 and stalled the bulk
			// classes for up to 37 s (TestFaultLinkResetMidPublish).
			o = shaper.OutcomeDisconnected
		}
		if o == shaper.OutcomeOther && errors.Is(err, nats.ErrHeadersNotSupported) && !f.connected {
			// Before its first connection the client does not know
			// whether the server takes headers and refuses them.
			o = shaper.OutcomeDisconnected
		}
		critical := p.cfg.Load().class.Critical
		d := k.onFailure(f.attempt, shaper.Attempt{FirstSent: f.firstSent, N: f.attempts, Outcome: o, Critical: critical})
		if f.attempts >= 2 && p.failing.CompareAndSwap(false, true) {
			p.log.Warn("upstream publish failing, retrying", "class", p.class, "outcome", o.String(), "err", err)
		}
		switch d.Disposition {
		case shaper.Split:
			return p.split(ctx, f, err)
		case shaper.Retry:
			if !p.retrySleep(ctx, f, d.At.Sub(p.now()), o) {
				return false
			}
		default:
			// Backlog (budget, horizon, attempts, level) or a failure
			// retrying cannot fix: the batch stays claimed, never dropped.
			// It goes again as soon as the link shows life (an ack of any
			// batch: then it is a send like any other, paced and capped in
			// flight), or, while the link stays dead, when the retry budget
			// allows, asked every RetryMax and when the node finds the
			// upstream back. So a dead link sees about one attempt a
			// second, and a recovered one drains at once.
			p.stats.budgetDenied.Add(1)
			probe, ok := p.awaitLink(ctx, f)
			if !ok {
				return false
			}
			if probe && k.linkLevel() == 3 && !p.cfg.Load().class.Critical {
				// The link failed: level 3 defers this class, and with
				// nothing sent nothing would tell the node the link is
				// back (a blackhole never disconnects). The budget's
				// retry, about one a second, goes out as the probe.
				p.stats.retries.Add(1)
				p.publish(f, k.onSend(f.size(), false, true))
				continue
			}
		}
		if ok, _ := k.reserve(ctx, p.id, f.size(), p.cfg.Load().class.Critical, nil); !ok {
			return false
		}
		p.stats.retries.Add(1)
		p.publish(f, k.onSend(f.size(), false, false))
	}
}

// awaitLink waits until batch f, held back by the retry budget, may go
// again: after an ack of any batch since its attempt (the link is alive),
// or when the budget allows a retry (probe: the link may still be dead),
// asked about every RetryMax or at once when the upstream is back (the
// node found the stream after a (re)connection, so a probe should get
// through; at level 3 nothing but a probe could end the outage). ok is
// false if ctx ends first.
func (p *publisher) awaitLink(ctx context.Context, f *flight) (probe, ok bool) {
	up := f.up
	for {
		t := time.NewTimer(jitter(p.retryMax))
		select {
		case <-ctx.Done():
			t.Stop()
			return false, false
		case <-f.alive:
			t.Stop()
			return false, true
		case <-up:
			t.Stop()
			up = p.drv.upAfter()
		case <-t.C:
		}
		if p.drv.tryRetry() {
			return true, true
		}
	}
}

// retrySleep waits d before the retry of batch f, whose attempt ended in
// o. A batch that failed because the upstream was away goes as soon as the
// upstream shows it is back, since its attempt: its backoff spaced attempts
// at an absent server, and waiting it out delayed the drain of a returned
// one by up to RetryMax. A disconnected batch goes at an ack of any batch
// or when the node has found the stream after a (re)connection; one with
// no responders or JetStream unavailable (503) only at the latter, since
// acks of other classes say nothing of a subject no stream takes or of a
// full stream. A timeout is congestion's sign and waits its backoff out.
// It returns false if ctx ends first.
func (p *publisher) retrySleep(ctx context.Context, f *flight, d time.Duration, o shaper.Outcome) bool {
	var alive <-chan struct{} // nil: never
	switch o {
	case shaper.OutcomeDisconnected:
		alive = f.alive
	case shaper.OutcomeNoResponders, shaper.OutcomeUnavailable:
	default:
		return sleep(ctx, d)
	}
	return sleepOr(ctx, d, alive, f.up)
}

// split handles a batch the server refused as too large: its range is cut
// again in two halves, each claimed (the first replaces f's claim, which
// starts at the same seq), published and delivered in turn. A single event
// too large for the server can never be sent: it is counted, logged and
// acknowledged, so it does not block the class forever.
func (p *publisher) split(ctx context.Context, f *flight, cause error) bool {
	k := p.drv
	if f.Count <= 1 {
		p.stats.tooLarge.Add(uint64(f.Count))
		p.log.Error("event larger than the server's max payload: dropped",
			"class", p.class, "seq", f.First, "bytes", f.raw, "err", cause)
		if err := p.sp.Ack(p.class, f.rng()); err != nil {
			p.log.Error("ack spool", "class", p.class, "err", err)
		}
		return true
	}
	p.stats.splits.Add(1)
	from := f.First
	for _, n := range []int{f.Count / 2, 0} {
		half := new(flight)
		for {
			act, level := k.action(&p.cfg.Load().class)
			ok, err := p.bt.cutHalf(&half.batch, from, f.Last, n, act, level)
			if err == nil {
				if !ok {
					half = nil
				}
				break
			}
			bo := backoff{min: p.retryMin, max: p.retryMax}
			if !p.bt.trouble(ctx, &bo, err) {
				return false
			}
		}
		if half == nil {
			break
		}
		from = half.Last + 1
		if ok, _ := k.reserve(ctx, p.id, half.size(), p.cfg.Load().class.Critical, nil); !ok {
			return false
		}
		p.publish(half, k.onSend(half.size(), true, false))
		p.stats.batches.Add(1)
		ok := p.deliver(ctx, half)
		p.bt.putBody(half.body)
		if !ok {
			return false
		}
		if from > f.Last {
			break
		}
	}
	return true
}

// wait returns f's ack or the error that ended its attempt. The client
// times out an async publish after AckTimeout; wait does not rely on it
// alone (an attempt that never ends would hold its bytes in flight in the
// estimator for good): past twice AckTimeout, the attempt has timed out.
func (p *publisher) wait(ctx context.Context, f *flight) (*jetstream.PubAck, error) {
	if f.err != nil {
		return nil, f.err
	}
	t := time.NewTimer(2 * p.ackTimeout)
	defer t.Stop()
	select {
	case ack := <-f.fut.Ok():
		return ack, nil
	case err := <-f.fut.Err():
		return nil, err
	case <-t.C:
		return nil, jetstream.ErrAsyncPublishTimeout
	case <-ctx.Done():
		return nil, context.Canceled
	}
}

// done records f's ack: the spool may now reclaim its range.
func (p *publisher) done(f *flight) {
	if err := p.sp.Ack(p.class, f.rng()); err != nil {
		p.log.Error("ack spool", "class", p.class, "err", err)
	}
	p.stats.acked.Add(uint64(f.Count))
	p.stats.latency.observe(p.now().Sub(f.Oldest))
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
