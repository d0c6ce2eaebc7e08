package blast

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/wire"
)

// Load is one class's offered traffic in a scenario.
type Load struct {
	Class    string
	Rate     float64       // events per second
	Size     int           // approximate event size in bytes
	Entropy  float64       // fraction of the event that is random (incompressible), 0..1
	From, To time.Duration // when the load runs; To 0 = to the end
	// Events, if set, are real events (JSON objects) to cycle through
	// instead of generated ones; Size and Entropy are then unused.
	Events [][]byte `json:"-"`
	// ID prefixes the events' ids; default Class. Two loads of one class
	// need different ones.
	ID string `json:",omitempty"`
}

// Scenario is a run of a node over an emulated link to a real NATS server.
type Scenario struct {
	Name     string
	Link     linkemu.Settings // at the start
	Schedule linkemu.Schedule // later changes (Step.At from the start)
	Duration time.Duration    // load time; the run then drains for up to Drain
	Drain    time.Duration
	Loads    []Load
	Node     aggregator.Options // Conn, Dir filled in by Run
	// Burn runs a CPU burner beside the node for part of the run.
	Burn Burn
}

// Burn is a CPU burner beside the node: Threads threads spinning in a
// child process (see StartBurner) from From to To after the start (To 0:
// to the end of the load). Threads 0: none.
type Burn struct {
	Threads  int
	From, To time.Duration
}

// run burns from b.From to b.To after start, or until ctx ends.
func (b Burn) run(ctx context.Context, start time.Time) error {
	if !sleepCtx(ctx, time.Until(start.Add(b.From))) {
		return nil
	}
	br, err := StartBurner(b.Threads)
	if err != nil {
		return err
	}
	defer br.Stop()
	if b.To == 0 {
		<-ctx.Done()
		return nil
	}
	sleepCtx(ctx, time.Until(start.Add(b.To)))
	return nil
}

// Mode is how a scenario's events reach the stream.
type Mode string

const (
	// ModeSluice: a node with its shaper on.
	ModeSluice Mode = "sluice"
	// ModeUnshaped: a node with the shaper off (Link.Unshaped): one FIFO
	// window for every class, no degradation.
	ModeUnshaped Mode = "unshaped"
	// ModeNaive: no node; one JetStream publish per event (see naive).
	ModeNaive Mode = "naive"
)

// Modes are every mode, the node's first.
var Modes = []Mode{ModeSluice, ModeUnshaped, ModeNaive}

// Window is one second of a run.
type Window struct {
	T          float64 // seconds since the start, end of the window
	LinkBytes  int64   // bytes the link carried upstream (node → server)
	LinkQueue  int64   // bytes waiting at the upstream bottleneck at the end of the window
	Level      int
	Target     int64  // bytes/s
	Capacity   int64  // bytes/s
	Attempts   uint64 // publish attempts: first sends and retries
	FirstSends uint64 // publish attempts that were not retries
	Signals    [5]int // the controller's raw level per signal: inflation, errors, demand, queue, time to full
	Classes    map[string]WindowClass
}

// WindowClass is one class in one window.
type WindowClass struct {
	Ingested      uint64  // events accepted
	Delivered     uint64  // events delivered to the stream's consumer
	WireBytes     uint64  // bytes published (first sends)
	Batches       uint64  // messages published (first sends): batches, or events for the naive client
	P50, P95, P99 float64 // ms, end-to-end latency of events delivered in the window
	Backlog       uint64  // events accepted and not yet acknowledged by the stream
	Degraded      uint64  // batches delivered with dropped-field headers
	Dropped       uint64  // events lost on purpose: refused, expired by age, or dropped by a full client queue
}

// Outcome is what a scenario run measured.
type Outcome struct {
	Scenario string
	Mode     Mode
	Shaped   bool
	Windows  []Window
	// End to end (ingest → consumer) latency per class, ms, over the whole
	// run and over the events delivered after the first Warmup.
	P50, P99, P99Steady map[string]float64
	// Offered counts the events the generator made; Acknowledged those the
	// node accepted (durable), or, naive, those JetStream acknowledged.
	Offered, Acknowledged, Delivered, Duplicates map[string]uint64
	// Dropped counts events lost on purpose (refused, expired, or dropped
	// by the naive client's full queue).
	Dropped map[string]uint64
	// DegradedBatches counts batches whose headers said fields were dropped.
	DegradedBatches map[string]uint64
	// BatchesAtLevel counts delivered batches per class by the level in
	// their Sluice-Level header.
	BatchesAtLevel map[string]map[int]uint64
	// Drained: every acknowledged event was delivered before the drain
	// time ran out.
	Drained bool
	// FirstSends and Attempts count publishes over the run (attempts
	// include retries).
	FirstSends, Attempts uint64
	Final                aggregator.Stats
}

