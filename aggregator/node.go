package aggregator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/jsonx"
	"github.com/sluicehq/sluice/internal/validated"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

// DefaultShutdownTimeout is the drain deadline Close gives Shutdown.
const DefaultShutdownTimeout = 30 * time.Second

// Node is a running edge node: events go in through Ingest, are made
// durable in the spool, and are shipped in batches to JetStream by one lane
// per class. A Node is safe for concurrent use.
type Node struct {
	opts  Options
	spool *spool.Spool
	js    jetstream.JetStream
	drv   *driver // the shaper
	gate  *streamGate

	ctx    context.Context // cancelled on hard stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the node starts

	lanes  []*lane          // one per class, in Options.Classes order (then classes found only in the spool)
	byName map[string]*lane // classes Ingest accepts

	reconf sync.Mutex // serializes Reconfigure

	mu      sync.RWMutex // guards closing; Ingest holds it for reading
	closing bool
	ingests sync.WaitGroup // Ingest calls past the closing check

	drain    chan struct{} // closed when Shutdown begins: lanes flush and exit when empty
	shutOnce sync.Once
	shutErr  error
	report   ShutdownReport // what Shutdown did, set before done is closed
	done     chan struct{}  // closed when Shutdown has finished
}

// New opens the spool in opts.Dir, starts one lane per class, republishes
// every batch that was claimed but not acknowledged before a restart, and
// returns a node ready to ingest. Classes found in the spool but no longer
// configured are drained with the settings of the last configured class.
func New(opts Options) (*Node, error) {
	spoolOpts, err := opts.setDefaults()
	if err != nil {
		return nil, err
	}
	sp, err := spool.Open(opts.Dir, spoolOpts)
	if errors.Is(err, spool.ErrInvalidOptions) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	accept := make(map[string]bool, len(opts.Classes))
	for _, c := range opts.Classes {
		accept[c.Name] = true
	}
	for _, name := range sp.Classes() {
		if !accept[name] {
			legacy := opts.Classes[len(opts.Classes)-1]
			legacy.Name, legacy.Critical, legacy.Rate = name, false, priority.Rate{}
			opts.Classes = append(opts.Classes, legacy)
			opts.Logger.Warn("spool holds a class that is not configured: draining it", "class", name)
		}
	}
	js, err := jetstream.New(opts.Conn,
		jetstream.WithPublishAsyncMaxPending(1<<16), // lanes bound their own windows
		jetstream.WithPublishAsyncTimeout(opts.AckTimeout))
	if err != nil {
		sp.Close()
		return nil, fmt.Errorf("aggregator: jetstream: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		opts:   opts,
		spool:  sp,
		js:     js,
		ctx:    ctx,
		cancel: cancel,
		byName: make(map[string]*lane, len(opts.Classes)),
		gate:   newStreamGate(),
		drain:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	n.drv, err = newDriver(opts, msgOverhead(opts, sp.ID()), driverInputs{
		backlog:    n.backlog,
		ratio:      n.wireRatio,
		spoolBytes: func() (int64, int64) { return spoolUse(sp.Stats()) },
		connected:  func() bool { return opts.Conn.Status() == nats.CONNECTED },
	}, time.Now)
	if err != nil {
		cancel()
		sp.Close()
		return nil, fmt.Errorf("aggregator: shaper: %w", err)
	}
	bucket := &dictBucket{js: js, stream: opts.Stream}
	trainSem := make(chan struct{}, 1)
	for i := range opts.Classes {
		l, err := newLane(&n.opts, i, sp, js, n.drv, n.drain, bucket, trainSem)
		if err != nil {
			cancel()
			sp.Close()
			return nil, fmt.Errorf("aggregator: class %s: %w", opts.Classes[i].Name, err)
		}
		l.pub.gate = n.gate
		l.pub.once = newOnceGuard(ctx, &n.opts, js, sp.ID(), l.name, sp.Claims(l.name), n.drv.now)
		n.lanes = append(n.lanes, l)
		if accept[l.name] {
			n.byName[l.name] = l
		}
	}
	n.goFunc(n.watchUpstream)
	n.goFunc(func() { n.drv.run(ctx) })
	if opts.Spool.Fsync == spool.FsyncInterval {
		n.goFunc(n.syncEvery)
	}
	for _, l := range n.lanes {
		l.start(ctx, n.goFunc)
	}
	return n, nil
}

// goFunc runs f on a goroutine the node waits for in Shutdown.
func (n *Node) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Ingest makes events durable in the spool under class and returns once
// they are committed under the spool's fsync policy: a nil error means the
// events will reach the stream even if the process dies right after.
//
// Each event must be one JSON object. Events with newlines inside are
// compacted to one line. If any event is invalid, none is kept and the
// error (wrapping ErrInvalidEvent or ErrTooLarge) names its index.
// A full class returns an error wrapping ErrFull (policy block) or
// ErrDropped (policy drop_newest); a full disk, ErrNoSpace; after Shutdown
// begins, ErrClosed.
//
// ctx bounds the wait for the spool's group commit: if it ends before the
// events were taken into a commit, Ingest returns an error wrapping
// ctx.Err() and none of them is kept; once taken, Ingest waits for the
// commit (an fsync, milliseconds) whatever ctx says, so that its answer is
// always exact.
func (n *Node) Ingest(ctx context.Context, class string, events ...[]byte) error {
	return n.ingest(ctx, class, events, true)
}

// IngestValid is Ingest for events package ingest has already validated:
// each one JSON object on one line, within the ingest pipeline's
// Options.MaxEventBytes. It skips Ingest's validation (a tenth of the
// node's CPU on the HTTP path), so that an event is validated once on its
// way from the network to the spool.
//
// It is not for use outside this module, and cannot be: a
// validated.Events comes from an internal package, so no other module can
// name its type or build a value holding events. Call Ingest, which
// validates; ingest.NewPipeline with a *Node calls IngestValid for you.
func (n *Node) IngestValid(ctx context.Context, class string, events validated.Events) error {
	return n.ingest(ctx, class, events.Bodies(), false)
}

func (n *Node) ingest(ctx context.Context, class string, events [][]byte, check bool) error {
	l := n.byName[class]
	if l == nil {
		return fmt.Errorf("%w: %q is not configured (classes: %s)", ErrInvalidClass, class, n.classNames())
	}
	if len(events) == 0 {
		return nil
	}
	n.mu.RLock()
	if n.closing {
		n.mu.RUnlock()
		return ErrClosed
	}
	n.ingests.Add(1)
	n.mu.RUnlock()
	defer n.ingests.Done()

	var size int
	in := events
	for i, ev := range in {
		if !check {
			size += len(ev)
			continue
		}
		norm, err := n.normalize(ev)
		if err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		if len(norm) != len(ev) {
			if &events[0] == &in[0] {
				events = slices.Clone(in) // never write to the caller's slice
			}
			events[i] = norm
		}
		size += len(norm)
	}
	_, err := n.spool.Append(ctx, class, events)
	if err != nil {
		// The spool's errors are the node's (errors.go): passed on as they
		// are, translated once at the edge.
		if errors.Is(err, ErrFull) {
			l.stats.refused.Add(uint64(len(events)))
		}
		return fmt.Errorf("aggregator: ingest %s: %w", class, err)
	}
	l.stats.ingested.Add(uint64(len(events)))
	l.stats.ingestedBytes.Add(uint64(size))
	l.bt.pending.Add(int64(size))
	if l.cfg.Load().urgent {
		n.drv.addIngress(size)
	}
	l.notify()
	return nil
}

// normalize checks that ev is one JSON object and returns it on one line.
func (n *Node) normalize(ev []byte) ([]byte, error) {
	if len(ev) > n.opts.MaxEventBytes {
		return nil, fmt.Errorf("%w: event of %d bytes, limit %d", ErrTooLarge, len(ev), n.opts.MaxEventBytes)
	}
	if err := jsonx.Object(ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	ev = bytes.TrimSpace(ev)
	if jsonx.HasNewline(ev) {
		// Valid JSON has newlines only between tokens: compact it onto one
		// line, as NDJSON needs.
		var b bytes.Buffer
		if err := json.Compact(&b, ev); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
		}
		return b.Bytes(), nil
	}
	return ev, nil
}

// Shutdown stops intake (Ingest returns ErrClosed), sends the spooled
// events of every class the degradation level does not defer, waits for
// JetStream's acks and closes the spool. If ctx ends first, it stops at
// once and returns ctx.Err(). Either way, what was not acknowledged stays
// in the spool and is sent after the next New: the events of deferred
// classes (with the default plans, every class but critical at level 3,
// when the link has failed), and those the upstream did not take before
// ctx ended. ShutdownReport
// says, per class, how many events the drain shipped, how many it left
// and why. Shutdown is idempotent; later calls wait for the first and
// return its result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutOnce.Do(func() {
		defer close(n.done)
		start := time.Now()
		n.mu.Lock()
		n.closing = true
		n.mu.Unlock()
		n.ingests.Wait()
		acked := make([]uint64, len(n.lanes))
		for i, l := range n.lanes {
			acked[i] = l.stats.acked.Load()
		}
		close(n.drain)

		// deferredAt[i] is 1 + the level at which lane i was last seen
		// deferred while the drain went on, 0 if never: a lane leaves
		// its deferred backlog in the spool and stops.
		deferredAt := make([]int, len(n.lanes))
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for _, wait := range n.lanes {
				for {
					changed := n.drv.levelChanged()
					for i, l := range n.lanes {
						if act, level := l.action(); act.Kind == priority.ActionDefer {
							deferredAt[i] = level + 1
						}
					}
					if isClosed(wait.done) {
						break
					}
					select {
					case <-wait.done:
					case <-changed:
					}
				}
			}
		}()
		// cut[i] says why lane i had not finished when ctx ended.
		var cut []LeftReason
		select {
		case <-drained:
		case <-ctx.Done():
			n.shutErr = ctx.Err()
			down := !n.opts.Conn.IsConnected() || n.drv.linkLevel() == 3
			cut = make([]LeftReason, len(n.lanes))
			for i, l := range n.lanes {
				switch {
				case isClosed(l.done):
				case down || l.pub.failing.Load():
					cut[i] = LeftUpstreamDown
				default:
					cut[i] = LeftDeadline
				}
			}
		}
		n.cancel()
		n.wg.Wait()
		<-drained

		rep := ShutdownReport{TimedOut: n.shutErr != nil, Classes: make([]ClassDrain, len(n.lanes))}
		sp := n.spool.Stats()
		for i, l := range n.lanes {
			c := ClassDrain{Class: l.name, Shipped: l.stats.acked.Load() - acked[i], Left: sp.Classes[l.name].Depth}
			if c.Left > 0 {
				switch {
				case cut != nil && cut[i] != LeftNone:
					c.Reason = cut[i]
				case deferredAt[i] > 0:
					c.Reason, c.Level = LeftDeferred, deferredAt[i]-1
				default:
					c.Reason = LeftOther
				}
			}
			rep.Classes[i] = c
		}
		if err := n.spool.Close(); err != nil && n.shutErr == nil {
			n.shutErr = fmt.Errorf("aggregator: close spool: %w", err)
		}
		rep.Took = time.Since(start)
		n.report = rep
	})
	<-n.done
	return n.shutErr
}

