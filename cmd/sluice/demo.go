package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/embednats"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/wire"
)

// The demo's link: 20 Mbit/s and 20 ms each way at full rate, 5 Mbit/s
// while degraded.
const (
	demoFullRate     = 20 * linkemu.Mbit
	demoDegradedRate = 5 * linkemu.Mbit
	demoLatency      = 20 * time.Millisecond
	demoLinkBytes    = 20e6 / 8 // Link.Ceil, bytes/s
	demoDrainTimeout = 10 * time.Second
	demoStream       = "SLUICE" // aggregator.Options.Stream's default
)

// demoPhase is one step of the demo's link schedule, named after what the
// link does in it.
type demoPhase struct {
	name string
	at   time.Duration
	rate linkemu.Rate
	down bool
}

// demoSchedule scales the link script to d: 20 Mbit/s, 5 Mbit/s from 25%,
// a blackhole from 55% lasting d/12 (5 s of a minute), 5 Mbit/s again
// after it, and 20 Mbit/s from 65%.
func demoSchedule(d time.Duration) []demoPhase {
	at := func(pct int) time.Duration { return d * time.Duration(pct) / 100 }
	return []demoPhase{
		{name: rateName(demoFullRate), at: 0, rate: demoFullRate},
		{name: rateName(demoDegradedRate), at: at(25), rate: demoDegradedRate},
		{name: "blackhole", at: at(55), rate: demoDegradedRate, down: true},
		{name: rateName(demoDegradedRate), at: at(55) + d/12, rate: demoDegradedRate},
		{name: rateName(demoFullRate), at: at(65), rate: demoFullRate},
	}
}

func rateName(r linkemu.Rate) string {
	return fmt.Sprintf("%.0f Mbit/s", float64(r)/float64(linkemu.Mbit))
}

// phaseAt returns the phase in force at elapsed.
func phaseAt(sc []demoPhase, elapsed time.Duration) demoPhase {
	p := sc[0]
	for _, s := range sc {
		if s.at <= elapsed {
			p = s
		}
	}
	return p
}

func (p demoPhase) describe() string {
	if p.down {
		return "nothing forwarded, connections held"
	}
	return fmt.Sprintf("%s each way", demoLatency)
}

func (p demoPhase) settings() linkemu.Settings {
	s := linkemu.Symmetric(linkemu.Shape{Bandwidth: p.rate, Latency: demoLatency})
	if p.down {
		s.Outage = linkemu.OutageBlackhole
	}
	return s
}