// ingester is where a generator offers its events: a node, or the naive
// client.
type ingester interface {
	Ingest(ctx context.Context, class string, evs ...[]byte) error
}

// Run runs the scenario once in mode, with the NATS server in a child
// process, and returns what it measured. progress, if not nil, receives
// each one-second window as it ends.
func (sc Scenario) Run(ctx context.Context, dir string, mode Mode, progress func(Window)) (*Outcome, error) {
	srv, err := StartServer(dir + "/nats")
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	upstream := srv.URL[len("nats://"):]
	link, err := linkemu.New(linkemu.Options{Upstream: upstream, Settings: sc.Link, Seed: 1})
	if err != nil {
		return nil, err
	}
	defer link.Close()
	connLog := func(msg string, err error) {
		if sc.Node.Logger != nil {
			sc.Node.Logger.Info(msg, "err", err)
		}
	}
	nc, err := nats.Connect("nats://"+link.Addr(), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond), nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { connLog("bench: upstream connection lost", err) }),
		nats.ReconnectHandler(func(*nats.Conn) { connLog("bench: upstream connection back", nil) }))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	direct, err := nats.Connect(srv.URL) // the consumer reads beside the link, not through it
	if err != nil {
		return nil, err
	}
	defer direct.Close()

	opts := sc.Node
	opts.Dir, opts.Conn = dir+"/spool", nc
	opts.Link.Unshaped = mode == ModeUnshaped
	if opts.Node == "" {
		opts.Node = "bench"
	}
	if opts.Stream == "" {
		opts.Stream = "SLUICE"
	}
	if opts.Subject == "" {
		opts.Subject = "sluice"
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		node *aggregator.Node
		nv   *naive
		sink ingester
	)
	if mode == ModeNaive {
		if err := createStream(ctx, direct, opts); err != nil {
			return nil, err
		}
		var classes []string
		for _, ld := range sc.Loads {
			if !slices.Contains(classes, ld.Class) {
				classes = append(classes, ld.Class)
			}
		}
		// The client keeps publishing through the drain: its own context,
		// not the generators'.
		nctx, ncancel := context.WithCancel(ctx)
		if nv, err = newNaive(nctx, nc, opts.Subject, classes); err != nil {
			ncancel()
			return nil, err
		}
		defer nv.stop()
		defer ncancel()
		sink = nv
	} else {
		if node, err = aggregator.New(opts); err != nil {
			return nil, err
		}
		defer node.Close()
		sink = node
	}

	out := &Outcome{Scenario: sc.Name, Mode: mode, Shaped: mode == ModeSluice,
		P50: map[string]float64{}, P99: map[string]float64{}, P99Steady: map[string]float64{},
		Offered: map[string]uint64{}, Acknowledged: map[string]uint64{}, Delivered: map[string]uint64{},
		Duplicates: map[string]uint64{}, Dropped: map[string]uint64{},
		DegradedBatches: map[string]uint64{}, BatchesAtLevel: map[string]map[int]uint64{}}
	cons, err := consume(ctx, direct, opts.Stream, time.Now().Add(Warmup))
	if err != nil {
		return nil, err
	}
	defer cons.stop()

	start := time.Now()
	go link.Run(runCtx, sc.Schedule)
	burnErr := make(chan error, 1)
	if sc.Burn.Threads > 0 {
		var burning sync.WaitGroup
		burning.Go(func() { burnErr <- sc.Burn.run(runCtx, start) })
		defer func() { cancel(); burning.Wait() }() // the burner never outlives the run
	}
	var gens sync.WaitGroup
	counts := make(map[string]*genCount)
	for _, ld := range sc.Loads {
		if counts[ld.Class] == nil {
			counts[ld.Class] = new(genCount)
		}
		count := counts[ld.Class]
		gens.Go(func() { generate(runCtx, sink, ld, start, sc.Duration, count) })
	}
	// acked is what the exactly-once check holds the stream to.
	acked := func(class string) uint64 {
		if nv != nil {
			return nv.classes[class].acked.Load()
		}
		return counts[class].acked.Load()
	}

	// One window a second until the load ends and the backlog drains.
	prevLink := link.Stats()
	prev := sc.sample(node, nv, counts)
	prevCons := cons.snapshot()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	drainBy := start.Add(sc.Duration + sc.Drain)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case now := <-tick.C:
			ls, cur, cs := link.Stats(), sc.sample(node, nv, counts), cons.snapshot()
			w := Window{T: now.Sub(start).Seconds(), LinkBytes: ls.Sub(prevLink).Upstream.Bytes, LinkQueue: ls.Upstream.Queued,
				Attempts: cur.attempts - prev.attempts, FirstSends: cur.firstSends - prev.firstSends,
				Classes: map[string]WindowClass{}}
			if node != nil {
				w.Level, w.Target, w.Capacity, w.Signals = cur.link.Level, cur.link.Target, cur.link.Capacity, cur.link.Signals
			}
			for name, c := range cur.classes {
				p := prev.classes[name]
				d := cs.classes[name]
				wc := WindowClass{
					Ingested: c.ingested - p.ingested, WireBytes: c.wire - p.wire, Batches: c.batches - p.batches,
					Delivered: d.delivered - prevCons.classes[name].delivered,
					Degraded:  d.degraded - prevCons.classes[name].degraded,
					Backlog:   c.backlog, Dropped: c.dropped - p.dropped,
				}
				wc.P50, wc.P95, wc.P99 = cons.windowQuantiles(name)
				w.Classes[name] = wc
			}
			out.Windows = append(out.Windows, w)
			prevLink, prev, prevCons = ls, cur, cs
			if progress != nil {
				progress(w)
			}
			if now.Sub(start) < sc.Duration {
				continue
			}
			cancel()
			drained := true
			for name := range counts {
				if cs.classes[name].delivered < acked(name) || cur.classes[name].backlog > 0 {
					drained = false
				}
			}
			if !drained && !now.After(drainBy) {
				continue
			}
			out.Drained = drained
			gens.Wait()
			if nv != nil {
				// The stream has acknowledged what the consumer may not
				// have read yet: give it a moment.
				for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
					behind := false
					for name := range counts {
						behind = behind || cons.snapshot().classes[name].delivered < acked(name)
					}
					if !behind {
						break
					}
				}
			}
			select {
			case err := <-burnErr:
				if err != nil {
					return nil, err
				}
			default:
			}
			if node != nil {
				out.Final = node.Stats()
			}
			cs = cons.snapshot()
			cur = sc.sample(node, nv, counts)
			out.FirstSends, out.Attempts = cur.firstSends, cur.attempts
			for name, c := range counts {
				out.Offered[name] = c.offered.Load()
				out.Acknowledged[name] = acked(name)
				out.Dropped[name] = cur.classes[name].dropped
				out.Delivered[name] = cs.classes[name].delivered
				out.Duplicates[name] = cs.classes[name].duplicates
				out.DegradedBatches[name] = cs.classes[name].degraded
				out.BatchesAtLevel[name] = cs.classes[name].levels
				out.P50[name], out.P99[name], out.P99Steady[name] = cons.quantiles(name)
			}
			return out, nil
		}
	}
}