// ShutdownReport returns what Shutdown did, and false until Shutdown (or
// Close) has returned.
func (n *Node) ShutdownReport() (ShutdownReport, bool) {
	if !isClosed(n.done) {
		return ShutdownReport{}, false
	}
	r := n.report
	r.Classes = slices.Clone(r.Classes)
	return r, true
}

// ShutdownReport is what a node's Shutdown did: per class, the events the
// drain shipped and those it left in the spool, with the reason. Events
// left are durable: a node started on the same spool sends them.
type ShutdownReport struct {
	// Took is the time from the start of Shutdown to the spool's close.
	Took time.Duration
	// TimedOut says that the context ended before every class was done:
	// Shutdown returned its error.
	TimedOut bool
	// Classes are in Options.Classes order, then the classes found only
	// in the spool.
	Classes []ClassDrain
}

// ClassDrain is one class's part of a ShutdownReport.
type ClassDrain struct {
	Class string
	// Shipped counts the events JetStream acknowledged while Shutdown
	// drained (ClassStats.Acked's increase).
	Shipped uint64
	// Left counts the events still in the spool, not acknowledged, when it
	// closed (ClassStats.Depth): the next New sends them.
	Left uint64
	// Reason says why Left is not 0; LeftNone when it is.
	Reason LeftReason
	// Level is the degradation level that deferred the class, with
	// LeftDeferred.
	Level int
}