// scheduleLine describes the whole link script in one line.
func scheduleLine(sc []demoPhase) string {
	parts := make([]string, len(sc))
	for i, p := range sc {
		parts[i] = fmt.Sprintf("%s from %s", p.name, p.at.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("link: %s; %s each way", strings.Join(parts, ", "), demoLatency)
}

// demoFlow is the synthetic traffic of one class.
type demoFlow struct {
	class string
	rate  float64 // events/s
	size  int     // approximate event bytes
}

// demoFlows: critical about 100 events/s, ingest about 60% of the link,
// replication about 30%, backfill in large events (another 5%), all in raw bytes
// before compression.
func demoFlows() []demoFlow {
	const link = demoLinkBytes
	return []demoFlow{
		{class: priority.ClassCritical, rate: 100, size: 250},
		{class: priority.ClassIngest, rate: 0.6 * link / 500, size: 500},
		{class: priority.ClassReplication, rate: 0.3 * link / 1000, size: 1000},
		{class: priority.ClassBackfill, rate: 0.05 * link / 4000, size: 4000},
	}
}

const demoUsage = `Usage: sluice demo [flags]

Runs the whole product in one process: an embedded NATS server behind an
emulated 20 Mbit/s link that steps down to 5 Mbit/s, blacks out and
recovers, a node with the default classes fed synthetic traffic, a live
per-class table on stdout and the status page on --listen.

When the time is up, the demo stops the traffic and drains the spool into
the stream for up to 10s, then prints a summary: per class what was
ingested, delivered (acknowledged by the stream), counted in the stream's
own batch headers, dropped and left in the spool. Events left in the spool
are discarded with the temporary data directory; with --data-dir they stay
there, and the next 'sluice demo --data-dir DIR' sends them.

Flags:
`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 60*time.Second, "stop after this long (the link schedule scales to it)")
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP address of the status page and the ingest endpoints")
	dataDir := fs.String("data-dir", "", "keep the spool and the NATS store in `DIR` (default: a temporary directory, removed at exit with whatever it holds)")
	logLevel := fs.String("log-level", "warn", "log `level` on stderr: debug, info, warn or error (debug shows every shaper decision)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), demoUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *duration <= 0 {
		fmt.Fprintf(stderr, "sluice demo: --duration must be positive\n")
		return errUsage
	}
	dir, temp := *dataDir, *dataDir == ""
	if temp {
		tmp, err := os.MkdirTemp("", "sluice-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "sluice demo: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return errUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	srv, err := embednats.Start(embednats.Options{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("embedded nats-server shutdown", "err", err)
		}
	}()
	// The demo reads the stream on a connection of its own that bypasses
	// the emulated link: the stream's own counts, whatever the link does.
	mon, err := nats.Connect(srv.ClientURL(), nats.Name("sluice demo monitor"))
	if err != nil {
		return fmt.Errorf("monitor connection: %w", err)
	}
	defer mon.Close()
	monJS, err := jetstream.New(mon)
	if err != nil {
		return err
	}
	before, err := streamState(ctx, monJS) // a kept --data-dir has a stream already
	if err != nil {
		return err
	}

	sched := demoSchedule(*duration)
	link, err := linkemu.New(linkemu.Options{
		Upstream: srv.Addr().String(),
		Settings: sched[0].settings(),
	})
	if err != nil {
		return err
	}
	defer link.Close()

	nc, err := nats.Connect("nats://"+link.Addr(),
		nats.Name("sluice demo"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(-1),
	)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	defer nc.Close()

	// Dwell scales with the run too, so the level comes back down (one step
	// per dwell) within the demo: 5 s for a minute.
	dwell := min(max(*duration/12, 500*time.Millisecond), 10*time.Second)
	node, err := aggregator.New(aggregator.Options{
		Node:    "demo",
		Dir:     filepath.Join(dir, "spool"),
		Conn:    nc,
		Stream:  demoStream,
		Classes: priority.Defaults(demoLinkBytes),
		Link:    aggregator.Link{Ceil: demoLinkBytes, Dwell: dwell},
		Logger:  log,
	})
	if err != nil {
		return err
	}
	nodeDown := false
	defer func() {
		if !nodeDown {
			node.Close()
		}
	}()

	handler, err := ingest.NewHandler(node, ingest.Options{Node: "demo", Logger: log})
	if err != nil {
		return err
	}
	mux, stopOps, err := nodeMux("demo", node, handler, nil, nil, log)
	if err != nil {
		return err
	}
	defer stopOps()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // ends with Shutdown below
	defer hs.Close()

	fmt.Fprintf(stdout, "sluice demo: status page at http://%s/ for %s (Ctrl-C stops early)\n", ln.Addr(), *duration)
	fmt.Fprintln(stdout, scheduleLine(sched))
	if temp {
		fmt.Fprintf(stdout, "data: %s, a temporary directory removed at exit (--data-dir keeps it)\n", dir)
	} else {
		fmt.Fprintf(stdout, "data: %s, kept at exit\n", dir)
	}
	fmt.Fprintln(stdout, "table, each second: level, target (the rate the shaper aims for) and backlog (events in the spool) as of\n"+
		"that time; in ev/s (ingested), out ev/s (acknowledged by the stream), p99 (ingest-to-ack latency of the batches\n"+
		"acknowledged) and delivered (bytes the stream stored) over the interval before it")

	runCtx, stop := context.WithTimeout(ctx, *duration)
	defer stop()
	start := time.Now()
	tab := newDemoTable(node.Stats, node.LatencyHistograms, func() (uint64, error) {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := streamState(sctx, monJS)
		return st.Bytes, err
	}, start)
	var wg sync.WaitGroup
	for i, f := range demoFlows() {
		wg.Go(func() { generate(runCtx, node, f, uint64(i)) })
	}

	tty := false
	if f, ok := stdout.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	// One loop applies the link script (announcing each step on its own
	// line, so a short outage between two tables shows) and prints the
	// table each second.
	tick := time.NewTicker(time.Second)
	next := 1 // sched[0] is the link's initial setting
	step := time.NewTimer(time.Until(start.Add(sched[next].at)))
	for done := false; !done; {
		select {
		case <-runCtx.Done():
			done = true
		case <-step.C:
			p := sched[next]
			if err := link.Set(p.settings()); err != nil {
				log.Warn("link", "err", err)
			}
			fmt.Fprintf(stdout, "\n%6.1fs  link -> %s (%s)\n", time.Since(start).Seconds(), p.name, p.describe())
			if next++; next < len(sched) {
				step.Reset(time.Until(start.Add(sched[next].at)))
			}
		case now := <-tick.C:
			if tty {
				fmt.Fprint(stdout, "\033[H\033[2J")
			}
			el := now.Sub(start)
			tab.print(stdout, now, el, "link "+phaseAt(sched, el).name)
		}
	}
	tick.Stop()
	step.Stop()
	wg.Wait() // generators stopped
	traffic := time.Since(start)
	// Wherever the script was, the link ends at full rate so the drain
	// can finish.
	last := sched[len(sched)-1]
	_ = link.Set(last.settings())

	// Drain: Shutdown stops intake and sends every spooled event, waiting
	// for their acks; the table goes on meanwhile.
	fmt.Fprintf(stdout, "\nstopped generating after %s; draining at %s (up to %s)\n",
		traffic.Round(100*time.Millisecond), last.name, demoDrainTimeout)
	dctx, dcancel := context.WithTimeout(context.Background(), demoDrainTimeout)
	defer dcancel()
	nodeDown = true
	shut := make(chan error, 1)
	go func() { shut <- node.Shutdown(dctx) }()
	var serr error
	tick.Reset(time.Second)
drain:
	for {
		select {
		case serr = <-shut:
			break drain
		case now := <-tick.C:
			tab.print(stdout, now, now.Sub(start), "drain, link "+last.name)
		}
	}
	tick.Stop()
	elapsed := time.Since(start)
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	_ = hs.Shutdown(hctx)
	// Nothing more can reach the stream once the node's connection and
	// the link are closed: then count what it holds.
	nc.Close()
	_ = link.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	got, cerr := countStream(sctx, monJS, before.LastSeq)
	after, aerr := streamState(sctx, monJS)
	if cerr == nil {
		cerr = aerr
	}
	got.Bytes = after.Bytes - min(before.Bytes, after.Bytes)
	tab.maxLevel = max(tab.maxLevel, node.Stats().Link.Level)
	printDemoSummary(stdout, demoResult{
		Stats:      node.Stats(),
		StartDepth: tab.startDepth,
		Stream:     got,
		StreamErr:  cerr,
		Traffic:    traffic,
		Elapsed:    elapsed,
		Drained:    serr == nil,
		MaxLevel:   tab.maxLevel,
		Dir:        dir,
		Temp:       temp,
	})
	if serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
		return serr
	}
	return nil
}

// streamState returns the state of the demo's stream; the zero state if
// it does not exist yet.
func streamState(ctx context.Context, js jetstream.JetStream) (jetstream.StreamState, error) {
	s, err := js.Stream(ctx, demoStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return jetstream.StreamState{}, nil
	}
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("stream %s: %w", demoStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("stream %s: %w", demoStream, err)
	}
	return info.State, nil
}

// demoStreamCount is what arrived in the stream during a run, from the
// batches' own headers.
type demoStreamCount struct {
	Batches int               // messages that are sluice batches
	Partial int               // of them, with Sluice-Dropped-Fields
	Events  map[string]uint64 // Sluice-Count summed, by Sluice-Class
	Bytes   uint64            // growth of the stream's stored bytes
}

// countStream reads the headers of every message of the demo's stream
// after sequence after, up to its last.
func countStream(ctx context.Context, js jetstream.JetStream, after uint64) (demoStreamCount, error) {
	c := demoStreamCount{Events: map[string]uint64{}}
	s, err := js.Stream(ctx, demoStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return c, err
	}
	last := info.State.LastSeq
	if last <= after || info.State.Msgs == 0 {
		return c, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   after + 1,
		HeadersOnly:   true,
	})
	if err != nil {
		return c, err
	}
	it, err := cons.Messages()
	if err != nil {
		return c, err
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return c, fmt.Errorf("read stream %s after seq %d: %w", demoStream, after, err)
		}
		if b, err := wire.ParseHeader(m.Headers()); err == nil {
			c.Batches++
			c.Events[b.Class] += uint64(b.Count)
			if len(b.Dropped) > 0 {
				c.Partial++
			}
		}
		md, err := m.Metadata()
		if err != nil {
			return c, err
		}
		if md.Sequence.Stream >= last {
			return c, nil
		}
	}
}

