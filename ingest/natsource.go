package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/jsonx"
	"github.com/sluicehq/sluice/spool"
)

// Defaults of NATSOptions and Subscription.
const (
	DefaultNATSDurable       = "sluice-ingest"
	DefaultNATSExclude       = "sluice.>" // the aggregator's default upstream subjects
	DefaultNATSMaxBatch      = 1000
	DefaultNATSMaxBatchBytes = 4 << 20
	DefaultNATSPendingMsgs   = 65536
	DefaultNATSPendingBytes  = 64 << 20
	DefaultNATSNakDelay      = time.Second
)

// ErrInvalidNATSOptions is returned by StartNATS for options that cannot
// work: a bad or overlapping subject, a subject that could receive the
// node's own upstream traffic, a bad class, a duplicate durable.
var ErrInvalidNATSOptions = errors.New("ingest: invalid NATS options")

const (
	natsFetchWait  = 5 * time.Second        // a JetStream pull waits this long for a first message
	natsDrainWait  = 10 * time.Millisecond  // then this long for more, up to MaxBatch / MaxBatchBytes
	natsLogEvery   = 10 * time.Second       // at most one line per kind of trouble per subscription
	natsFlushWait  = 10 * time.Second       // bound of a flush when the caller's ctx has no deadline
	natsRetryMin   = 100 * time.Millisecond // backoff of failing fetches
	natsRetryMax   = 5 * time.Second
	natsReasonSize = 200 // bytes of a rejection reason sent with Term
	// natsMsgOverhead is what a message's subject, reply and headers add
	// to its payload, as a fetch's byte limit counts them: at most this
	// for sluice's subjects.
	natsMsgOverhead = 1 << 10
)

// Subscription is one subject sluice ingests from.
type Subscription struct {
	// Subject is the subject (wildcards allowed), e.g. "events.>". With
	// Stream set it is the consumer's filter subject. Required.
	Subject string
	// Queue is an optional core NATS queue group, so several nodes share
	// the subject's messages. Not allowed with Stream.
	Queue string
	// Class is the class of every event of the subscription. Default "":
	// each event is routed with NATSOptions.Router under the source
	// "nats:"+Subject.
	Class string
	// Stream, when set, makes this a JetStream source: a durable pull
	// consumer named Durable on Stream, filtered by Subject. A message is
	// acknowledged only after the Sink made its events durable. The stream
	// must exist.
	Stream string
	// Durable names the consumer. Default DefaultNATSDurable
	// ("sluice-ingest"). Only with Stream.
	Durable string
}

// NATSOptions configure a NATSSource. Subscriptions is required; every
// other field's zero value is a working default.
type NATSOptions struct {
	// Subscriptions are the subjects to ingest. No two may overlap (a
	// message would be ingested twice).
	Subscriptions []Subscription
	// ExcludeSubjects are subjects no Subscription may overlap, by NATS
	// wildcard rules, so the node never ingests what it publishes upstream.
	// Set it to the aggregator's Subject+".>". Default
	// [DefaultNATSExclude] ("sluice.>"). "$JS.>", "$SYS.>" and the
	// connection's inbox prefix are always excluded.
	ExcludeSubjects []string
	// MaxBatch bounds the events of one Sink.Ingest call and the messages
	// taken together from a subscription. Default 1000.
	MaxBatch int
	// MaxBatchBytes bounds the bytes of one Sink.Ingest call and of one
	// JetStream fetch, and is what a JetStream fetch reserves of the
	// pipeline's memory budget before it asks the server for messages (at
	// least the connection's maximum payload, so that any one message
	// fits). Default 4 MiB.
	MaxBatchBytes int
	// PendingMsgs and PendingBytes bound the messages a core subscription
	// holds while the Sink is busy; beyond them the NATS client drops
	// messages and counts them (NATSCounts.SlowConsumer). Defaults 65536
	// messages and 64 MiB.
	PendingMsgs, PendingBytes int
	// NakDelay is how long JetStream waits before redelivering messages the
	// Sink refused (full, closed or failing), and how long a JetStream
	// source pauses fetching after a refusal. Default 1s.
	NakDelay time.Duration
	// Logger receives state changes: the Sink refusing and accepting
	// again, invalid input, slow consumers, fetch failures, each at most
	// once per 10 s per subscription. Nil discards.
	Logger *slog.Logger
}

