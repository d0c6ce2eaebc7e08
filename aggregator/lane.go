package aggregator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// A lane ships one class. Its shipper goroutine reads the spool from the
// first unsent event, cuts a batch (dropping fields as the degradation
// level says, and expiring events past the class's max age), claims its
// range durably, compresses it, waits for the shaper's admission and
// publishes it. Its acker goroutine waits for the acks in order, retries
// failures with the same message id under the retry budget, splits batches
// too large for the server, and acknowledges acked ranges to the spool.
//
// Expiry by demotion: events past the max age at the head of what is
// unsent are set aside (neither claimed nor acknowledged, so they stay in
// the spool) and the shipper goes on with the newer events; the set-aside
// ranges are cut into batches of their own, labelled stale, whenever no
// newer event is ready to go. The spool takes acks in any order. A stale
// batch's range lies within one set-aside range, so no two batches'
// ranges overlap. After a restart, unclaimed ranges below a claim are such
// events (or a split's unsent half): they are shipped the same way. At
// most maxStaleRanges ranges are kept; beyond, old events are cut where
// they are, still in batches of their own and labelled.
type lane struct {
	n    *Node
	id   int // index in the node's classes and the shaper's lanes
	name string
	subj string
	cfg  atomic.Pointer[laneConfig] // replaced whole by Reconfigure

	failing atomic.Bool // a batch has failed twice and none was acked since: logged once per episode

	wake         chan struct{} // a token per Ingest, capacity 1
	pendingBytes atomic.Int64  // raw bytes ingested but not yet cut into a batch
	waiting      atomic.Int64  // ingest time (unix ns) of the oldest event of a batch waiting to be sent; 0 if none
	window       chan struct{} // one token per batch in flight
	inflight     chan *batch   // shipper → acker, in publish order
	done         chan struct{} // closed when both goroutines have exited

	enc  *zstd.Encoder
	raw  []byte    // the shipper's NDJSON scratch buffer
	bufs sync.Pool // compressed bodies, returned after their ack

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

type batch struct {
	r       spool.Range
	count   int
	raw     int       // uncompressed bytes
	oldest  time.Time // ingest time of the oldest event
	level   int
	dropped []string      // field paths removed from its events
	stale   time.Duration // the max age its oldest event had passed when cut (expiry by demotion); 0 if none
	msg     *nats.Msg
	body    *[]byte

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
	// attempt (link.aliveAfter, link.upAfter): a failed attempt waits on
	// these, so that a signal between its send and its failure is not lost.
	alive, up <-chan struct{}
}

// size is what the batch costs on the link.
func (b *batch) size() int { return len(b.msg.Data) }

func newLane(n *Node, id int, window chan struct{}) (*lane, error) {
	c := &n.opts.Classes[id]
	cfg, err := newLaneConfig(*c)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstdLevel(c.Compression)),
		zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	l := &lane{
		n:        n,
		id:       id,
		name:     c.Name,
		subj:     n.opts.Subject + "." + c.Name,
		wake:     make(chan struct{}, 1),
		window:   window,
		inflight: make(chan *batch, n.opts.MaxInFlight),
		done:     make(chan struct{}),
		enc:      enc,
	}
	if l.window == nil {
		l.window = make(chan struct{}, n.opts.MaxInFlight)
	}
	l.cfg.Store(cfg)
	return l, nil
}

func (l *lane) start() {
	var wg sync.WaitGroup
	wg.Add(2)
	l.n.goFunc(func() { defer wg.Done(); l.ship() })
	l.n.goFunc(func() { defer wg.Done(); l.ack() })
	l.n.goFunc(func() { wg.Wait(); l.enc.Close(); close(l.done) })
}

func (l *lane) notify() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// action is what the class does at the current level; unshaped, nothing.
func (l *lane) action() (priority.Action, int) {
	return l.n.drv.action(&l.cfg.Load().class)
}

