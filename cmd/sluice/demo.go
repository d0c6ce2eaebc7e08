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
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/embedded"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/priority"
)

// The demo's link: 20 Mbit/s and 20 ms each way at full rate, 5 Mbit/s
// while degraded.
const (
	demoFullRate     = 20 * linkemu.Mbit
	demoDegradedRate = 5 * linkemu.Mbit
	demoLatency      = 20 * time.Millisecond
	demoLinkBytes    = 20e6 / 8 // Link.Ceil, bytes/s
	demoDrainTimeout = 10 * time.Second
)

// demoPhase is one step of the demo's link schedule.
type demoPhase struct {
	name string
	at   time.Duration
	rate linkemu.Rate
	down bool
}

// demoSchedule scales the link script to d: full rate, 5 Mbit/s from 25%,
// a blackhole from 55% lasting d/12 (5 s of a minute), 5 Mbit/s again
// after it, and full rate from 65%.
func demoSchedule(d time.Duration) []demoPhase {
	at := func(pct int) time.Duration { return d * time.Duration(pct) / 100 }
	return []demoPhase{
		{name: "full", at: 0, rate: demoFullRate},
		{name: "step-down", at: at(25), rate: demoDegradedRate},
		{name: "outage", at: at(55), rate: demoDegradedRate, down: true},
		{name: "step-down", at: at(55) + d/12, rate: demoDegradedRate},
		{name: "recovered", at: at(65), rate: demoFullRate},
	}
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
		return "blackhole: nothing forwarded, connections held"
	}
	return fmt.Sprintf("%.0f Mbit/s, %s each way", float64(p.rate)/float64(linkemu.Mbit), demoLatency)
}

func (p demoPhase) settings() linkemu.Settings {
	s := linkemu.Symmetric(linkemu.Shape{Bandwidth: p.rate, Latency: demoLatency})
	if p.down {
		s.Outage = linkemu.OutageBlackhole
	}
	return s
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

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 60*time.Second, "stop after this long (the link schedule scales to it)")
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP address of the status page and the ingest endpoints")
	dataDir := fs.String("data-dir", "", "keep the spool and the NATS store here (default: a temporary directory, removed at exit)")
	logLevel := fs.String("log-level", "warn", "log `level` on stderr: debug, info, warn or error (debug shows every shaper decision)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice demo [flags]\n\n"+
			"Runs the whole product in one process: an embedded NATS server behind an emulated\n"+
			"20 Mbit/s link that steps down to 5 Mbit/s, blacks out and recovers, a node with\n"+
			"the default classes fed synthetic traffic, a live per-class table on stdout and\n"+
			"the status page on --listen.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *duration <= 0 {
		fmt.Fprintf(stderr, "sluice demo: --duration must be positive\n")
		return errUsage
	}
	dir := *dataDir
	if dir == "" {
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

	srv, err := embedded.Start(embedded.Options{Dir: filepath.Join(dir, "nats"), Port: -1})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := embedded.Shutdown(sctx, srv); err != nil {
			log.Warn("embedded nats-server shutdown", "err", err)
		}
	}()
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
	mux, stopOps, err := nodeMux("demo", node, handler, nil, log)
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
	fmt.Fprintf(stdout, "link: 20 Mbit/s, 20 ms each way; 5 Mbit/s at %s, outage at %s, back to 20 Mbit/s at %s\n",
		sched[1].at.Round(100*time.Millisecond), sched[2].at.Round(100*time.Millisecond), sched[4].at.Round(100*time.Millisecond))

	runCtx, stop := context.WithTimeout(ctx, *duration)
	defer stop()
	start := time.Now()
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
	tab := newDemoTable(node)
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
		case <-tick.C:
			if tty {
				fmt.Fprint(stdout, "\033[H\033[2J")
			}
			el := time.Since(start)
			tab.print(stdout, el, phaseAt(sched, el).name)
		}
	}
	tick.Stop()
	step.Stop()
	wg.Wait() // generators stopped
	// Wherever the script was, the link ends at full rate so the drain
	// can finish.
	_ = link.Set(sched[len(sched)-1].settings())

	// Drain: Shutdown stops intake and sends every spooled event, waiting
	// for their acks; the table goes on meanwhile.
	fmt.Fprintf(stdout, "\nstopped generating after %s; draining (up to %s)\n", time.Since(start).Round(time.Second), demoDrainTimeout)
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
		case <-tick.C:
			tab.print(stdout, time.Since(start), "drain")
		}
	}
	tick.Stop()
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	_ = hs.Shutdown(hctx)
	tab.summary(stdout, node.Stats(), time.Since(start))
	if serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
		return serr
	}
	return nil
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