func (o *NATSOptions) setDefaults(inboxPrefix string) error {
	if len(o.Subscriptions) == 0 {
		return fmt.Errorf("%w: no subscriptions", ErrInvalidNATSOptions)
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultNATSMaxBatch
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultNATSMaxBatchBytes
	}
	if o.PendingMsgs <= 0 {
		o.PendingMsgs = DefaultNATSPendingMsgs
	}
	if o.PendingBytes <= 0 {
		o.PendingBytes = DefaultNATSPendingBytes
	}
	if o.NakDelay <= 0 {
		o.NakDelay = DefaultNATSNakDelay
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ExcludeSubjects == nil {
		o.ExcludeSubjects = []string{DefaultNATSExclude}
	}
	for _, ex := range o.ExcludeSubjects {
		if err := natsCheckSubject(ex); err != nil {
			return fmt.Errorf("%w: exclude subject %q: %v", ErrInvalidNATSOptions, ex, err)
		}
	}
	if inboxPrefix == "" {
		inboxPrefix = nats.InboxPrefix[:len(nats.InboxPrefix)-1]
	}
	reserved := []string{"$JS.>", "$SYS.>", strings.TrimSuffix(inboxPrefix, ".") + ".>"}
	subs := make([]Subscription, len(o.Subscriptions)) // never write to the caller's slice
	copy(subs, o.Subscriptions)
	o.Subscriptions = subs
	durables := make(map[[2]string]bool)
	for i := range subs {
		sub := &subs[i]
		if err := natsCheckSubject(sub.Subject); err != nil {
			return fmt.Errorf("%w: subject %q: %v", ErrInvalidNATSOptions, sub.Subject, err)
		}
		for _, ex := range o.ExcludeSubjects {
			if natsOverlap(sub.Subject, ex) {
				return fmt.Errorf("%w: subject %q overlaps %q, which the node publishes upstream: it would ingest its own output", ErrInvalidNATSOptions, sub.Subject, ex)
			}
		}
		for _, ex := range reserved {
			if natsOverlap(sub.Subject, ex) {
				return fmt.Errorf("%w: subject %q overlaps the reserved subjects %q", ErrInvalidNATSOptions, sub.Subject, ex)
			}
		}
		for _, prev := range subs[:i] {
			if natsOverlap(sub.Subject, prev.Subject) {
				return fmt.Errorf("%w: subjects %q and %q overlap: their common messages would be ingested twice", ErrInvalidNATSOptions, prev.Subject, sub.Subject)
			}
		}
		if sub.Class != "" && !spool.ValidClass(sub.Class) {
			return fmt.Errorf("%w: subject %q: invalid class %q: want 1-64 bytes of [A-Za-z0-9_-], not \"quarantine\"", ErrInvalidNATSOptions, sub.Subject, sub.Class)
		}
		if strings.ContainsAny(sub.Queue, " \t\r\n") {
			return fmt.Errorf("%w: subject %q: queue group %q has white space", ErrInvalidNATSOptions, sub.Subject, sub.Queue)
		}
		if sub.Stream == "" {
			if sub.Durable != "" {
				return fmt.Errorf("%w: subject %q: Durable %q without Stream", ErrInvalidNATSOptions, sub.Subject, sub.Durable)
			}
			continue
		}
		if sub.Queue != "" {
			return fmt.Errorf("%w: subject %q: Queue is for core subscriptions; JetStream consumers share work by name", ErrInvalidNATSOptions, sub.Subject)
		}
		if sub.Durable == "" {
			sub.Durable = DefaultNATSDurable
		}
		key := [2]string{sub.Stream, sub.Durable}
		if durables[key] {
			return fmt.Errorf("%w: subject %q: consumer %q on stream %q is used twice; give each subscription its own Durable", ErrInvalidNATSOptions, sub.Subject, sub.Durable, sub.Stream)
		}
		durables[key] = true
	}
	return nil
}

// natsCheckSubject reports why s is not a subject or subscription pattern.
func natsCheckSubject(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return errors.New("white space")
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return errors.New("empty token")
		case t == ">" && i != len(toks)-1:
			return errors.New("'>' is not the last token")
		}
	}
	return nil
}

// natsOverlap reports whether some subject matches both patterns a and b
// ('*' matches one token, a final '>' one or more).
func natsOverlap(a, b string) bool {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(ta) && i < len(tb); i++ {
		if ta[i] == ">" || tb[i] == ">" {
			return true
		}
		if ta[i] != tb[i] && ta[i] != "*" && tb[i] != "*" {
			return false
		}
	}
	return len(ta) == len(tb)
}

// NATSSource ingests the messages of NATS subjects into a Pipeline: the
// NATS door, beside the HTTP Handler. It runs one goroutine per
// subscription until Shutdown.
type NATSSource struct {
	nc   *nats.Conn
	p    *Pipeline
	opts NATSOptions
	subs []*natsSub
	// fetchBytes is what a JetStream fetch reserves of the budget.
	fetchBytes int

	stopCtx  context.Context // cancelled when Shutdown begins: no new fetches
	stop     context.CancelFunc
	hardCtx  context.Context // passed to Sink.Ingest; cancelled when Shutdown's ctx ends first
	hardStop context.CancelFunc
	wg       sync.WaitGroup // every goroutine the source starts

	shutOnce sync.Once
	shutErr  error
	done     chan struct{} // closed when Shutdown has finished
}