// ship is the shipper goroutine.
func (l *lane) ship() {
	defer close(l.inflight)
	sp := l.n.spool
	ctx := l.n.ctx
	trouble := backoff{min: l.n.opts.RetryMin, max: l.n.opts.RetryMax}

	// stale holds the ranges set aside by expiry (demotion), and after a
	// restart the unclaimed ranges below a claim: still to be sent, after
	// the newer events. Ascending, disjoint.
	var stale []spool.Range
	aside := func(r spool.Range) {
		if n := len(stale); n > 0 && stale[n-1].Last+1 >= r.First {
			stale[n-1].Last = max(stale[n-1].Last, r.Last)
			return
		}
		stale = append(stale, r)
	}

	// Republish, range for range, what was claimed before a restart.
	next := sp.Acked(l.name) + 1
	for _, c := range sp.Claims(l.name) {
		if c.Last < next {
			continue
		}
		if c.First > next {
			// Never claimed, or half of a batch split when the node
			// stopped: not sent yet, older than what follows.
			aside(spool.Range{First: next, Last: c.First - 1})
		}
		for {
			act, level := l.action()
			b, _, _, err := l.cut(cutSpec{from: c.First, last: c.Last, maxEvents: int(c.Len()), exact: true}, act, level)
			if err == nil {
				if b != nil && !l.send(b) {
					return
				}
				break
			}
			if !l.spoolTrouble(&trouble, err) {
				return
			}
		}
		next = c.Last + 1
	}

	var lingerUntil time.Time
	var timer *time.Timer
	deferred := false
	for {
		last := sp.Last(l.name)
		unsent := uint64(0)
		if last >= next {
			unsent = last + 1 - next
		}
		draining := isClosed(l.n.drain)
		act, level := l.action()
		cfg := l.cfg.Load()
		hasStale := len(stale) > 0
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
		case !draining && cfg.linger > 0 && unsent < uint64(cfg.maxEvents) && l.pendingBytes.Load() < int64(l.batchBytes()):
			// Linger only while less than one batch is waiting: the batch
			// is cut to batchBytes (a few ms of air time), often far below
			// MaxBytes, and a backlog between the two drained at one batch
			// per linger (seen: replication's last 700 events took 4 s).
			now := time.Now()
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
			drain := l.n.drain
			if draining {
				drain = nil
			}
			select {
			case <-ctx.Done():
				return
			case <-drain: // draining sends partial batches at once
			case <-l.n.drv.levelChanged():
			case <-l.wake:
			case <-tc:
			}
			continue
		}
		var (
			b        *batch
			set      spool.Range // events set aside by this cut
			readNext uint64      // where the cut's read ended
			err      error
		)
		if old {
			r := stale[0]
			b, _, readNext, err = l.cut(cutSpec{from: r.First, last: r.Last, maxEvents: cfg.maxEvents, maxBytes: l.batchBytes()}, act, level)
		} else {
			lingerUntil = time.Time{}
			b, set, readNext, err = l.cut(cutSpec{from: next, maxEvents: cfg.maxEvents, maxBytes: l.batchBytes(), aside: len(stale) < maxStaleRanges}, act, level)
		}
		if err == nil && b != nil {
			if err = sp.Claim(l.name, b.r); err != nil {
				l.putBody(b.body)
				err = fmt.Errorf("claim %d-%d: %w", b.r.First, b.r.Last, err)
			}
		}
		if err != nil {
			// The spool failed (a full or failing disk): nothing was sent,
			// so try the same range again later.
			if !l.spoolTrouble(&trouble, err) {
				return
			}
			continue
		}
		trouble = backoff{min: l.n.opts.RetryMin, max: l.n.opts.RetryMax}
		if old {
			// Past what was read: sent, or dropped if expiry now drops.
			if stale[0].First = max(stale[0].First, readNext); stale[0].First > stale[0].Last {
				stale = stale[1:]
			}
		} else {
			if set.First != 0 {
				aside(set)
			}
			// Past what was read: sent, set aside, dropped or expired.
			next = max(next, readNext)
		}
		if b != nil && !l.send(b) {
			return
		}
	}
}

// cutSpec says what a cut reads.
type cutSpec struct {
	from, last          uint64 // from seq from on, not past last (0: no limit)
	maxEvents, maxBytes int    // bounds of the batch (0: none); maxBytes bounds its NDJSON
	// exact: the batch keeps the range [from, last] whatever was read, so
	// that a republished claim keeps its message id.
	exact bool
	// aside: with expiry by demotion, events past the max age at the
	// head of the cut are set aside, not cut into the batch.
	aside bool
	// mixed: old and newer events may share the batch (a split half must
	// cover its range whatever it holds). Implied by exact.
	mixed bool
}

// maxStaleRanges bounds the set-aside ranges a lane remembers (16 bytes
// each). Ranges multiply only while a class's backlog stays about its max
// age behind; beyond the bound, old events are cut where they are.
const maxStaleRanges = 4096