// demoTable prints the per-class table from deltas of the node's stats.
type demoTable struct {
	node     *aggregator.Node
	prev     aggregator.Stats
	prevH    map[string]aggregator.Histogram
	prevAt   time.Time
	maxLevel int
}

func newDemoTable(node *aggregator.Node) *demoTable {
	return &demoTable{node: node, prev: node.Stats(), prevH: node.LatencyHistograms(), prevAt: time.Now()}
}

var demoClasses = []string{priority.ClassCritical, priority.ClassIngest, priority.ClassReplication, priority.ClassBackfill}

func (t *demoTable) print(w io.Writer, elapsed time.Duration, phase string) {
	s, h, now := t.node.Stats(), t.node.LatencyHistograms(), time.Now()
	dt := now.Sub(t.prevAt).Seconds()
	t.maxLevel = max(t.maxLevel, s.Link.Level)
	fmt.Fprintf(w, "\n%6.1fs  link %-9s  level %d  target %5.1f Mbit/s  delivery %5.1f Mbit/s\n",
		elapsed.Seconds(), phase, s.Link.Level, mbit(s.Link.Target), mbit(s.Link.Delivery))
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
}

func mbit(bytesPerSec int64) float64 { return float64(bytesPerSec) * 8 / 1e6 }

// summary prints what each class ingested and delivered, and what is
// still in the spool: not lost (a node sends it after its next start),
// but the demo's temporary spool goes with it.
func (t *demoTable) summary(w io.Writer, s aggregator.Stats, elapsed time.Duration) {
	t.maxLevel = max(t.maxLevel, s.Link.Level)
	fmt.Fprintf(w, "\nsummary after %s:\n", elapsed.Round(time.Second))
	var degraded, lost uint64
	for _, c := range demoClasses {
		cs := s.Classes[c]
		l := cs.Ingested - min(cs.Acked, cs.Ingested)
		lost += l
		degraded += cs.Degraded
		// spooled is the spool's own count of what is not acknowledged,
		// not ingested − delivered: the two agreeing is the check.
		fmt.Fprintf(w, "  %-12s ingested %8d  delivered %8d  batches %5d  degraded %5d  retries %4d  spooled %d\n",
			c, cs.Ingested, cs.Acked, cs.Batches, cs.Degraded, cs.Retries, cs.Depth)
	}
	fmt.Fprintf(w, "max level %d, %d level changes, %d degraded batches\n", t.maxLevel, s.Link.Transitions, degraded)
	if lost == 0 {
		fmt.Fprintln(w, "nothing lost: acked == ingested for every class")
	} else {
		fmt.Fprintf(w, "not drained: %d events still in the spool after %s (deferred classes wait for the level to fall; a node sends them after its next start)\n", lost, demoDrainTimeout)
		for _, c := range demoClasses {
			cs := s.Classes[c]
			fmt.Fprintf(w, "  %-12s depth %d  in flight %d batches  published %d  errors %d  deferrals %d\n",
				c, cs.Depth, cs.InFlight, cs.Published, cs.Errors, cs.Deferrals)
		}
		fmt.Fprintf(w, "  link: %+v\n", s.Link)
	}
}