// StartNATS subscribes to opts.Subscriptions on nc and ingests what
// arrives through p (routed, stamped and limited as p's HTTP requests are,
// charged to p's memory budget) until Shutdown. It creates or updates the durable
// consumer of every JetStream subscription, and returns once the server
// knows every subscription (ctx bounds that setup, not the source's life).
// nc stays the caller's: the source never closes it, and acknowledgements
// go out on it, so close nc only after Shutdown.
func StartNATS(ctx context.Context, nc *nats.Conn, p *Pipeline, opts NATSOptions) (*NATSSource, error) {
	if nc == nil || p == nil || p.sink == nil {
		return nil, fmt.Errorf("%w: nil connection, pipeline or sink", ErrInvalidNATSOptions)
	}
	if err := opts.setDefaults(nc.Opts.InboxPrefix); err != nil {
		return nil, err
	}
	s := &NATSSource{nc: nc, p: p, opts: opts, done: make(chan struct{})}
	s.fetchBytes = max(opts.MaxBatchBytes, int(nc.MaxPayload())+natsMsgOverhead)
	jetStream := false
	for _, sub := range s.opts.Subscriptions {
		jetStream = jetStream || sub.Stream != ""
	}
	if jetStream && int64(s.fetchBytes) > p.budget.size {
		return nil, fmt.Errorf("%w: a JetStream fetch reserves %d bytes (MaxBatchBytes, at least the server's max payload), more than the memory budget's %d for authorized traffic (Options.MaxInflightBytes)",
			ErrInvalidNATSOptions, s.fetchBytes, p.budget.size)
	}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	s.hardCtx, s.hardStop = context.WithCancel(context.Background())
	var js jetstream.JetStream
	for _, sub := range s.opts.Subscriptions {
		w := &natsSub{s: s, cfg: sub, source: "nats:" + sub.Subject}
		var err error
		if sub.Stream == "" {
			err = w.subscribe()
		} else {
			if js == nil {
				js, err = jetstream.New(nc)
			}
			if err == nil {
				w.js = js
				err = w.ensureConsumer(ctx)
			}
		}
		if err != nil {
			s.abort()
			return nil, fmt.Errorf("ingest: nats %s: %w", sub.Subject, err)
		}
		s.subs = append(s.subs, w)
	}
	if err := s.flush(ctx); err != nil {
		s.abort()
		return nil, fmt.Errorf("ingest: nats: subscribe: %w", err)
	}
	for _, w := range s.subs {
		if w.core != nil {
			s.goFunc(w.runCore)
		} else {
			s.goFunc(w.runJetStream)
		}
	}
	return s, nil
}

// abort undoes a half-done StartNATS.
func (s *NATSSource) abort() {
	for _, w := range s.subs {
		if w.core != nil {
			w.core.Unsubscribe()
		}
	}
	s.stop()
	s.hardStop()
	close(s.done)
}

// goFunc runs f on a goroutine Shutdown waits for.
func (s *NATSSource) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// flush waits until the server has processed everything sent on nc.
func (s *NATSSource) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, natsFlushWait)
		defer cancel()
	}
	return s.nc.FlushWithContext(ctx)
}

// Shutdown stops taking messages and waits for the batches in flight: core
// subscriptions are drained (what NATS already delivered is ingested),
// JetStream fetches stop, and every fetched message is acknowledged,
// negatively acknowledged or terminated, and the acknowledgements flushed.
// If ctx ends first, the Sink calls in flight are cancelled (their
// JetStream messages are redelivered later; their core messages are lost)
// and Shutdown returns ctx.Err() once every goroutine has stopped. It is
// idempotent; later calls wait for the first and return its result.
func (s *NATSSource) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		defer close(s.done)
		s.stop()
		for _, w := range s.subs {
			if w.core != nil && w.core.Drain() != nil {
				w.core.Unsubscribe()
			}
		}
		idle := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(idle)
		}()
		select {
		case <-idle:
		case <-ctx.Done():
			s.shutErr = ctx.Err()
			s.hardStop()
			<-idle
		}
		s.hardStop()
		if s.shutErr == nil && !s.nc.IsClosed() {
			if err := s.flush(ctx); err != nil {
				s.shutErr = fmt.Errorf("ingest: nats: flush acks: %w", err)
			}
		}
	})
	<-s.done
	return s.shutErr
}

// Close is Shutdown with aggregator.DefaultShutdownTimeout.
func (s *NATSSource) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), aggregator.DefaultShutdownTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}