// cut reads the events s describes into a compressed batch, applying the
// level's action (under ActionDropFields, low-priority fields are
// removed) and the class's expiry: an event past the max age is left out
// and counted (ExpireDrop), or, with ExpireDemote, set aside (s.aside, at
// the head of the cut) or kept, the batch then labelled stale. Unless
// mixed or exact, a demoting class's batch holds only old or only newer
// events. It
// returns the batch, nil when no event is left to send (a range whose
// events have all expired is acknowledged here); the range of events set
// aside; and the seq to read from next.
func (l *lane) cut(s cutSpec, act priority.Action, level int) (b *batch, set spool.Range, next uint64, err error) {
	sp := l.n.spool
	raw := l.raw[:0]
	b = &batch{level: level}
	cfg := l.cfg.Load()
	var drop *priority.Paths
	if act.Kind == priority.ActionDropFields {
		drop = cfg.fields.Below(act.MinFieldPriority)
	}
	var oldBefore int64 // events appended before this are past the max age
	maxAge := cfg.class.MaxAge
	if maxAge > 0 && !l.n.opts.Link.Unshaped {
		oldBefore = time.Now().Add(-maxAge).UnixNano()
	}
	demote := oldBefore != 0 && cfg.class.Expire != priority.ExpireDrop
	var read spool.Range
	var expired uint64
	next, err = sp.Read(l.name, s.from, s.maxEvents, s.maxBytes, func(e spool.Entry) error {
		if s.last != 0 && e.Seq > s.last {
			return errStopRead
		}
		old := e.Time < oldBefore
		if demote && !s.exact && !s.mixed {
			if old && s.aside && read.First == 0 {
				if set.First == 0 {
					set.First = e.Seq
				}
				set.Last = e.Seq
				return nil
			}
			if b.count > 0 && old != (b.oldest.UnixNano() < oldBefore) {
				return errStopRead // old and newer events go in batches of their own
			}
		}
		if b.count > 0 && s.maxBytes > 0 && len(raw)+len(e.Data)+1 > s.maxBytes {
			// The spool bounds the events' bytes; the batch is NDJSON,
			// one newline more per event.
			return errStopRead
		}
		if read.First == 0 {
			read.First = e.Seq
		}
		read.Last = e.Seq
		if old && !demote {
			expired++
			return nil
		}
		if b.count == 0 {
			b.oldest = time.Unix(0, e.Time)
		}
		b.count++
		if drop != nil {
			var err error
			if raw, b.dropped, err = drop.Drop(raw, e.Data, b.dropped); err != nil {
				// Spooled events are valid JSON; if one is not, it travels as is.
				l.n.opts.Logger.Warn("drop fields", "class", l.name, "seq", e.Seq, "err", err)
			}
		} else {
			raw = append(raw, e.Data...)
		}
		raw = append(raw, '\n')
		return nil
	})
	l.raw = raw
	if err != nil && !errors.Is(err, errStopRead) {
		return nil, spool.Range{}, s.from, fmt.Errorf("read from %d: %w", s.from, err)
	}
	err = nil
	if s.exact {
		read = spool.Range{First: s.from, Last: s.last}
	}
	if expired > 0 {
		l.stats.expired.Add(expired)
	}
	if read.First == 0 {
		return nil, set, next, nil
	}
	if l.pendingBytes.Add(-int64(len(raw))) < 0 {
		// Events spooled before a restart were never counted in.
		l.pendingBytes.Store(0)
	}
	b.r = read
	if b.count == 0 {
		// Nothing left to send in this range: it is done.
		return nil, set, next, sp.Ack(l.name, read)
	}
	if demote && b.oldest.UnixNano() < oldBefore {
		b.stale = maxAge
	}
	b.raw = len(raw)
	body := l.getBody()
	*body = l.enc.EncodeAll(raw, (*body)[:0])
	b.body = body
	hdr := wire.Batch{
		Node:    l.n.opts.Node,
		Spool:   l.n.spool.ID(),
		Class:   l.name,
		First:   b.r.First,
		Last:    b.r.Last,
		Count:   b.count,
		Oldest:  b.oldest,
		Level:   level,
		Dropped: b.dropped,
	}
	b.msg = &nats.Msg{Subject: l.subj, Header: hdr.Header(), Data: *body}
	if b.stale > 0 {
		b.msg.Header[hdrStale] = []string{strconv.FormatFloat(b.stale.Seconds(), 'f', -1, 64)}
	}
	return b, set, next, nil
}