// createStream creates the stream a node would, for the naive baseline.
func createStream(ctx context.Context, nc *nats.Conn, o aggregator.Options) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	dup := o.DuplicateWindow
	if dup <= 0 {
		dup = 10 * time.Minute
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: o.Stream, Subjects: []string{o.Subject + ".>"},
		Storage: jetstream.FileStorage, Duplicates: dup})
	return err
}

// genCount is a generator's count of one class's events.
type genCount struct {
	offered, acked, refused atomic.Uint64
}

// sample is the counters of a run at an instant, whatever its mode.
type sample struct {
	link                 aggregator.LinkStats
	firstSends, attempts uint64
	classes              map[string]sampleClass
}

type sampleClass struct {
	ingested, wire, batches, backlog, dropped uint64
}

func (sc Scenario) sample(node *aggregator.Node, nv *naive, counts map[string]*genCount) sample {
	s := sample{classes: map[string]sampleClass{}}
	if nv != nil {
		for name, c := range nv.classes {
			s.firstSends += c.firstSends.Load()
			s.attempts += c.attempts.Load()
			s.classes[name] = sampleClass{ingested: counts[name].acked.Load(), wire: c.wire.Load(), batches: c.firstSends.Load(),
				backlog: nv.backlog(name), dropped: c.dropped.Load()}
		}
		return s
	}
	st := node.Stats()
	s.link = st.Link
	for name, c := range st.Classes {
		s.firstSends += c.Batches
		s.attempts += c.Batches + c.Retries
		var dropped uint64
		for _, n := range c.Dropped {
			dropped += n
		}
		s.classes[name] = sampleClass{ingested: c.Ingested, wire: c.WireBytes, batches: c.Batches, backlog: c.Depth,
			dropped: c.Refused + c.Expired + dropped}
	}
	return s
}