// NATSCounts are the counters of one subscription, or their sums. Events
// count events (NDJSON lines); the others say which unit they count.
type NATSCounts struct {
	// Messages is the messages received; a redelivered JetStream message
	// counts again.
	Messages uint64
	// Events is the events the Sink made durable.
	Events uint64
	// Rejected is the events not kept because they are not one JSON
	// object or exceed the pipeline's MaxEventBytes (found here or by the
	// Sink). An empty message counts as one.
	Rejected uint64
	// Dropped is the events the Sink refused under a drop_newest overflow
	// policy (aggregator.ErrDropped): counted by design, not kept.
	Dropped uint64
	// Refused is the events of core subscriptions lost because the Sink
	// refused them (full, closed or failing): core NATS cannot redeliver.
	Refused uint64
	// Redelivered is the JetStream messages handed back for redelivery
	// after NakDelay because the Sink refused their events.
	Redelivered uint64
	// Terminated is the JetStream messages terminated (never redelivered)
	// because no event in them was valid.
	Terminated uint64
	// SlowConsumer is the core messages the NATS client dropped because
	// the subscription's pending limit was reached.
	SlowConsumer uint64
	// Busy counts the times a subscription waited out the pipeline's
	// memory budget (Options.BudgetWait) and found it still spent: a
	// JetStream fetch not made (the messages stay in the stream), a
	// JetStream batch handed back for redelivery after NakDelay, or a core
	// batch held while the subscription's pending limits take the rest.
	Busy uint64
}

// Sub returns c - o, counter by counter: the counts of an interval between
// two snapshots.
func (c NATSCounts) Sub(o NATSCounts) NATSCounts {
	return NATSCounts{
		Messages:     c.Messages - o.Messages,
		Events:       c.Events - o.Events,
		Rejected:     c.Rejected - o.Rejected,
		Dropped:      c.Dropped - o.Dropped,
		Refused:      c.Refused - o.Refused,
		Redelivered:  c.Redelivered - o.Redelivered,
		Terminated:   c.Terminated - o.Terminated,
		SlowConsumer: c.SlowConsumer - o.SlowConsumer,
		Busy:         c.Busy - o.Busy,
	}
}

func (c *NATSCounts) add(o NATSCounts) {
	c.Messages += o.Messages
	c.Events += o.Events
	c.Rejected += o.Rejected
	c.Dropped += o.Dropped
	c.Refused += o.Refused
	c.Redelivered += o.Redelivered
	c.Terminated += o.Terminated
	c.SlowConsumer += o.SlowConsumer
	c.Busy += o.Busy
}

// NATSSubscriptionStats are one subscription's counters.
type NATSSubscriptionStats struct {
	Subject string
	Stream  string // "" for a core subscription
	NATSCounts
}

// NATSStats is a snapshot of a NATSSource's counters.
type NATSStats struct {
	Total         NATSCounts              // the sums over Subscriptions
	Subscriptions []NATSSubscriptionStats // in NATSOptions.Subscriptions order
}

// Stats returns a snapshot of the counters. It is safe to call at any
// time, also after Shutdown.
func (s *NATSSource) Stats() NATSStats {
	st := NATSStats{Subscriptions: make([]NATSSubscriptionStats, 0, len(s.subs))}
	for _, w := range s.subs {
		w.noteSlow()
		c := NATSCounts{
			Messages:     w.messages.Load(),
			Events:       w.events.Load(),
			Rejected:     w.rejected.Load(),
			Dropped:      w.dropped.Load(),
			Refused:      w.refused.Load(),
			Redelivered:  w.redelivered.Load(),
			Terminated:   w.terminated.Load(),
			SlowConsumer: w.slow.Load(),
			Busy:         w.busy.Load(),
		}
		st.Total.add(c)
		st.Subscriptions = append(st.Subscriptions, NATSSubscriptionStats{Subject: w.cfg.Subject, Stream: w.cfg.Stream, NATSCounts: c})
	}
	return st
}

// natsSub runs one subscription. The fields after the counters belong to
// its goroutine.
type natsSub struct {
	s      *NATSSource
	cfg    Subscription
	source string // Router source

	core *nats.Subscription // core subscription, or
	js   jetstream.JetStream
	cons jetstream.Consumer // JetStream consumer

	messages, events, rejected, dropped, refused, redelivered, terminated, busy atomic.Uint64
	slow                                                                        atomic.Uint64 // last value of core.Dropped()

	items   []natsItem
	evs     []Event // parsed, as the pipeline takes them
	owner   []int32 // the item of each event of evs
	refusal error   // the Sink's error while it refuses, nil while it accepts

	rejectLog, refuseLog, slowLog, ackLog, busyLog natsLogGate
	refusedRun                                     uint64 // events or messages refused since refusal began
	fetchErr                                       error  // last fetch error while fetches fail
}