// Shipped is the events the drain shipped, over all classes.
func (r ShutdownReport) Shipped() uint64 {
	var n uint64
	for _, c := range r.Classes {
		n += c.Shipped
	}
	return n
}

// Left is the events left in the spool, over all classes: 0 means the
// node drained.
func (r ShutdownReport) Left() uint64 {
	var n uint64
	for _, c := range r.Classes {
		n += c.Left
	}
	return n
}

// LeftReason says why Shutdown left a class's events in the spool.
type LeftReason int

const (
	// LeftNone: nothing was left.
	LeftNone LeftReason = iota
	// LeftDeferred: the degradation level deferred the class (by its
	// plan, or at level 3 because the link failed), and a deferred class
	// is not drained: it stopped without sending its backlog.
	LeftDeferred
	// LeftUpstreamDown: the context ended while the upstream was not
	// taking the class's batches: disconnected, the link failed (link
	// level 3), or its publishes failing.
	LeftUpstreamDown
	// LeftDeadline: the context ended while the class was still shipping:
	// its backlog needed more time than the drain had.
	LeftDeadline
	// LeftOther: none of the above; the class finished while the spool
	// still held unacknowledged events, as after a failed spool ack
	// (logged). The next start sends them and JetStream drops the copies.
	LeftOther
)