func (w Window) String() string {
	s := fmt.Sprintf("t=%4.0fs link %5.2f Mbit/s level %d target %5.2f capacity %5.2f Mbit/s", w.T, float64(w.LinkBytes)*8/1e6, w.Level, float64(w.Target)*8/1e6, float64(w.Capacity)*8/1e6)
	names := make([]string, 0, len(w.Classes))
	for n := range w.Classes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		c := w.Classes[n]
		if c.Ingested == 0 && c.Delivered == 0 && c.Backlog == 0 {
			continue
		}
		s += fmt.Sprintf(" | %s in %d out %d p99 %.0fms backlog %d", n, c.Ingested, c.Delivered, c.P99, c.Backlog)
		if c.Dropped > 0 {
			s += fmt.Sprintf(" dropped %d", c.Dropped)
		}
	}
	return s
}

// generate offers ld's load to sink from start until the load's end, and
// counts the events offered and accepted.
func generate(ctx context.Context, sink ingester, ld Load, start time.Time, dur time.Duration, count *genCount) {
	to := ld.To
	if to == 0 {
		to = dur
	}
	if d := time.Until(start.Add(ld.From)); d > 0 && !sleepCtx(ctx, d) {
		return
	}
	const tick = 10 * time.Millisecond
	per := ld.Rate * tick.Seconds()
	t := time.NewTicker(tick)
	defer t.Stop()
	var due float64
	g := newEventGen(ld)
	for time.Since(start) < to {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due += per
		n := int(due)
		due -= float64(n)
		if n == 0 {
			continue
		}
		evs := g.next(n, time.Now().UnixNano())
		count.offered.Add(uint64(n))
		if err := sink.Ingest(ctx, ld.Class, evs...); err == nil {
			count.acked.Add(uint64(n))
		} else {
			count.refused.Add(uint64(n))
		}
	}
}

// eventGen makes a load's events: about Size bytes, Entropy of them random.
type eventGen struct {
	ld     Load
	pad    []byte
	random int
	seq    int
}

func newEventGen(ld Load) *eventGen {
	if ld.ID == "" {
		ld.ID = ld.Class
	}
	g := &eventGen{ld: ld, pad: make([]byte, max(ld.Size-130, 0))}
	g.random = int(float64(len(g.pad)) * ld.Entropy)
	for i := range g.pad {
		g.pad[i] = 'a' + byte(i%26)
	}
	return g
}

func (g *eventGen) next(n int, ts int64) [][]byte {
	evs := make([][]byte, n)
	for i := range evs {
		if len(g.ld.Events) > 0 {
			// A real event, with the id and creation time the consumer
			// measures put first.
			real := g.ld.Events[g.seq%len(g.ld.Events)]
			evs[i] = append(fmt.Appendf(nil, `{"ts":%d,"id":"%s-%d",`, ts, g.ld.ID, g.seq), real[1:]...)
			g.seq++
			continue
		}
		if g.random > 0 {
			raw := make([]byte, g.random*3/4+1)
			rand.Read(raw)
			copy(g.pad, base64.RawStdEncoding.EncodeToString(raw))
		}
		evs[i] = fmt.Appendf(nil, `{"ts":%d,"id":"%s-%d","type":"track","context":{"userAgent":"bench/1.0","library":{"name":"sluice-bench"}},"_metadata":{"gen":"bench"},"pad":"%s"}`,
			ts, g.ld.ID, g.seq, g.pad)
		g.seq++
	}
	return evs
}

// SampleEvents returns n events of ld, for calibration.
func SampleEvents(ld Load, n int) [][]byte { return newEventGen(ld).next(n, time.Now().UnixNano()) }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// consumer reads the stream beside the link and measures, per class,
// delivered events, duplicates and end-to-end latency.
type consumer struct {
	warm    int64 // unix ns: events delivered after it count as steady state
	mu      sync.Mutex
	cc      jetstream.ConsumeContext
	classes map[string]*consClass
}

