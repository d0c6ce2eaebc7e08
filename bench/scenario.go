package bench

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
}

// Window is one second of a run.
type Window struct {
	T         float64 // seconds since the start, end of the window
	LinkBytes int64   // bytes the link carried upstream (node → server)
	Level     int
	Target    int64 // bytes/s
	Capacity  int64 // bytes/s
	Attempts  uint64
	Signals   [5]int // the controller's raw level per signal: inflation, errors, demand, queue, time to full
	Classes   map[string]WindowClass
}

// WindowClass is one class in one window.
type WindowClass struct {
	Ingested  uint64  // events accepted
	Delivered uint64  // events delivered to the stream's consumer
	WireBytes uint64  // compressed bytes published (first sends)
	P99       float64 // ms, end-to-end latency of events delivered in the window
	Backlog   uint64  // events spooled and not acknowledged
	Degraded  uint64  // batches delivered with dropped-field headers
}

// Outcome is what a scenario run measured.
type Outcome struct {
	Scenario string
	Shaped   bool
	Windows  []Window
	// End to end (ingest → consumer) latency per class, ms, over the whole
	// run and over the events delivered after the first Warmup.
	P50, P99, P99Steady map[string]float64
	// Exactly-once check, per class.
	Acknowledged, Delivered, Duplicates map[string]uint64
	// DegradedBatches counts batches whose headers said fields were dropped.
	DegradedBatches map[string]uint64
	// BatchesAtLevel counts delivered batches per class by the level in
	// their Sluice-Level header.
	BatchesAtLevel map[string]map[int]uint64
	// Drained: every acknowledged event was delivered before the drain
	// time ran out.
	Drained bool
	Final   aggregator.Stats
}

// Run runs the scenario once, shaped or not, with the NATS server in a
// child process, and returns what it measured. progress, if not nil,
// receives one line per second.
func (sc Scenario) Run(ctx context.Context, dir string, shaped bool, progress func(string)) (*Outcome, error) {
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
	nc, err := nats.Connect("nats://"+link.Addr(), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond), nats.ReconnectBufSize(-1))
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
	opts.Link.Unshaped = !shaped
	if opts.Node == "" {
		opts.Node = "bench"
	}
	node, err := aggregator.New(opts)
	if err != nil {
		return nil, err
	}
	defer node.Close()

	out := &Outcome{Scenario: sc.Name, Shaped: shaped,
		P50: map[string]float64{}, P99: map[string]float64{}, P99Steady: map[string]float64{},
		Acknowledged: map[string]uint64{}, Delivered: map[string]uint64{}, Duplicates: map[string]uint64{},
		DegradedBatches: map[string]uint64{}, BatchesAtLevel: map[string]map[int]uint64{}}
	cons, err := consume(ctx, direct, opts.Stream, time.Now().Add(Warmup))
	if err != nil {
		return nil, err
	}
	defer cons.stop()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	go link.Run(runCtx, sc.Schedule)
	var gens sync.WaitGroup
	acked := make(map[string]*atomic.Uint64)
	for _, ld := range sc.Loads {
		if acked[ld.Class] == nil {
			acked[ld.Class] = new(atomic.Uint64)
		}
		count := acked[ld.Class]
		gens.Go(func() { generate(runCtx, node, ld, start, sc.Duration, count) })
	}

	// One window a second until the load ends and the backlog drains.
	prevLink := link.Stats()
	prevNode := node.Stats()
	prevCons := cons.snapshot()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	drainBy := start.Add(sc.Duration + sc.Drain)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case now := <-tick.C:
			ls, ns, cs := link.Stats(), node.Stats(), cons.snapshot()
			w := Window{T: now.Sub(start).Seconds(), LinkBytes: ls.Sub(prevLink).Upstream.Bytes,
				Level: ns.Link.Level, Target: ns.Link.Target, Capacity: ns.Link.Capacity, Signals: ns.Link.Signals,
				Classes: map[string]WindowClass{}}
			for name, c := range ns.Classes {
				p := prevNode.Classes[name]
				w.Attempts += c.Batches - p.Batches + c.Retries - p.Retries
				d := cs.classes[name]
				w.Classes[name] = WindowClass{
					Ingested: c.Ingested - p.Ingested, WireBytes: c.WireBytes - p.WireBytes,
					Delivered: d.delivered - prevCons.classes[name].delivered,
					Degraded:  d.degraded - prevCons.classes[name].degraded,
					P99:       cons.windowP99(name), Backlog: c.Depth,
				}
			}
			out.Windows = append(out.Windows, w)
			prevLink, prevNode, prevCons = ls, ns, cs
			if progress != nil {
				progress(w.String())
			}
			if now.Sub(start) >= sc.Duration {
				cancel()
				drained := true
				for name, a := range acked {
					if cs.classes[name].delivered < a.Load() {
						drained = false
					}
				}
				if drained || now.After(drainBy) {
					out.Drained = drained
					gens.Wait()
					out.Final = node.Stats()
					cs = cons.snapshot()
					for name, a := range acked {
						out.Acknowledged[name] = a.Load()
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
	}
}

func (w Window) String() string {
	s := fmt.Sprintf("t=%4.0fs link %5.2f Mbit/s level %d target %5.2f Mbit/s", w.T, float64(w.LinkBytes)*8/1e6, w.Level, float64(w.Target)*8/1e6)
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
	}
	return s
}

// generate offers ld's load to node from start until the load's end, and
// counts the events acknowledged.
func generate(ctx context.Context, node *aggregator.Node, ld Load, start time.Time, dur time.Duration, acked *atomic.Uint64) {
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
		if err := node.Ingest(ctx, ld.Class, evs...); err == nil {
			acked.Add(uint64(n))
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
		if g.random > 0 {
			raw := make([]byte, g.random*3/4+1)
			rand.Read(raw)
			copy(g.pad, base64.RawStdEncoding.EncodeToString(raw))
		}
		evs[i] = fmt.Appendf(nil, `{"ts":%d,"id":"%s-%d","type":"track","context":{"userAgent":"bench/1.0","library":{"name":"sluice-bench"}},"_metadata":{"gen":"bench"},"pad":"%s"}`,
			ts, g.ld.Class, g.seq, g.pad)
		g.seq++
	}
	return evs
}

// sampleEvents returns n events of ld, for calibration.
func sampleEvents(ld Load, n int) [][]byte { return newEventGen(ld).next(n, time.Now().UnixNano()) }

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
	dec, err := wire.NewDecoder(0)
	if err != nil {
		return nil, err
	}
	c.cc, err = oc.Consume(func(m jetstream.Msg) {
		now := time.Now().UnixNano()
		b, err := dec.Decode(nats.Header(m.Headers()), m.Data())
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: decode:", err)
			return
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

func (c *consumer) windowP99(class string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.classes[class]
	if cl == nil {
		return 0
	}
	p := quantile(cl.win, 0.99)
	cl.win = cl.win[:0]
	return p
}

func (c *consumer) quantiles(class string) (p50, p99, p99steady float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.classes[class]
	if cl == nil {
		return 0, 0, 0
	}
	return quantile(cl.lat, 0.5), quantile(cl.lat, 0.99), quantile(cl.steady, 0.99)
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
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