// natsItem is one message of a batch.
type natsItem struct {
	data   []byte
	msg    jetstream.Msg // nil for core messages
	kept   int           // events the Sink took (durable or dropped by policy)
	reason string        // first rejection
	err    error         // the Sink refused some of its events
}

// natsLogGate lets one log line through per natsLogEvery and counts what
// it held back.
type natsLogGate struct {
	last time.Time
	held uint64
}

func (g *natsLogGate) allow(now time.Time, n uint64) (total uint64, ok bool) {
	g.held += n
	if !g.last.IsZero() && now.Sub(g.last) < natsLogEvery {
		return 0, false
	}
	total, g.held, g.last = g.held, 0, now
	return total, true
}

func (w *natsSub) log() *slog.Logger { return w.s.opts.Logger }

func (w *natsSub) subscribe() error {
	var err error
	if w.cfg.Queue != "" {
		w.core, err = w.s.nc.QueueSubscribeSync(w.cfg.Subject, w.cfg.Queue)
	} else {
		w.core, err = w.s.nc.SubscribeSync(w.cfg.Subject)
	}
	if err != nil {
		return err
	}
	if err := w.core.SetPendingLimits(w.s.opts.PendingMsgs, w.s.opts.PendingBytes); err != nil {
		w.core.Unsubscribe()
		return err
	}
	return nil
}

func (w *natsSub) ensureConsumer(ctx context.Context) error {
	c, err := w.js.CreateOrUpdateConsumer(ctx, w.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       w.cfg.Durable,
		Description:   "sluice ingest of " + w.cfg.Subject,
		FilterSubject: w.cfg.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxDeliver:    -1, // refused messages wait for the Sink; poison is terminated
		MaxAckPending: max(1000, 2*w.s.opts.MaxBatch),
	})
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", w.cfg.Durable, w.cfg.Stream, err)
	}
	w.cons = c
	return nil
}

// noteSlow records the core subscription's slow-consumer drops.
func (w *natsSub) noteSlow() uint64 {
	if w.core == nil {
		return 0
	}
	d, err := w.core.Dropped()
	if err != nil || d < 0 {
		return 0
	}
	for {
		old := w.slow.Load()
		if uint64(d) <= old {
			return 0
		}
		if w.slow.CompareAndSwap(old, uint64(d)) {
			return uint64(d) - old
		}
	}
}

// runCore ingests a core subscription until it is drained or closed.
// Each message taken from the subscription is charged to the pipeline's
// budget; while the budget is spent no more are taken, and the NATS
// client's pending limits (PendingMsgs, PendingBytes) bound what waits.
func (w *natsSub) runCore() {
	o := &w.s.opts
	defer func() {
		w.noteSlow()
		if n, _, err := w.core.Pending(); err == nil && n > 0 {
			w.log().Warn("nats: stopped with core messages pending: they are lost", "subject", w.cfg.Subject, "messages", n)
		}
		w.core.Unsubscribe()
	}()
	var next *nats.Msg // taken, but did not fit in the last batch's charge
	for {
		m := next
		if next = nil; m == nil {
			var err error
			m, err = w.core.NextMsgWithContext(w.s.hardCtx)
			if errors.Is(err, nats.ErrSlowConsumer) {
				w.logSlow()
				continue
			}
			if err != nil {
				if w.s.stopCtx.Err() == nil {
					w.log().Error("nats: subscription closed", "subject", w.cfg.Subject, "err", err)
				}
				return
			}
		}
		mt := w.meter()
		if !w.chargeCore(mt, int64(len(m.Data))) {
			w.refused.Add(1)
			return // Shutdown's deadline passed while the budget was spent
		}
		w.items = append(w.items[:0], natsItem{data: m.Data})
		size := len(m.Data)
		for len(w.items) < o.MaxBatch && size < o.MaxBatchBytes {
			if n, _, err := w.core.Pending(); err != nil || n == 0 {
				break
			}
			m, err := w.core.NextMsg(0)
			if err != nil {
				break // a slow-consumer report is seen by the next NextMsgWithContext
			}
			if !mt.tryCharge(int64(len(m.Data))) {
				next = m // the first of the next batch, which waits for the budget
				break
			}
			w.items = append(w.items, natsItem{data: m.Data})
			size += len(m.Data)
		}
		w.process(mt)
		mt.releaseAll()
		if w.noteSlow() > 0 {
			w.logSlow()
		}
	}
}

// meter returns the account of one batch: NATS traffic is authorized
// (the server authenticated it), so it charges the main budget.
func (w *natsSub) meter() *meter {
	return &meter{ctx: w.s.hardCtx, main: w.s.p.budget, authorized: true}
}

