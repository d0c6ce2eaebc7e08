package aggregator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// A lane ships one class: its shipper goroutine reads the spool from the
// first unsent event, cuts a batch, claims its range durably, compresses it
// and publishes it; its acker goroutine waits for the acks in order,
// retries what failed with the same message id, and acknowledges acked
// ranges to the spool.
type lane struct {
	n     *Node
	class string
	opts  ClassOptions
	subj  string

	wake         chan struct{} // a token per Ingest, capacity 1
	pendingBytes atomic.Int64  // raw bytes ingested but not yet cut into a batch
	window       chan struct{} // one token per batch in flight
	inflight     chan *batch   // shipper → acker, in publish order
	done         chan struct{} // closed when both goroutines have exited

	enc  *zstd.Encoder
	raw  []byte    // the shipper's NDJSON scratch buffer
	bufs sync.Pool // compressed bodies, returned after their ack

	stats laneStats
}

type batch struct {
	r      spool.Range
	count  int
	raw    int       // uncompressed bytes
	oldest time.Time // ingest time of the oldest event
	msg    *nats.Msg
	body   *[]byte
	fut    jetstream.PubAckFuture
	err    error // publish error before any future existed
	sent   time.Time
}

func newLane(n *Node, class string, opts ClassOptions) *lane {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(opts.Level),
		zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err) // only for invalid options, which setDefaults rules out
	}
	return &lane{
		n:        n,
		class:    class,
		opts:     opts,
		subj:     n.opts.Subject + "." + class,
		wake:     make(chan struct{}, 1),
		window:   make(chan struct{}, n.opts.MaxInFlight),
		inflight: make(chan *batch, n.opts.MaxInFlight),
		done:     make(chan struct{}),
		enc:      enc,
	}
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

