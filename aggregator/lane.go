package aggregator

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

// A lane ships one class: its shipper goroutine (ship) waits until a batch
// is due, has the batcher cut it, and hands it to the pipeline, whose
// claimer claims it, whose compression workers compress it and whose
// sequencer hands it, in cut order, to the publisher (send), which waits
// for the shaper's admission and publishes; the publisher's acker
// goroutine (publisher.run) waits for the acks.
type lane struct {
	id   int // index in the node's classes and the shaper's lanes
	name string
	cfg  atomic.Pointer[laneConfig] // replaced whole by Reconfigure

	drv  shaping
	bt   *batcher
	pub  *publisher
	pl   *pipeline
	pol  *compressPolicy
	encs []*encoders // one per compression worker, closed by it

	wake  chan struct{} // a token per Ingest, capacity 1
	drain <-chan struct{}
	done  chan struct{} // closed when both goroutines have exited

	retryMin, retryMax time.Duration

	stats laneStats
}

// laneConfig is what a lane reads of its class. A reload replaces it whole;
// a batch being cut keeps the one it started with.
type laneConfig struct {
	class               priority.Class
	fields              *priority.FieldSet
	maxEvents, maxBytes int
	linger              time.Duration
	// urgent: the class is still sent at level 1 (critical, ingest), so its
	// offered load and queueing are degradation signals. A bulk class
	// (deferred or throttled from level 1) exceeding the link is what the
	// spool is for; it must not degrade the others.
	urgent bool
}

func newLaneConfig(c priority.Class) (*laneConfig, error) {
	fields, err := priority.NewFieldSet(c.Fields)
	if err != nil {
		return nil, err
	}
	lc := &laneConfig{class: c, fields: fields}
	lc.maxEvents, lc.maxBytes, lc.linger = c.Batch.Limits()
	k := c.ActionAt(1).Kind
	lc.urgent = k != priority.ActionDefer && k != priority.ActionThrottle
	return lc, nil
}

// newLane wires the stages of class o.Classes[id] (o with its defaults
// set): a batcher on sp, a publisher to js through conn, both under the
// shaper drv. window is the FIFO window all classes share when the link
// is unshaped (nil: the lane gets its own); drain is closed when the node
// drains. Unless the class's dictionary mode is off, its dictionaries go
// to bucket, trained one class at a time (trainSem).
func newLane(o *Options, id int, sp *spool.Spool, js jetstream.Publisher, drv *driver, drain <-chan struct{},
	bucket *dictBucket, trainSem chan struct{}) (*lane, error) {
	c := &o.Classes[id]
	cfg, err := newLaneConfig(*c)
	if err != nil {
		return nil, err
	}
	l := &lane{
		id: id, name: c.Name, drv: drv,
		wake: make(chan struct{}, 1), drain: drain, done: make(chan struct{}),
		retryMin: o.RetryMin, retryMax: o.RetryMax,
	}
	l.cfg.Store(cfg)
	// One compression worker per core: the class's shipping is then
	// bounded by the cores, not by one encoder.
	workers := runtime.GOMAXPROCS(0)
	l.pol = newCompressPolicy(c, workers, drv.linkEstimate, func() int { return l.cfg.Load().maxBytes },
		func() float64 { return l.bt.wireFrac() }, drv.now, o.Logger)
	if l.bt, err = newBatcher(sp, c.Name, o.Node, l.pol, &l.cfg, &l.stats,
		!o.Link.Unshaped, drv.now, o.Logger); err != nil {
		return nil, err
	}
	if mode := o.Dictionary.mode(c.Name); mode != DictOff {
		l.bt.dict = &dicts{
			class: c.Name, mode: mode, o: o.Dictionary, level: l.pol.zstdLevel,
			smp: newSampler(o.Dictionary.SampleBytes), bucket: bucket, trainSem: trainSem,
			stats: &l.stats, log: o.Logger, timeout: o.AckTimeout, force: make(chan struct{}, 1),
		}
	}
	window := drv.window
	if window == nil {
		window = make(chan struct{}, o.MaxInFlight)
	}
	l.pub = &publisher{
		id: id, class: c.Name, subj: o.Subject + "." + c.Name, cfg: &l.cfg,
		js: js, conn: o.Conn, sp: sp, drv: drv, bt: l.bt,
		stats: &l.stats, log: o.Logger, now: drv.now, drain: drain,
		retryMin: o.RetryMin, retryMax: o.RetryMax, ackTimeout: o.AckTimeout,
		window: window, inflight: make(chan *flight, o.MaxInFlight),
	}
	l.pl = newPipeline(l.bt, l.pub.send, workers, o.RetryMin, o.RetryMax)
	for range l.pl.workers {
		enc, err := l.bt.newEncoders()
		if err != nil {
			for _, e := range l.encs {
				e.close()
			}
			l.bt.close()
			return nil, err
		}
		l.encs = append(l.encs, enc)
	}
	return l, nil
}