// chargeCore charges n bytes for a core batch, waiting as long as the
// budget stays spent (core NATS cannot redeliver what it dropped, and
// meanwhile the subscription's pending limits hold the rest). It returns
// false once Shutdown's deadline passed.
func (w *natsSub) chargeCore(m *meter, n int64) bool {
	n = min(n, w.s.p.budget.size) // a message the whole budget cannot hold waits for all of it
	for {
		if m.charge(n) == nil {
			return true
		}
		if w.s.hardCtx.Err() != nil {
			return false
		}
		w.busy.Add(1)
		w.logBusy()
	}
}

func (w *natsSub) logBusy() {
	if n, ok := w.busyLog.allow(time.Now(), 1); ok {
		w.log().Warn("nats: memory budget spent: ingest waits (JetStream messages stay in the stream; core messages wait in the subscription's pending limits)",
			"subject", w.cfg.Subject, "waits", n, "budget_bytes", w.s.p.budget.size)
	}
}

func (w *natsSub) logSlow() {
	w.noteSlow()
	if _, ok := w.slowLog.allow(time.Now(), 0); ok {
		w.log().Warn("nats: slow consumer: the NATS client is dropping messages of a core subscription",
			"subject", w.cfg.Subject, "dropped_total", w.slow.Load(),
			"pending_msgs", w.s.opts.PendingMsgs, "pending_bytes", w.s.opts.PendingBytes)
	}
}

// runJetStream fetches and ingests a JetStream subscription until Shutdown.
func (w *natsSub) runJetStream() {
	retry := natsRetryMin
	for w.s.stopCtx.Err() == nil {
		// The fetch's bytes are charged before they are asked for: with
		// the budget spent, nothing is fetched and the messages wait in
		// the stream, unacknowledged and safe.
		mt := &meter{ctx: w.s.stopCtx, main: w.s.p.budget, authorized: true}
		if err := mt.charge(int64(w.s.fetchBytes)); err != nil {
			w.busy.Add(1)
			w.logBusy()
			continue
		}
		n, err := w.fetch()
		if err != nil {
			mt.releaseAll()
			if w.s.stopCtx.Err() != nil {
				return
			}
			if w.fetchErr == nil {
				w.log().Warn("nats: jetstream fetch failing, retrying", "subject", w.cfg.Subject, "stream", w.cfg.Stream, "consumer", w.cfg.Durable, "err", err)
			}
			w.fetchErr = err
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders) {
				ctx, cancel := context.WithTimeout(w.s.stopCtx, natsFetchWait)
				w.ensureConsumer(ctx) // failures show up as fetch errors
				cancel()
			}
			w.pause(retry)
			retry = min(2*retry, natsRetryMax)
			continue
		}
		if w.fetchErr != nil {
			w.log().Info("nats: jetstream fetch recovered", "subject", w.cfg.Subject, "stream", w.cfg.Stream, "consumer", w.cfg.Durable)
			w.fetchErr, retry = nil, natsRetryMin
		}
		if n == 0 {
			mt.releaseAll()
			continue
		}
		// The Sink's calls take hardCtx: Shutdown lets them finish.
		mt.ctx = w.s.hardCtx
		refused := w.process(mt)
		mt.releaseAll()
		if refused {
			w.pause(w.s.opts.NakDelay) // backpressure: the Sink is full
		}
	}
}

// pause waits d or until Shutdown begins.
func (w *natsSub) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.s.stopCtx.Done():
	}
}

// fetch fills w.items within the fetchBytes the caller charged: it waits
// up to natsFetchWait for one message, then briefly for what else is
// pending, up to MaxBatch messages.
func (w *natsSub) fetch() (int, error) {
	w.items = w.items[:0]
	limit := w.s.fetchBytes
	ctx, cancel := context.WithTimeout(w.s.stopCtx, natsFetchWait)
	defer cancel()
	b, err := w.cons.Fetch(1, jetstream.FetchContext(ctx), jetstream.FetchMaxBytes(limit))
	if err != nil {
		return 0, err
	}
	got := w.collect(b)
	if len(w.items) == 0 {
		if err := b.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return 0, err
		}
		return 0, nil
	}
	if o := &w.s.opts; o.MaxBatch > 1 && limit-got > natsMsgOverhead && w.s.stopCtx.Err() == nil {
		b, err := w.cons.Fetch(o.MaxBatch-1, jetstream.FetchMaxBytes(limit-got), jetstream.FetchMaxWait(natsDrainWait))
		if err == nil {
			w.collect(b) // an error here leaves the rest for the next fetch
		}
	}
	return len(w.items), nil
}

// collect appends the messages of b to w.items and returns their bytes
// as a fetch's byte limit counts them, about.
func (w *natsSub) collect(b jetstream.MessageBatch) int {
	n := 0
	for m := range b.Messages() {
		w.items = append(w.items, natsItem{data: m.Data(), msg: m})
		n += len(m.Data()) + len(m.Subject())
	}
	return n
}