// hdrStale labels a batch of events that were past their class's max age
// when it was cut, shipped after the class's newer events (expiry by
// demotion). Its value is the max age in seconds. See docs/wire.md.
const hdrStale = "Sluice-Stale"

var errStopRead = errors.New("stop read")

// Batch air time: a batch takes at most this long on the wire at the
// link's target rate (but is never cut below minBatchBytes raw). A batch
// is the shaper's packet: once on the wire nothing overtakes it, so a
// critical batch queued behind a bulk batch waits for all of it. HTB
// relies on 1500-byte packets for the same reason.
const (
	batchAirtime  = shaper.DefaultBatchAirtime // 25 ms
	minBatchBytes = shaper.MinBatchRawBytes    // 16 KiB
)

// batchBytes is the raw size bound of the next batch: the class's MaxBytes,
// or less on a slow link, so that the batch compressed (at the class's
// observed ratio) fits in batchAirtime at the link's target. The rule is
// shaper's model, which `sluice plan` evaluates too.
func (l *lane) batchBytes() int {
	target := l.n.drv.target()
	maxBytes := l.cfg.Load().maxBytes
	if target <= 0 {
		return maxBytes
	}
	ratio := 1.0
	if raw, wire := l.stats.rawBytes.Load(), l.stats.wireBytes.Load(); raw > 0 && wire > 0 {
		ratio = float64(wire) / float64(raw)
	}
	return shaper.BatchRawBytes(target, batchAirtime, ratio, minBatchBytes, maxBytes)
}

// spoolTrouble logs a spool failure and waits before the shipper tries
// again. It returns false if the node stops meanwhile.
func (l *lane) spoolTrouble(b *backoff, err error) bool {
	l.stats.spoolErrors.Add(1)
	if b.attempt == 0 {
		l.n.opts.Logger.Error("spool read failed, retrying", "class", l.name, "err", err)
	}
	return sleep(l.n.ctx, b.next())
}

func (l *lane) getBody() *[]byte {
	if p, ok := l.bufs.Get().(*[]byte); ok {
		return p
	}
	p := make([]byte, 0, 64<<10)
	return &p
}

func (l *lane) putBody(p *[]byte) {
	if p != nil {
		l.bufs.Put(p)
	}
}

// send waits for a window slot and the shaper's admission, publishes b
// and hands it to the acker. It returns false if the node stops, or if the
// class is deferred while the node drains (b stays claimed in the spool).
func (l *lane) send(b *batch) bool {
	ready := b.oldest
	if b.stale > 0 {
		// Held back on purpose: its wait starts now.
		ready = time.Now()
	}
	l.waiting.Store(ready.UnixNano())
	defer l.waiting.Store(0)
	select {
	case l.window <- struct{}{}:
	case <-l.n.ctx.Done():
		return false
	}
	ok, held := l.n.drv.reserve(l.n.ctx, l.id, b.size(), l.cfg.Load().class.Critical, l.n.drain)
	if !ok {
		<-l.window
		return false
	}
	// Limited by the sender, not the link: nothing else to send right
	// now, or admitted without waiting.
	limited := !held || l.n.spool.Last(l.name) <= b.r.Last
	l.publish(b, l.n.drv.onSend(b.size(), true, limited))
	l.stats.batches.Add(1)
	l.stats.published.Add(uint64(b.count))
	if b.stale > 0 {
		l.stats.demoted.Add(uint64(b.count))
	}
	l.stats.rawBytes.Add(uint64(b.raw))
	l.stats.wireBytes.Add(uint64(b.size()))
	if b.level > 0 && (len(b.dropped) > 0) {
		l.stats.degraded.Add(1)
	}
	l.stats.inflight.Add(1)
	l.inflight <- b // never blocks: the window is no larger than the channel
	return true
}

// publish makes one attempt at b, as shaper attempt id.
func (l *lane) publish(b *batch, id uint64) {
	now := time.Now()
	if b.attempts == 0 {
		b.firstSent = now
	}
	b.attempts++
	b.attempt = id
	b.reconnects = l.n.opts.Conn.Stats().Reconnects
	b.connected = l.n.opts.Conn.IsConnected()
	b.alive, b.up = l.n.drv.aliveAfter(), l.n.drv.upAfter()
	b.fut, b.err = l.n.js.PublishMsgAsync(b.msg)
}