// generate ingests f's synthetic events at f.rate until ctx ends, in one
// call per 20 ms.
func generate(ctx context.Context, node *aggregator.Node, f demoFlow, seed uint64) {
	const step = 20 * time.Millisecond
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	start := time.Now()
	tick := time.NewTicker(step)
	defer tick.Stop()
	var sent, seq int
	var evs [][]byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds()*f.rate) - sent
		if due <= 0 {
			continue
		}
		evs = evs[:0]
		for range due {
			seq++
			evs = append(evs, demoEvent(rng, f, seq))
		}
		sent += due
		// A full class refuses at once; the table shows it as a gap
		// between in and out. Any error here is the node's to count.
		_ = node.Ingest(ctx, f.class, evs...)
	}
}

// demoEvent returns a Segment-like event of about f.size bytes. A third
// of it is random (base64, so it compresses like real ids and hashes do
// not), the rest repetitive JSON; ingest events carry the fields the
// default rules drop when the link degrades.
func demoEvent(rng *rand.Rand, f demoFlow, seq int) []byte {
	raw := make([]byte, f.size/4)
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	b := make([]byte, 0, f.size+64)
	b = append(b, `{"type":"track","event":"`...)
	b = append(b, f.class...)
	b = append(b, `_event","seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `,"userId":"user-`...)
	b = strconv.AppendInt(b, int64(rng.IntN(5000)), 10)
	b = append(b, `","properties":{"blob":"`...)
	b = base64.RawStdEncoding.AppendEncode(b, raw)
	b = append(b, `","path":"/products/`...)
	b = strconv.AppendInt(b, int64(rng.IntN(200)), 10)
	b = append(b, `","debug":"`...)
	for len(b) < f.size-150 {
		b = append(b, "trace span ok; "...)
	}
	b = append(b, `"},"context":{"library":{"name":"analytics.js","version":"4.1.0"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"},"_metadata":{"bundled":["Segment.io"]}}`...)
	return b
}

// demoTable prints the per-class table from deltas between two samples of
// the node's stats and of the bytes the stream holds. Time is an argument,
// so a test can step it.
type demoTable struct {
	stats  func() aggregator.Stats
	hists  func() map[string]aggregator.Histogram
	stored func() (uint64, error) // bytes the stream holds

	prev       aggregator.Stats
	prevH      map[string]aggregator.Histogram
	prevStored uint64
	storedOK   bool // prevStored is a sample
	prevAt     time.Time
	maxLevel   int               // highest level of the samples
	startDepth map[string]uint64 // each class's spool depth at the first sample
}

func newDemoTable(stats func() aggregator.Stats, hists func() map[string]aggregator.Histogram, stored func() (uint64, error), now time.Time) *demoTable {
	t := &demoTable{stats: stats, hists: hists, stored: stored, prev: stats(), prevH: hists(), prevAt: now, startDepth: map[string]uint64{}}
	t.prevStored, t.storedOK = sample(stored)
	t.maxLevel = t.prev.Link.Level
	for c, cs := range t.prev.Classes {
		t.startDepth[c] = cs.Depth
	}
	return t
}

func sample(f func() (uint64, error)) (uint64, bool) {
	v, err := f()
	return v, err == nil
}

var demoClasses = []string{priority.ClassCritical, priority.ClassIngest, priority.ClassReplication, priority.ClassBackfill}

// print prints the table for the interval from the previous sample to now.
// The delivered rate is the growth of the stream over that interval: 0
// while nothing arrives, "-" if the stream could not be read.
func (t *demoTable) print(w io.Writer, now time.Time, elapsed time.Duration, label string) {
	s, h := t.stats(), t.hists()
	stored, ok := sample(t.stored)
	dt := now.Sub(t.prevAt).Seconds()
	if dt <= 0 {
		dt = 1e-9
	}
	t.maxLevel = max(t.maxLevel, s.Link.Level)
	delivered := "    -"
	if ok && t.storedOK && stored >= t.prevStored {
		delivered = fmt.Sprintf("%5.1f", float64(stored-t.prevStored)*8/1e6/dt)
	}
	fmt.Fprintf(w, "\n%6.1fs  %-24s  level %d  target %5.1f Mbit/s  delivered %s Mbit/s\n",
		elapsed.Seconds(), label, s.Link.Level, mbit(s.Link.Target), delivered)
	fmt.Fprintf(w, "  %-12s %9s %9s %9s %9s\n", "class", "in ev/s", "out ev/s", "backlog", "p99")
	for _, c := range demoClasses {
		cs, ps := s.Classes[c], t.prev.Classes[c]
		p99 := "-"
		if d := h[c].Sub(t.prevH[c]); d.Count > 0 {
			p99 = d.Quantile(0.99).Round(time.Millisecond).String()
		}
		fmt.Fprintf(w, "  %-12s %9.0f %9.0f %9d %9s\n", c,
			float64(cs.Ingested-ps.Ingested)/dt, float64(cs.Acked-ps.Acked)/dt, cs.Depth, p99)
	}
	t.prev, t.prevH, t.prevAt = s, h, now
	t.prevStored, t.storedOK = stored, ok
}

func mbit(bytesPerSec int64) float64 { return float64(bytesPerSec) * 8 / 1e6 }

// demoResult is what the demo's summary reports.
type demoResult struct {
	Stats      aggregator.Stats  // the node's, after Shutdown
	StartDepth map[string]uint64 // each class's spool depth when the run started
	Stream     demoStreamCount   // what arrived in the stream during the run
	StreamErr  error             // why Stream could not be counted
	Traffic    time.Duration     // how long traffic was generated
	Elapsed    time.Duration     // traffic and drain
	Drained    bool              // Shutdown returned before its deadline
	MaxLevel   int               // highest level of the table's samples
	Dir        string            // data directory
	Temp       bool              // Dir is removed at exit
}

// printDemoSummary prints r: per class what was ingested, delivered (as
// the node counted acks), counted in the stream's batch headers, dropped
// and left in the spool, then the stream, the link, and what becomes of
// whatever was not delivered.
func printDemoSummary(w io.Writer, r demoResult) {
	drain := fmt.Sprintf("a drain of %s", (r.Elapsed - r.Traffic).Round(100*time.Millisecond))
	if !r.Drained {
		drain = fmt.Sprintf("a drain stopped at its %s limit", demoDrainTimeout)
	}
	fmt.Fprintf(w, "\nsummary after %s: traffic for %s, then %s\n",
		r.Elapsed.Round(100*time.Millisecond), r.Traffic.Round(100*time.Millisecond), drain)
	fmt.Fprintf(w, "  %-12s %10s %10s %10s %10s %10s %10s %10s %10s\n",
		"class", "ingested", "delivered", "in stream", "dropped", "in spool", "batches", "partial", "retries")
	var tot aggregator.ClassStats
	var totDropped, totStream, startDepth uint64
	var left []string
	for _, c := range demoClasses {
		cs := r.Stats.Classes[c]
		dropped := demoDropped(cs)
		in := "?"
		if r.StreamErr == nil {
			in = strconv.FormatUint(r.Stream.Events[c], 10)
		}
		fmt.Fprintf(w, "  %-12s %10d %10d %10s %10d %10d %10d %10d %10d\n",
			c, cs.Ingested, cs.Acked, in, dropped, cs.Depth, cs.Batches, cs.Degraded, cs.Retries)
		tot.Ingested += cs.Ingested
		tot.Acked += cs.Acked
		tot.Depth += cs.Depth
		tot.Batches += cs.Batches
		tot.Degraded += cs.Degraded
		tot.Retries += cs.Retries
		tot.Refused += cs.Refused
		totDropped += dropped
		totStream += r.Stream.Events[c]
		startDepth += r.StartDepth[c]
		if cs.Depth > 0 {
			left = append(left, fmt.Sprintf("%s %d", c, cs.Depth))
		}
	}
	in := "?"
	if r.StreamErr == nil {
		in = strconv.FormatUint(totStream, 10)
	}
	fmt.Fprintf(w, "  %-12s %10d %10d %10s %10d %10d %10d %10d %10d\n",
		"total", tot.Ingested, tot.Acked, in, totDropped, tot.Depth, tot.Batches, tot.Degraded, tot.Retries)
	fmt.Fprintln(w, "  (events; delivered: acknowledged by the stream, as the node counted; in stream: Sluice-Count of the\n"+
		"   batches that arrived, from the stream itself; dropped: expired, dropped by the spool or too large;\n"+
		"   batches: published; partial: published with fields dropped; retries: republishes)")
	if tot.Refused > 0 {
		fmt.Fprintf(w, "refused at intake: %d events (their class's spool was full), not counted as ingested\n", tot.Refused)
	}
	if startDepth > 0 {
		fmt.Fprintf(w, "the spool held %d events from an earlier run when this one started\n", startDepth)
	}

	if r.StreamErr != nil {
		fmt.Fprintf(w, "stream %s: could not be read: %v\n", demoStream, r.StreamErr)
	} else {
		fmt.Fprintf(w, "stream %s: %d batches (%d partial), %d events, %.1f MB stored in this run\n",
			demoStream, r.Stream.Batches, r.Stream.Partial, totStream, float64(r.Stream.Bytes)/1e6)
	}
	l := r.Stats.Link
	fmt.Fprintf(w, "link: level %d at the end, highest sampled %d, %d level changes; estimated capacity %.1f Mbit/s, target %.1f Mbit/s, smoothed RTT %s (min %s), error rate %.1f%%\n",
		l.Level, max(r.MaxLevel, l.Level), l.Transitions, mbit(l.Capacity), mbit(l.Target),
		l.SRTT.Round(time.Millisecond), l.MinRTT.Round(time.Millisecond), 100*l.ErrorRate)

	switch {
	case r.StreamErr != nil:
	case totStream == tot.Acked:
		fmt.Fprintf(w, "the stream received exactly the %d events the node saw acknowledged\n", tot.Acked)
	case totStream > tot.Acked:
		fmt.Fprintf(w, "the stream received %d events more than the node saw acknowledged: batches in flight when the drain stopped, stored without their ack reaching the node (they are still in the spool too)\n",
			totStream-tot.Acked)
	default:
		fmt.Fprintf(w, "the stream received %d events fewer than the node saw acknowledged: batches the stream already held from an earlier run (%d duplicate batches acknowledged)\n",
			tot.Acked-totStream, demoDuplicates(r.Stats))
	}
	if totDropped > 0 {
		fmt.Fprintf(w, "dropped: %d events were not sent (see the dropped column)\n", totDropped)
	}
	switch {
	case tot.Depth == 0 && totDropped == 0:
		fmt.Fprintln(w, "nothing lost: the spool is empty and every event this run ingested was delivered")
	case tot.Depth == 0:
		fmt.Fprintln(w, "the spool is empty")
	case r.Temp:
		fmt.Fprintf(w, "not drained: %d events were still in the spool when the demo stopped (%s); its data directory is temporary, so they are discarded with it. With --data-dir DIR they stay in DIR/spool and the next 'sluice demo --data-dir DIR' sends them\n",
			tot.Depth, strings.Join(left, ", "))
	default:
		fmt.Fprintf(w, "not drained: %d events are still in the spool in %s (%s); the next 'sluice demo --data-dir %s' sends them\n",
			tot.Depth, filepath.Join(r.Dir, "spool"), strings.Join(left, ", "), r.Dir)
	}
}

// demoDropped is how many of a class's events were not sent and are not in
// the spool: expired, dropped by the spool (for any reason) or too large.
func demoDropped(cs aggregator.ClassStats) uint64 {
	n := cs.Expired + cs.TooLarge
	for _, d := range cs.Dropped {
		n += d
	}
	return n
}

func demoDuplicates(s aggregator.Stats) uint64 {
	var n uint64
	for _, cs := range s.Classes {
		n += cs.Duplicates
	}
	return n
}