// process ingests w.items through the pipeline: it parses (validates)
// each message's events, which the pipeline routes, stamps and groups by
// class; it calls the Sink once per class and MaxBatch, then settles each
// JetStream message. m is the batch's account. It reports whether the
// Sink refused anything.
func (w *natsSub) process(m *meter) (refused bool) {
	o := &w.s.opts
	p := w.s.p
	cfg := p.live.Load() // one batch, one configuration
	w.evs, w.owner = w.evs[:0], w.owner[:0]
	var rejected uint64
	var reason string
	sc := newEventScan(cfg.plan(w.source, w.cfg.Class))
	for i := range w.items {
		it := &w.items[i]
		var rej []Rejection
		n0 := len(w.evs)
		w.evs, rej = natsParseEvents(it.data, cfg.maxEventBytes, &sc, w.evs)
		if len(rej) > 0 {
			it.reason = rej[0].Error
			if len(w.evs)-n0+len(rej) > 1 {
				it.reason = fmt.Sprintf("line %d: %s", rej[0].Line, rej[0].Error)
			}
			rejected += uint64(len(rej))
			reason = it.reason
		}
		for range w.evs[n0:] {
			w.owner = append(w.owner, int32(i))
		}
	}
	w.messages.Add(uint64(len(w.items)))

	bufs := p.getBufs()
	defer p.putBufs(bufs)
	b := pipeBatch{cfg: cfg, source: w.source, scope: w.source, class: w.cfg.Class, events: w.evs}
	for {
		_, err := p.prepare(&b, bufs, m)
		if err == nil {
			break
		}
		w.busy.Add(1)
		w.logBusy()
		if w.core == nil || w.s.hardCtx.Err() != nil {
			// JetStream: hand the messages back for redelivery after
			// NakDelay rather than hold them past the budget.
			for _, owner := range w.owner {
				if it := &w.items[owner]; it.err == nil {
					it.err = err
				}
			}
			break
		}
		// Core: give back what the batch holds, so that no two
		// subscriptions wait for each other, then wait for the budget.
		m.releaseAll()
		p.budget.waitRelease(w.s.hardCtx, p.opts.BudgetWait)
		size := 0
		for i := range w.items {
			size += len(w.items[i].data)
		}
		if !w.chargeCore(m, int64(size)) {
			// Shutdown's deadline passed: core NATS cannot redeliver.
			for _, owner := range w.owner {
				w.items[owner].err = err
			}
			w.refused.Add(uint64(len(w.owner)))
			break
		}
	}
	for _, g := range bufs.order {
		for start := 0; start < len(g.bodies); {
			end, size := start, 0
			for end < len(g.bodies) && end-start < o.MaxBatch && (end == start || size+len(g.bodies[end]) <= o.MaxBatchBytes) {
				size += len(g.bodies[end])
				end++
			}
			rejected += w.ingest(g.class, g.bodies[start:end], g.idx[start:end], &reason)
			start = end
		}
	}
	w.rejected.Add(rejected)
	var terminated, redelivered uint64
	for i := range w.items {
		it := &w.items[i]
		if it.err != nil {
			refused = true
		}
		if it.msg == nil {
			continue
		}
		var err error
		switch {
		case it.err != nil:
			err = it.msg.NakWithDelay(o.NakDelay)
			redelivered++
		case it.kept == 0:
			r := it.reason
			if len(r) > natsReasonSize {
				r = r[:natsReasonSize]
			}
			err = it.msg.TermWithReason("sluice: no valid event: " + r)
			terminated++
		default:
			err = it.msg.Ack()
		}
		if err != nil {
			if n, ok := w.ackLog.allow(time.Now(), 1); ok {
				w.log().Warn("nats: acknowledging failed: the messages will be redelivered", "subject", w.cfg.Subject, "stream", w.cfg.Stream, "failures", n, "err", err)
			}
		}
	}
	w.terminated.Add(terminated)
	w.redelivered.Add(redelivered)
	if rejected > 0 || terminated > 0 {
		w.logRejects(rejected, terminated, reason)
	}
	if !refused && w.refusal != nil {
		w.log().Info("nats: sink accepting again", "subject", w.cfg.Subject, w.refusedKey(), w.refusedRun)
		w.refusal, w.refusedRun = nil, 0
		w.refuseLog = natsLogGate{}
	}
	// Drop the references to the messages' bytes until the next batch.
	clear(w.items[:cap(w.items)])
	clear(w.evs[:cap(w.evs)])
	return refused
}