type consClass struct {
	delivered, duplicates, degraded uint64
	levels                          map[int]uint64 // batches by Sluice-Level
	seen                            map[string]struct{}
	lat                             []float64 // ms, all events
	steady                          []float64 // ms, events delivered after warm
	win                             []float64 // ms, since the last windowP99
}

type consSnap struct{ classes map[string]consClass }

// Warmup is the start of a run left out of the steady-state latency.
const Warmup = 5 * time.Second

func consume(ctx context.Context, nc *nats.Conn, stream string, warm time.Time) (*consumer, error) {
	if stream == "" {
		stream = "SLUICE"
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	c := &consumer{classes: map[string]*consClass{}, warm: warm.UnixNano()}
	// The node creates the stream; wait for it.
	var oc jetstream.Consumer
	for {
		oc, err = js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		if err == nil {
			break
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return nil, err
		}
	}
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.NewStreamDictionaries(js, stream)))
	if err != nil {
		return nil, err
	}
	c.cc, err = oc.Consume(func(m jetstream.Msg) {
		now := time.Now().UnixNano()
		var b wire.Batch
		if h := nats.Header(m.Headers()); h.Get(wire.HdrCount) != "" {
			if b, err = dec.Decode(h, m.Data()); err != nil {
				fmt.Fprintln(os.Stderr, "bench: decode:", err)
				return
			}
		} else {
			// The naive baseline: one event per message, its class the
			// subject's last token.
			subj := m.Subject()
			b = wire.Batch{Class: subj[strings.LastIndexByte(subj, '.')+1:], Count: 1, Events: [][]byte{m.Data()}}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		cl := c.classes[b.Class]
		if cl == nil {
			cl = &consClass{seen: map[string]struct{}{}, levels: map[int]uint64{}}
			c.classes[b.Class] = cl
		}
		if len(b.Dropped) > 0 {
			cl.degraded++
		}
		cl.levels[b.Level]++
		for _, ev := range b.Events {
			ts, id := parseEvent(ev)
			if _, dup := cl.seen[id]; dup {
				cl.duplicates++
				continue
			}
			cl.seen[id] = struct{}{}
			cl.delivered++
			ms := float64(now-ts) / 1e6
			cl.lat = append(cl.lat, ms)
			if now > c.warm {
				cl.steady = append(cl.steady, ms)
			}
			cl.win = append(cl.win, ms)
		}
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *consumer) stop() { c.cc.Stop() }

func (c *consumer) snapshot() consSnap {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := consSnap{classes: map[string]consClass{}}
	for n, cl := range c.classes {
		s.classes[n] = consClass{delivered: cl.delivered, duplicates: cl.duplicates, degraded: cl.degraded, levels: maps.Clone(cl.levels)}
	}
	return s
}

// windowQuantiles returns the latency quantiles of class's events
// delivered since its last call.
func (c *consumer) windowQuantiles(class string) (p50, p95, p99 float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.classes[class]
	if cl == nil {
		return 0, 0, 0
	}
	slices.Sort(cl.win)
	p50, p95, p99 = sortedQuantile(cl.win, 0.5), sortedQuantile(cl.win, 0.95), sortedQuantile(cl.win, 0.99)
	cl.win = cl.win[:0]
	return p50, p95, p99
}

func (c *consumer) quantiles(class string) (p50, p99, p99steady float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.classes[class]
	if cl == nil {
		return 0, 0, 0
	}
	return Quantile(cl.lat, 0.5), Quantile(cl.lat, 0.99), Quantile(cl.steady, 0.99)
}

// Quantile is the q-quantile of xs (nearest rank), 0 if empty.
func Quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return sortedQuantile(s, q)
}

// sortedQuantile is the q-quantile of sorted s (nearest rank), 0 if empty.
func sortedQuantile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, max(0, int(math.Ceil(q*float64(len(s))))-1))]
}

// parseEvent reads the "ts" and "id" a generated event starts with.
func parseEvent(ev []byte) (ts int64, id string) {
	const pre = `{"ts":`
	if len(ev) < len(pre) || string(ev[:len(pre)]) != pre {
		return 0, string(ev)
	}
	rest := ev[len(pre):]
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	ts, _ = strconv.ParseInt(string(rest[:i]), 10, 64)
	rest = rest[i:]
	const idp = `,"id":"`
	if len(rest) > len(idp) && string(rest[:len(idp)]) == idp {
		rest = rest[len(idp):]
		for j := range rest {
			if rest[j] == '"' {
				return ts, string(rest[:j])
			}
		}
	}
	return ts, ""
}