// ack is the acker goroutine. Each batch in flight is delivered on its
// own goroutine (at most MaxInFlight), so that one batch waiting for the
// link or the retry budget never holds back the acks of the batches behind
// it: those acks are what tells a waiting batch the link is back, and what
// frees room in flight. The spool takes acks in any order.
func (l *lane) ack() {
	var wg sync.WaitGroup
	for b := range l.inflight {
		wg.Go(func() {
			ok := l.deliver(b)
			l.putBody(b.body)
			<-l.window
			if l.stats.inflight.Add(-1) == 0 && ok {
				// Maybe idle: give a fully acknowledged tail segment back to the disk.
				if err := l.n.spool.Trim(l.name); err != nil {
					l.n.opts.Logger.Error("trim spool", "class", l.name, "err", err)
				}
			}
		})
	}
	wg.Wait()
}

// deliver waits for b's ack, retrying and splitting as the shaper decides,
// and acknowledges its range to the spool. It returns false if the node
// stops first.
func (l *lane) deliver(b *batch) bool {
	k := l.n.drv
	for {
		ack, err := l.wait(b)
		if err == nil {
			k.onAck(b.attempt)
			if l.failing.CompareAndSwap(true, false) {
				l.n.opts.Logger.Info("upstream publishing again", "class", l.name)
			}
			if ack.Duplicate {
				l.stats.duplicates.Add(1)
			}
			l.done1(b)
			return true
		}
		if errors.Is(err, context.Canceled) {
			return false
		}
		l.stats.errors.Add(1)
		o := outcome(err)
		if o == shaper.OutcomeTimeout && l.n.opts.Conn.Stats().Reconnects != b.reconnects {
			// The connection was reset under the attempt: its ack was
			// lost with it. Counted as congestion, a 200 ms reset cut C
			// by 30% a round, held the level at 2-3 and stalled the bulk
			// classes for up to 37 s (TestFaultLinkResetMidPublish).
			o = shaper.OutcomeDisconnected
		}
		if o == shaper.OutcomeOther && errors.Is(err, nats.ErrHeadersNotSupported) && !b.connected {
			// Before its first connection the client does not know
			// whether the server takes headers and refuses them.
			o = shaper.OutcomeDisconnected
		}
		d := k.onFailure(b.attempt, shaper.Attempt{FirstSent: b.firstSent, N: b.attempts, Outcome: o, Critical: l.cfg.Load().class.Critical})
		if b.attempts >= 2 && l.failing.CompareAndSwap(false, true) {
			l.n.opts.Logger.Warn("upstream publish failing, retrying", "class", l.name, "outcome", o.String(), "err", err)
		}
		switch d.Disposition {
		case shaper.Split:
			return l.split(b, err)
		case shaper.Retry:
			if !l.retrySleep(b, time.Until(d.At), o) {
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
			l.stats.budgetDenied.Add(1)
			probe, ok := l.awaitLink(b)
			if !ok {
				return false
			}
			if probe && k.linkLevel() == 3 && !l.cfg.Load().class.Critical {
				// The link failed: level 3 defers this class, and with
				// nothing sent nothing would tell the node the link is
				// back (a blackhole never disconnects). The budget's
				// retry, about one a second, goes out as the probe.
				l.stats.retries.Add(1)
				l.publish(b, k.onSend(b.size(), false, true))
				continue
			}
		}
		if ok, _ := k.reserve(l.n.ctx, l.id, b.size(), l.cfg.Load().class.Critical, nil); !ok {
			return false
		}
		l.stats.retries.Add(1)
		l.publish(b, k.onSend(b.size(), false, false))
	}
}

// awaitLink waits until batch b, held back by the retry budget, may go
// again: after an ack of any batch since its attempt (the link is alive),
// or when the budget allows a retry (probe: the link may still be dead),
// asked about every RetryMax or at once when the upstream is back (the
// node found the stream after a (re)connection, so a probe should get
// through; at level 3 nothing but a probe could end the outage). ok is
// false if the node stops first.
func (l *lane) awaitLink(b *batch) (probe, ok bool) {
	k := l.n.drv
	up := b.up
	for {
		t := time.NewTimer(jitter(l.n.opts.RetryMax))
		select {
		case <-l.n.ctx.Done():
			t.Stop()
			return false, false
		case <-b.alive:
			t.Stop()
			return false, true
		case <-up:
			t.Stop()
			up = k.upAfter()
		case <-t.C:
		}
		if k.tryRetry() {
			return true, true
		}
	}
}

// retrySleep waits d before the retry of batch b, whose attempt ended in
// o. A batch that failed because the upstream was away goes as soon as the
// upstream shows it is back, since its attempt: its backoff spaced attempts
// at an absent server, and waiting it out delayed the drain of a returned
// one by up to RetryMax. A disconnected batch goes at an ack of any batch
// or when the node has found the stream after a (re)connection; one with
// no responders or JetStream unavailable (503) only at the latter, since
// acks of other classes say nothing of a subject no stream takes or of a
// full stream. A timeout is congestion's sign and waits its backoff out.
// It returns false if the node stops first.
func (l *lane) retrySleep(b *batch, d time.Duration, o shaper.Outcome) bool {
	var alive <-chan struct{} // nil: never
	switch o {
	case shaper.OutcomeDisconnected:
		alive = b.alive
	case shaper.OutcomeNoResponders, shaper.OutcomeUnavailable:
	default:
		return sleep(l.n.ctx, d)
	}
	if d <= 0 {
		return l.n.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.n.ctx.Done():
		return false
	case <-t.C:
	case <-alive:
	case <-b.up:
	}
	return true
}

// split handles a batch the server refused as too large: its range is cut
// again in two halves, each claimed (the first replaces b's claim, which
// starts at the same seq), published and delivered in turn. A single event
// too large for the server can never be sent: it is counted, logged and
// acknowledged, so it does not block the class forever.
func (l *lane) split(b *batch, cause error) bool {
	k := l.n.drv
	if b.count <= 1 {
		l.stats.tooLarge.Add(uint64(b.count))
		l.n.opts.Logger.Error("event larger than the server's max payload: dropped",
			"class", l.name, "seq", b.r.First, "bytes", b.raw, "err", cause)
		if err := l.n.spool.Ack(l.name, b.r); err != nil {
			l.n.opts.Logger.Error("ack spool", "class", l.name, "err", err)
		}
		return true
	}
	l.stats.splits.Add(1)
	from := b.r.First
	for _, n := range []int{b.count / 2, 0} {
		var half *batch
		for {
			act, level := l.action()
			var err error
			half, _, _, err = l.cut(cutSpec{from: from, last: b.r.Last, maxEvents: n, mixed: true}, act, level)
			if err == nil && half != nil {
				err = l.n.spool.Claim(l.name, half.r)
			}
			if err == nil {
				break
			}
			bo := backoff{min: l.n.opts.RetryMin, max: l.n.opts.RetryMax}
			if !l.spoolTrouble(&bo, err) {
				return false
			}
		}
		if half == nil {
			break
		}
		from = half.r.Last + 1
		if ok, _ := k.reserve(l.n.ctx, l.id, half.size(), l.cfg.Load().class.Critical, nil); !ok {
			return false
		}
		l.publish(half, k.onSend(half.size(), true, false))
		l.stats.batches.Add(1)
		ok := l.deliver(half)
		l.putBody(half.body)
		if !ok {
			return false
		}
		if from > b.r.Last {
			break
		}
	}
	return true
}

// wait returns b's ack or the error that ended its attempt. The client
// times out an async publish after AckTimeout; wait does not rely on it
// alone (an attempt that never ends would hold its bytes in flight in the
// estimator for good): past twice AckTimeout, the attempt has timed out.
func (l *lane) wait(b *batch) (*jetstream.PubAck, error) {
	if b.err != nil {
		return nil, b.err
	}
	t := time.NewTimer(2 * l.n.opts.AckTimeout)
	defer t.Stop()
	select {
	case ack := <-b.fut.Ok():
		return ack, nil
	case err := <-b.fut.Err():
		return nil, err
	case <-t.C:
		return nil, jetstream.ErrAsyncPublishTimeout
	case <-l.n.ctx.Done():
		return nil, context.Canceled
	}
}

// done1 records b's ack: the spool may now reclaim its range.
func (l *lane) done1(b *batch) {
	if err := l.n.spool.Ack(l.name, b.r); err != nil {
		l.n.opts.Logger.Error("ack spool", "class", l.name, "err", err)
	}
	l.stats.acked.Add(uint64(b.count))
	l.stats.latency.observe(time.Since(b.oldest))
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
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