func (r LeftReason) String() string {
	switch r {
	case LeftNone:
		return "none"
	case LeftDeferred:
		return "deferred"
	case LeftUpstreamDown:
		return "upstream_down"
	case LeftDeadline:
		return "deadline"
	case LeftOther:
		return "other"
	}
	return "LeftReason(" + strconv.Itoa(int(r)) + ")"
}

// Close is Shutdown with DefaultShutdownTimeout.
func (n *Node) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
	defer cancel()
	return n.Shutdown(ctx)
}

// classNames lists the classes Ingest accepts, for error messages.
func (n *Node) classNames() string {
	var names []string
	for _, c := range n.opts.Classes {
		if n.byName[c.Name] != nil {
			names = append(names, c.Name)
		}
	}
	return strings.Join(names, ", ")
}

// backlog returns the raw bytes ingested and not yet cut into batches by
// the classes that are not deferred, and the longest time a batch of an
// urgent class has been waiting to go (CoDel's sojourn). Bulk classes wait
// by design when the link is full, so their waits are not a standing queue.
func (n *Node) backlog(now time.Time) (bytes int64, sojourn time.Duration) {
	for _, l := range n.lanes {
		// Deferred backlog counts too: the estimator probes only with
		// data waiting, and a probe is filled from deferred classes.
		bytes += l.bt.pending.Load()
		if act, _ := l.action(); act.Kind == priority.ActionDefer {
			continue
		}
		if w := l.pub.waiting.Load(); w != 0 && l.cfg.Load().urgent {
			sojourn = max(sojourn, now.Sub(time.Unix(0, w)))
		}
	}
	return bytes, sojourn
}

// wireRatio is the bytes published per raw byte so far, over all classes
// (1 before anything was published).
func (n *Node) wireRatio() float64 {
	var raw, wire uint64
	for _, l := range n.lanes {
		raw += l.stats.rawBytes.Load()
		wire += l.stats.wireBytes.Load()
	}
	if raw == 0 || wire == 0 {
		return 1
	}
	return float64(wire) / float64(raw)
}

// SpoolID returns the id of the node's spool, the first part of every
// batch's Nats-Msg-Id.
func (n *Node) SpoolID() string { return n.spool.ID() }

// watchUpstream makes sure the stream exists and keeps the node's promises
// (ensureStream): at the start and at every (re)connection (a server may
// come back with an empty store), creating it if needed (never changing a
// stream that exists) and retrying with backoff, at most a second apart,
// until it succeeds; a refused stream is looked at again every RetryMax. Each success tells
// the lanes the upstream is back (shaping.upAfter), so that batches which
// failed while it was away go again now, not when their backoff ends:
// waiting out RetryMax stalled a fresh upstream's drain by seconds.
// Publishes before the stream exists fail and are retried by their lanes.
func (n *Node) watchUpstream() {
	connected := n.opts.Conn.StatusChanged(nats.CONNECTED)
	defer n.opts.Conn.RemoveStatusListener(connected)
	// A check is one small request: retried at most a second apart, so
	// that a JetStream still starting (or electing its meta leader) after
	// a connection does not hold the drain for RetryMax.
	reset := func() backoff {
		return backoff{min: min(n.opts.RetryMin, time.Second), max: min(n.opts.RetryMax, time.Second)}
	}
	b := reset()
	var retry <-chan time.Time // nil once the stream is there
	for {
		refused, err := n.ensureStream()
		switch {
		case err != nil:
			n.gate.settle()
			if b.attempt == 3 {
				n.opts.Logger.Warn("upstream stream not ready, retrying", "stream", n.opts.Stream, "err", err)
			}
			retry = time.After(b.next())
		case refused:
			// Looked at again until someone fixes it.
			retry = time.After(n.opts.RetryMax)
		default:
			retry = nil
			n.drv.signalUp()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-connected:
			b = reset()
		case <-retry:
		}
	}
}

// syncEvery bounds the loss window of spool.FsyncInterval for classes that
// go idle: the spool itself only fsyncs at its next commit.
func (n *Node) syncEvery() {
	t := time.NewTicker(n.opts.Spool.FsyncInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			if err := n.spool.Sync(); err != nil {
				n.opts.Logger.Error("spool sync", "err", err)
			}
		}
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "sluice"
	}
	return h
}