// start runs the lane's goroutines through goFunc until ctx ends or the
// lane has drained.
func (l *lane) start(ctx context.Context, goFunc func(func())) {
	var wg sync.WaitGroup
	wg.Add(4 + len(l.encs))
	goFunc(func() { defer wg.Done(); l.ship(ctx) })
	goFunc(func() { defer wg.Done(); l.pl.claimer(ctx) })
	for _, enc := range l.encs {
		goFunc(func() { defer wg.Done(); l.pl.compressor(enc) })
	}
	goFunc(func() {
		defer wg.Done()
		l.pl.sequence(ctx)
		close(l.pub.inflight)
	})
	goFunc(func() { defer wg.Done(); l.pub.run(ctx) })
	goFunc(func() { wg.Wait(); l.bt.close(); close(l.done) })
	if d := l.bt.dict; d != nil {
		// Not part of the lane's drain: it ends with the node's context.
		goFunc(func() { d.run(ctx) })
	}
}

func (l *lane) notify() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// action is what the class does at the current level; unshaped, nothing.
func (l *lane) action() (priority.Action, int) {
	return l.drv.action(&l.cfg.Load().class)
}

// ship is the shipper goroutine: it republishes what was claimed before a
// restart, then cuts a batch whenever one is due (a full batch waiting,
// the linger over, the node draining, set-aside events with nothing newer
// to go) and the level does not defer the class. Each batch is cut under
// a slot of the pipeline, taken before the level's decision for it; the
// shipper stops when the pipeline's sequencer does (a send refused).
func (l *lane) ship(ctx context.Context) {
	defer l.pl.done()
	bt, pl := l.bt, l.pl
	trouble := backoff{min: l.retryMin, max: l.retryMax}

	// Republish, range for range, what was claimed before a restart.
	for _, c := range bt.resume() {
		if !pl.acquire(ctx) {
			return
		}
		for {
			act, level := l.action()
			f := new(flight)
			ok, err := bt.cutExact(&f.batch, c, act, level)
			if err == nil {
				if ok {
					pl.submit(f, true)
				} else {
					pl.release()
				}
				break
			}
			if !bt.trouble(ctx, &trouble, err) {
				return
			}
		}
	}

	var lingerUntil time.Time
	var timer *time.Timer
	deferred := false
	held := false // a pipeline slot for the next batch
	for {
		if pl.stopped() {
			return
		}
		unsent := bt.unsent()
		draining := isClosed(l.drain)
		act, level := l.action()
		cfg := l.cfg.Load()
		hasStale := bt.hasStale()
		wait := time.Duration(-1) // block until woken
		old := false              // the batch to cut is one of set-aside events
		switch {
		case unsent == 0 && !hasStale:
			if draining {
				return
			}
			lingerUntil = time.Time{}
		case act.Kind == priority.ActionDefer:
			if draining {
				return // what is left stays in the spool for the next start
			}
			if !deferred {
				deferred = true
				l.stats.deferrals.Add(1)
			}
		case unsent == 0:
			// Nothing newer to send: the set-aside events go.
			lingerUntil = time.Time{}
			wait, old = 0, true
		case !draining && cfg.linger > 0 && unsent < uint64(cfg.maxEvents) && bt.pending.Load() < int64(bt.batchBytes()):
			// Linger only while less than one batch is waiting: the batch
			// is cut to batchBytes (a few ms of air time), often far below
			// MaxBytes, and a backlog between the two drained at one batch
			// per linger (seen: replication's last 700 events took 4 s).
			now := bt.now()
			if lingerUntil.IsZero() {
				lingerUntil = now.Add(cfg.linger)
			}
			wait = max(lingerUntil.Sub(now), 0)
			if wait > 0 && hasStale {
				// While the newer events linger, set-aside ones go.
				wait, old = 0, true
			}
		default:
			wait = 0
		}
		if act.Kind != priority.ActionDefer {
			deferred = false
		}
		if wait != 0 {
			var tc <-chan time.Time
			if wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				tc = timer.C
			}
			drain := l.drain
			if draining {
				drain = nil
			}
			select {
			case <-ctx.Done():
				return
			case <-pl.stop:
				return
			case <-drain: // draining sends partial batches at once
			case <-l.drv.levelChanged():
			case <-l.wake:
			case <-tc:
			}
			continue
		}
		if !held {
			if !pl.tryAcquire() {
				// The pipeline is full: wait for room, then decide again
				// (the level, what is due) for the batch to cut.
				if !pl.acquire(ctx) {
					return
				}
				held = true
				continue
			}
			held = true
		}
		if !old {
			lingerUntil = time.Time{}
		}
		f := new(flight)
		ok, err := bt.next(&f.batch, old, act, level)
		if err != nil {
			// The spool failed (a full or failing disk): nothing was sent,
			// so try the same range again later.
			if !bt.trouble(ctx, &trouble, err) {
				return
			}
			continue
		}
		trouble = backoff{min: l.retryMin, max: l.retryMax}
		if ok {
			pl.submit(f, false)
			held = false
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sleep waits for d or until ctx ends, and reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	return sleepOr(ctx, d, nil, nil)
}

// sleepOr is sleep that also ends early when a or b is closed (a nil
// channel never is). It reports whether ctx is still live.
func sleepOr(ctx context.Context, d time.Duration, a, b <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-a:
	case <-b:
	}
	return true
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// backoff is capped exponential backoff with full jitter, for spool
// trouble and stream creation (publish retries use the shaper's).
type backoff struct {
	min, max time.Duration
	attempt  int
}

func (b *backoff) next() time.Duration {
	d := b.min << min(b.attempt, 30)
	if d > b.max || d <= 0 {
		d = b.max
	}
	b.attempt++
	return time.Duration(rand.Int64N(int64(d)) + 1)
}
