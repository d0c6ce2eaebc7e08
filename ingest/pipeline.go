package ingest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

// Pipeline is the one way an event takes from a front door to the Sink,
// whichever door it came in by. The door's decoder validates each event
// once (one JSON object on one line, at most MaxEventBytes); then the
// pipeline drops repeats (the dedup window), routes each event to its
// class, stamps it, groups the events by class and hands each group to
// the Sink; the door translates the outcome once (an HTTP status, a NATS
// ack, nak or term).
//
// The HTTP Handler (Pipeline.Handler) and the NATS source (StartNATS)
// share one Pipeline: one routing, one stamp, one set of limits, one
// memory budget and one dedup window. Reconfigure swaps the routing, the
// stamp and the event limits for both doors at once.
type Pipeline struct {
	sink  Sink
	valid validSink // sink, if it is one
	opts  Options   // fixed at NewPipeline; what Reconfigure changes is in live
	live  atomic.Pointer[pipeConfig]
	dedup *dedup
	// budget and preauth are Options.MaxInflightBytes: three quarters for
	// authorized requests and NATS batches, one for requests whose key
	// has not passed yet.
	budget, preauth *budget
	bufs            sync.Pool // *pipeBufs
}

// pipeConfig is what Reconfigure replaces whole: a request or a NATS
// batch loads it once and keeps it to its end.
type pipeConfig struct {
	keys          *keyring
	router        *priority.Router
	fields        []string // router.Fields()
	defaultClass  string
	node          string
	noStamp       bool
	maxEventBytes int
	maxEvents     int
}

// NewPipeline returns the pipeline of sink, or an error wrapping
// ErrInvalidOptions when a key, the default class or a limit is invalid.
func NewPipeline(sink Sink, opts Options) (*Pipeline, error) {
	opts.setDefaults()
	cfg, err := newPipeConfig(opts)
	if err != nil {
		return nil, err
	}
	pre := opts.MaxInflightBytes / 4
	p := &Pipeline{sink: sink, opts: opts,
		budget: newBudget(opts.MaxInflightBytes-pre, opts.BudgetWait), preauth: newBudget(pre, opts.BudgetWait)}
	p.valid, _ = sink.(validSink)
	p.live.Store(cfg)
	if opts.DedupWindow > 0 {
		p.dedup = newDedup(opts.DedupWindow, opts.DedupEntries)
	}
	p.bufs.New = func() any { return new(pipeBufs) }
	return p, nil
}