// ingest hands one chunk of a class's events (bodies, and idx their
// index in w.evs) to the Sink and records the outcome in the chunk's
// items. It returns the events rejected by the Sink. A chunk the Sink
// rejects as invalid or too large is retried event by event, so that a bad
// event costs only itself.
func (w *natsSub) ingest(class string, bodies [][]byte, idx []int32, reason *string) (rejected uint64) {
	out, err := w.s.p.store(w.s.hardCtx, class, bodies)
	n := uint64(len(bodies))
	switch {
	case out.kept():
		for _, i := range idx {
			w.items[w.owner[i]].kept++
		}
		if out == outStored {
			w.events.Add(n)
		} else {
			w.dropped.Add(n)
		}
		return 0
	case out.final():
		if len(bodies) == 1 {
			it := &w.items[w.owner[idx[0]]]
			if it.reason == "" {
				it.reason = err.Error()
			}
			*reason = err.Error()
			return 1
		}
		for i := range bodies {
			rejected += w.ingest(class, bodies[i:i+1], idx[i:i+1], reason)
		}
		return rejected
	}
	for _, i := range idx {
		if it := &w.items[w.owner[i]]; it.err == nil {
			it.err = err
		}
	}
	if w.core != nil {
		w.refused.Add(n)
		w.refusedRun += n
	} else {
		w.refusedRun += uint64(w.countItems(idx))
	}
	w.logRefusal(class, err)
	return 0
}

// countItems counts the distinct messages of the events idx (in message
// order).
func (w *natsSub) countItems(idx []int32) int {
	n, last := 0, int32(-1)
	for _, i := range idx {
		if o := w.owner[i]; o != last {
			n, last = n+1, o
		}
	}
	return n
}

func (w *natsSub) refusedKey() string {
	if w.core != nil {
		return "events_lost"
	}
	return "messages_redelivered"
}

func (w *natsSub) logRefusal(class string, err error) {
	now := time.Now()
	if w.refusal == nil {
		w.refusal = err
		w.refuseLog.allow(now, 0)
		if w.core != nil {
			w.log().Warn("nats: sink refusing events: dropping them (core NATS cannot redeliver; use a JetStream source)", "subject", w.cfg.Subject, "class", class, "err", err)
		} else {
			w.log().Warn("nats: sink refusing events: redelivering them", "subject", w.cfg.Subject, "stream", w.cfg.Stream, "class", class, "nak_delay", w.s.opts.NakDelay, "err", err)
		}
		return
	}
	if _, ok := w.refuseLog.allow(now, 0); ok {
		w.log().Warn("nats: sink still refusing events", "subject", w.cfg.Subject, "class", class, w.refusedKey(), w.refusedRun, "err", err)
	}
}

func (w *natsSub) logRejects(rejected, terminated uint64, reason string) {
	if n, ok := w.rejectLog.allow(time.Now(), rejected); ok {
		args := []any{"subject", w.cfg.Subject, "rejected", n, "example", reason}
		if w.core == nil {
			args = append(args, "stream", w.cfg.Stream, "terminated_total", w.terminated.Load())
		}
		w.log().Warn("nats: rejected invalid events", args...)
	}
}

// natsParseEvents appends the events of one message to events: the
// message is one JSON object (which may span lines: it is compacted onto
// one, in place) or NDJSON. Each event is validated once, here, by the
// pass that collects its meta with sc (scan.go). The events alias data.
func natsParseEvents(data []byte, maxEvent int, sc *eventScan, events []Event) ([]Event, []Rejection) {
	body := bytes.TrimSpace(data)
	if len(body) == 0 {
		return events, []Rejection{{Line: 1, Error: "empty message"}}
	}
	nl := bytes.IndexByte(body, '\n')
	if nl < 0 {
		return parseEvents(data, maxEvent, sc, events, nil)
	}
	// Several lines. When the first is an object on its own, the message
	// cannot be one object: it is NDJSON, and its first line is validated
	// once, as the others are.
	lead := cap(data) - cap(body) // body is data[lead:…]
	line := 1 + bytes.Count(data[:lead], []byte{'\n'})
	if first := bytes.TrimSpace(body[:nl]); len(first) <= maxEvent && bytes.IndexByte(first, '\r') < 0 {
		if meta, err := sc.validate(first, nil); err == nil {
			events = append(events, Event{Body: first[:len(first):len(first)], meta: meta})
			return parseEventsFrom(body[nl+1:], line+1, maxEvent, sc, events, nil)
		}
	}
	if traceScan != nil {
		traceScan(body)
	}
	if jsonx.Object(body) == nil {
		// One pretty-printed object, not NDJSON.
		if len(body) > maxEvent {
			return events, []Rejection{{Line: 1, Error: fmt.Sprintf("event of %d bytes, limit %d", len(body), maxEvent)}}
		}
		body = jsonx.AppendCompact(body[:0], body) // never longer: in place
		return append(events, Event{Body: body[:len(body):len(body)], meta: sc.rescan(body)}), nil
	}
	return parseEvents(data, maxEvent, sc, events, nil) // line numbers of data
}