// ship is the shipper goroutine.
func (l *lane) ship() {
	defer close(l.inflight)
	sp := l.n.spool
	ctx := l.n.ctx

	trouble := backoff{min: l.n.opts.RetryMin, max: l.n.opts.RetryMax}
	// Republish, range for range, what was claimed before a restart.
	next := sp.Acked(l.class) + 1
	for _, c := range sp.Claims(l.class) {
		if c.Last < next {
			continue
		}
		b, err := l.cut(c.First, c.Last, int(c.Len()), 1<<62)
		for err != nil {
			if !l.spoolTrouble(&trouble, err) {
				return
			}
			b, err = l.cut(c.First, c.Last, int(c.Len()), 1<<62)
		}
		if b != nil && !l.publish(b) {
			return
		}
		next = c.Last + 1
	}

	var lingerUntil time.Time
	var timer *time.Timer
	for {
		unsent := sp.Last(l.class) + 1 - next
		if sp.Last(l.class) < next {
			unsent = 0
		}
		draining := isClosed(l.n.drain)
		wait := time.Duration(-1) // block until woken
		switch {
		case unsent == 0:
			if draining {
				return
			}
			lingerUntil = time.Time{}
		case !draining && l.opts.Linger > 0 && unsent < uint64(l.opts.MaxEvents) && l.pendingBytes.Load() < int64(l.opts.MaxBytes):
			now := time.Now()
			if lingerUntil.IsZero() {
				lingerUntil = now.Add(l.opts.Linger)
			}
			if wait = lingerUntil.Sub(now); wait <= 0 {
				wait = 0
			}
		default:
			wait = 0
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
			select {
			case <-ctx.Done():
				return
			case <-l.n.drain: // draining sends partial batches at once
			case <-l.wake:
			case <-tc:
			}
			continue
		}
		lingerUntil = time.Time{}

		b, err := l.cut(next, 0, l.opts.MaxEvents, l.opts.MaxBytes)
		if err == nil && b != nil {
			if err = sp.Claim(l.class, b.r); err != nil {
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
		if b == nil {
			// Everything from next on was dropped or expired: move on.
			next = max(next, sp.Acked(l.class)+1)
			continue
		}
		next = b.r.Last + 1
		if !l.publish(b) {
			return
		}
	}
}

// cut reads up to maxEvents events and maxBytes raw bytes from seq from on
// (and not past last, if last is not 0) into a compressed batch. It returns
// a nil batch if there were no events.
func (l *lane) cut(from, last uint64, maxEvents, maxBytes int) (*batch, error) {
	sp := l.n.spool
	raw := l.raw[:0]
	b := &batch{}
	_, err := sp.Read(l.class, from, maxEvents, maxBytes, func(e spool.Entry) error {
		if last != 0 && e.Seq > last {
			return errStopRead
		}
		if b.count == 0 {
			b.r.First = e.Seq
			b.oldest = time.Unix(0, e.Time)
		}
		b.r.Last = e.Seq
		b.count++
		raw = append(raw, e.Data...)
		raw = append(raw, '\n')
		return nil
	})
	l.raw = raw
	if err != nil && !errors.Is(err, errStopRead) {
		return nil, fmt.Errorf("read from %d: %w", from, err)
	}
	if last != 0 {
		// A republished claim keeps its exact range, hence its message id,
		// even if some of its events were dropped since.
		b.r = spool.Range{First: from, Last: last}
	}
	if b.count == 0 {
		if last != 0 {
			// All of the claim's events are gone: nothing to send, but the
			// range is done.
			if err := sp.Ack(l.class, b.r); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	if l.pendingBytes.Add(-int64(len(raw))) < 0 {
		// Events spooled before a restart were never counted in.
		l.pendingBytes.Store(0)
	}
	b.raw = len(raw)
	body := l.getBody()
	*body = l.enc.EncodeAll(raw, (*body)[:0])
	b.body = body
	hdr := wire.Batch{
		Node:   l.n.opts.Node,
		Spool:  l.n.spool.ID(),
		Class:  l.class,
		First:  b.r.First,
		Last:   b.r.Last,
		Count:  b.count,
		Oldest: b.oldest,
	}
	b.msg = &nats.Msg{Subject: l.subj, Header: hdr.Header(), Data: *body}
	return b, nil
}

var errStopRead = errors.New("stop read")

// spoolTrouble logs a spool failure and waits before the shipper tries
// again. It returns false if the node stops meanwhile.
func (l *lane) spoolTrouble(b *backoff, err error) bool {
	l.stats.spoolErrors.Add(1)
	if b.attempt == 0 {
		l.n.opts.Logger.Error("spool read failed, retrying", "class", l.class, "err", err)
	}
	select {
	case <-l.n.ctx.Done():
		return false
	case <-time.After(b.next()):
		return true
	}
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

// publish sends b once, inside the in-flight window, and hands it to the
// acker. It returns false if the node is stopping.
func (l *lane) publish(b *batch) bool {
	select {
	case l.window <- struct{}{}:
	case <-l.n.ctx.Done():
		return false
	}
	l.send(b)
	l.stats.batches.Add(1)
	l.stats.published.Add(uint64(b.count))
	l.stats.rawBytes.Add(uint64(b.raw))
	l.stats.wireBytes.Add(uint64(len(b.msg.Data)))
	l.stats.inflight.Add(1)
	l.inflight <- b // never blocks: the window is no larger than the channel
	return true
}

func (l *lane) send(b *batch) {
	b.sent = time.Now()
	b.fut, b.err = l.n.js.PublishMsgAsync(b.msg)
}

// ack is the acker goroutine.
func (l *lane) ack() {
	down := false
	for b := range l.inflight {
		bo := backoff{min: l.n.opts.RetryMin, max: l.n.opts.RetryMax}
		for {
			ack, err := l.wait(b)
			if err == nil {
				if down {
					down = false
					l.n.opts.Logger.Info("upstream publishing again", "class", l.class)
				}
				if ack.Duplicate {
					l.stats.duplicates.Add(1)
				}
				l.done1(b)
				break
			}
			if errors.Is(err, context.Canceled) {
				l.drainUnacked(b)
				return
			}
			l.stats.errors.Add(1)
			if !down && bo.attempt >= 2 {
				down = true
				l.n.opts.Logger.Warn("upstream publish failing, retrying", "class", l.class, "err", err)
			}
			select {
			case <-l.n.ctx.Done():
				l.drainUnacked(b)
				return
			case <-time.After(bo.next()):
			}
			l.stats.retries.Add(1)
			l.send(b)
		}
	}
}

// wait returns b's ack or the error that ended it.
func (l *lane) wait(b *batch) (*jetstream.PubAck, error) {
	if b.err != nil {
		return nil, b.err
	}
	select {
	case ack := <-b.fut.Ok():
		return ack, nil
	case err := <-b.fut.Err():
		return nil, err
	case <-l.n.ctx.Done():
		return nil, context.Canceled
	}
}

// done1 records b's ack: the spool may now reclaim its range.
func (l *lane) done1(b *batch) {
	if err := l.n.spool.Ack(l.class, b.r); err != nil {
		l.n.opts.Logger.Error("ack spool", "class", l.class, "err", err)
	}
	now := time.Now()
	l.stats.acked.Add(uint64(b.count))
	l.stats.latency.observe(now.Sub(b.oldest))
	l.putBody(b.body)
	<-l.window
	if l.stats.inflight.Add(-1) == 0 {
		// Maybe idle: give a fully acknowledged tail segment back to the disk.
		if err := l.n.spool.Trim(l.class); err != nil {
			l.n.opts.Logger.Error("trim spool", "class", l.class, "err", err)
		}
	}
}

// drainUnacked abandons b and everything behind it at a hard stop: they
// stay claimed in the spool and are republished after a restart.
func (l *lane) drainUnacked(b *batch) {
	l.stats.inflight.Add(-1)
	for range l.inflight {
		l.stats.inflight.Add(-1)
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

// backoff is capped exponential backoff with full jitter.
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