func newPipeConfig(o Options) (*pipeConfig, error) {
	if o.DefaultClass == "" {
		o.DefaultClass = DefaultClass
	}
	if !spool.ValidClass(o.DefaultClass) {
		return nil, fmt.Errorf("%w: default class %q", ErrInvalidOptions, o.DefaultClass)
	}
	kr, err := newKeyring(o.Keys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	var fields []string
	if o.Router != nil {
		fields = o.Router.Fields()
	}
	return &pipeConfig{keys: kr, router: o.Router, fields: fields, defaultClass: o.DefaultClass, node: o.Node, noStamp: o.NoStamp,
		maxEventBytes: cmpOr(o.MaxEventBytes, DefaultMaxEventBytes), maxEvents: cmpOr(o.MaxEvents, DefaultMaxEvents)}, nil
}

// plan returns what a door's validating pass collects to route the events
// of source: nothing when they have a class already (explicit) or there
// are no rules.
func (c *pipeConfig) plan(source, explicit string) scanPlan {
	if explicit != "" || c.router == nil {
		return scanPlan{}
	}
	return scanPlan{router: c.router, fields: c.fields, source: source}
}

func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Reconfigure replaces, for both doors at once, what a reload may change:
// Options.Keys, Router, DefaultClass, Node, NoStamp, MaxEventBytes and
// MaxEvents (a zero value takes the default, as in NewPipeline). A request
// or NATS batch in progress finishes with the configuration it started
// with. The other fields of opts are fixed at NewPipeline and ignored. On
// an invalid key or class nothing changes and the error wraps
// ErrInvalidOptions.
func (p *Pipeline) Reconfigure(opts Options) error {
	cfg, err := newPipeConfig(opts)
	if err != nil {
		return err
	}
	p.live.Store(cfg)
	return nil
}

// BudgetStats are the memory budget's two parts (Options.MaxInflightBytes)
// now: what authorized requests and NATS batches hold, and what requests
// whose write key has not passed hold, with the most each held at once.
type BudgetStats struct {
	AuthorizedBytes, AuthorizedPeak, AuthorizedSize int64
	PreAuthBytes, PreAuthPeak, PreAuthSize          int64
}

// Budget returns the memory budget's counters.
func (p *Pipeline) Budget() BudgetStats {
	pre, main := p.preauth.Stats(), p.budget.Stats()
	return BudgetStats{
		AuthorizedBytes: main.Used, AuthorizedPeak: main.Peak, AuthorizedSize: main.Size,
		PreAuthBytes: pre.Used, PreAuthPeak: pre.Peak, PreAuthSize: pre.Size,
	}
}

// pipeBatch is the events of one request or one NATS batch on their way
// through the pipeline.
type pipeBatch struct {
	cfg      *pipeConfig // loaded once for the batch
	source   string      // for routing rules: "events", "segment", …, "nats:"+subject
	scope    string      // the scope of the events' ids in the dedup window
	class    string      // the class of every event (?class=, a pinned key, a Subscription's Class), or ""
	keyClass string      // the class of the request's write key, or ""
	events   []Event     // validated by the door
}

// pipeBufs are a batch's working slices, pooled.
type pipeBufs struct {
	keys   []dedupKey
	idx    []int32
	groups map[string]*classGroup
	order  []*classGroup // the groups with events, in the order their classes appeared
	stamp  []byte
	arena  []byte
}

// classGroup is the events of one class in a batch.
type classGroup struct {
	class  string
	bodies [][]byte   // stamped
	keys   []dedupKey // the dedup key of each body; nil without dedup
	idx    []int32    // the index in pipeBatch.events of each body
}

// pipeOverhead is what prepare charges per event for its lists: a body's
// slice header, its dedup key and its index.
const pipeOverhead = 24 + 16 + 4

// prepare drops the repeats of b's events, routes, stamps and groups the
// others into bufs.order, charging m for the stamped copies and the lists
// before they are made. It returns the repeats dropped, or errBusy when
// the budget stayed spent (nothing is grouped then).
func (p *Pipeline) prepare(b *pipeBatch, bufs *pipeBufs, m *meter) (dups int, err error) {
	bufs.order = bufs.order[:0]
	idx := bufs.idx[:0]
	for i := range b.events {
		idx = append(idx, int32(i))
	}
	var keys []dedupKey
	if p.dedup != nil {
		keys = bufs.keys[:0]
		for i := range b.events {
			keys = append(keys, p.dedup.key(b.scope, b.events[i].ID))
		}
		keys, idx, dups = dedupFilterAt(p.dedup, p.opts.Now(), keys, idx)
		bufs.keys = keys
	}
	bufs.idx = idx
	if len(idx) == 0 {
		return dups, nil
	}

	// Stamp into one arena sized for the batch, so that no append moves
	// the events already in it.
	prefix := b.cfg.stampPrefix(bufs.stamp[:0], p.opts.Now())
	bufs.stamp = prefix
	size := 0
	if len(prefix) > 0 {
		for _, i := range idx {
			size += len(b.events[i].Body) + len(prefix) + 1
		}
	}
	if err := m.charge(int64(len(idx))*pipeOverhead + int64(size)); err != nil {
		return dups, err
	}
	arena := bufs.arena[:0]
	if cap(arena) < size {
		arena = make([]byte, 0, size)
	}
	if bufs.groups == nil {
		bufs.groups = make(map[string]*classGroup)
	}
	for k, i := range idx {
		ev, meta := b.events[i].Body, b.events[i].meta
		class := b.class
		if class == "" {
			class = b.keyClass
		}
		if class == "" && b.cfg.router != nil {
			// The door's validating pass routed the event (scan.go),
			// unless it had no reason to.
			if meta&metaRouted != 0 {
				class = b.cfg.router.RuleClass(meta.rule())
			} else {
				if traceScan != nil {
					traceScan(ev)
				}
				class = b.cfg.router.Route(b.source, ev)
			}
		}
		if class == "" {
			class = b.cfg.defaultClass
		}
		g := bufs.groups[class]
		if g == nil {
			g = &classGroup{class: class}
			bufs.groups[class] = g
		}
		if len(g.bodies) == 0 {
			bufs.order = append(bufs.order, g)
		}
		if len(prefix) > 0 {
			start := len(arena)
			arena = appendStampedMeta(arena, prefix, ev, meta)
			ev = arena[start:len(arena):len(arena)]
		}
		g.bodies = append(g.bodies, ev)
		g.idx = append(g.idx, i)
		if keys != nil {
			g.keys = append(g.keys, keys[k])
		}
	}
	bufs.arena = arena
	return dups, nil
}

// store hands one class's events to the Sink in one call and translates
// its answer. The events are valid (the doors' decoders checked them), so
// a validSink skips checking them again.
func (p *Pipeline) store(ctx context.Context, class string, bodies [][]byte) (outcome, error) {
	var err error
	if p.valid != nil {
		err = ingestValid(ctx, p.valid, class, bodies)
	} else {
		err = p.sink.Ingest(ctx, class, bodies...)
	}
	return outcomeOf(err), err
}

// commit records the ids of events the Sink made durable, so that their
// repeats are dropped.
func (p *Pipeline) commit(keys []dedupKey) {
	if p.dedup != nil {
		p.dedup.commitAt(p.opts.Now(), keys)
	}
}

func (p *Pipeline) getBufs() *pipeBufs { return p.bufs.Get().(*pipeBufs) }

func (p *Pipeline) putBufs(b *pipeBufs) {
	if cap(b.arena) > 4<<20 || cap(b.keys) > 1<<16 || len(b.groups) > 16 {
		return // an outsized batch: let it go
	}
	for _, g := range b.groups {
		clear(g.bodies)
		g.bodies, g.keys, g.idx = g.bodies[:0], g.keys[:0], g.idx[:0]
	}
	clear(b.order)
	b.order = b.order[:0]
	p.bufs.Put(b)
}

// timeNow is Options.Now's default.
func timeNow() time.Time { return time.Now() }
