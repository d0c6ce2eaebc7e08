package aggregator_test

// Upstream faults (issue 7, part 2): the server stopped for a minute under
// load, the leader of an R3 stream crashing, the link reset in the middle
// of publishes. The verdict is the same for each: every event Ingest
// acknowledged is in the stream exactly once.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/wire"
)

// TestFaultServerDown60s stops the server for a minute (SLUICE_FAULT_DOWN
// overrides; 5 s with -short) while events keep coming, restarts it on the
// same port and store, and checks that the node resumes, drains its
// backlog and delivers every acknowledged event once.
func TestFaultServerDown60s(t *testing.T) {
	t.Parallel()
	down := 60 * time.Second
	if s := os.Getenv("SLUICE_FAULT_DOWN"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("SLUICE_FAULT_DOWN=%q: want a positive duration", s)
		}
		down = d
	} else if testing.Short() {
		down = 5 * time.Second
	}
	port := quietPort(t)
	srvDir := t.TempDir()
	srv := startAt(t, srvDir, port)
	nc := nodeConn(t, srv.ClientURL())
	n := faultNode(t, nc, nil)
	mon := watchNode(t, n)
	ld := startLoad(t, n, loadSpec{classes: []string{"critical", "ingest", "replication"}, rate: 300, pad: 100})
	mon.waitAcked(t, 0, 20*time.Second, "first acks")
	time.Sleep(2 * time.Second)

	shutdown(t, srv)
	downAt := time.Now()
	ingestAtDown := ld.ackedCount()
	time.Sleep(down)
	ingestInOutage := ld.ackedCount() - ingestAtDown
	ackedAtUp, depthAtUp := totals(n.Stats())

	srv = startAt(t, srvDir, port)
	upAt := time.Now()
	backlog := ld.ackedCount()
	resumed := mon.waitAcked(t, ackedAtUp, 60*time.Second, "publishing after the restart")
	cleared := mon.waitAcked(t, uint64(backlog)-1, 60*time.Second, "the backlog after the restart")
	time.Sleep(3 * time.Second) // steady load on the recovered link
	ld.stopLoad()
	drained := drainNode(t, n, 60*time.Second)
	mon.close()

	tally := checkExactlyOnce(t, connect(t, srv.ClientURL()), "SLUICE", ld)
	st := n.Stats()
	t.Logf("server down %v (stopped %s after the start): %d events acknowledged by Ingest during the outage, spool depth %d at the restart, max %d",
		down, downAt.Sub(mon.start).Round(time.Millisecond), ingestInOutage, depthAtUp, mon.maxDepth())
	t.Logf("publishing resumed %v after the restart; the %d events acknowledged by then were all acked upstream %v after it; drained %v after the load stopped; max level %d",
		resumed.Sub(upAt).Round(time.Millisecond), backlog, cleared.Sub(upAt).Round(time.Millisecond), drained.Round(time.Millisecond), mon.maxLevel())
	logTally(t, tally, st)
	if ingestInOutage == 0 {
		t.Error("no event acknowledged by Ingest while the server was down")
	}
	if depthAtUp == 0 {
		t.Error("spool depth 0 at the restart: the outage was not felt")
	}
}

// TestFaultClusterLeaderKill runs the node against a 3-server JetStream
// cluster and an R3 stream it did not create, crashes the stream's leader
// under load (its routes reset first, so it cannot hand its leadership
// over, as with kill -9), brings it back later, and checks exactly once
// from a surviving server.
func TestFaultClusterLeaderKill(t *testing.T) {
	t.Parallel()
	const stream, subject = "FAULTS_R3", "faults"
	c := startCluster(t, 3)
	admin := connect(t, c.urls())
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	waitJetStream(t, 60*time.Second, "create the R3 stream", func(ctx context.Context) error {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:       stream,
			Subjects:   []string{subject + ".>"},
			Storage:    jetstream.FileStorage,
			Replicas:   3,
			Duplicates: 5 * time.Minute,
		})
		return err
	})
	nc := nodeConn(t, c.urls())
	n := faultNode(t, nc, func(o *aggregator.Options) {
		o.Stream, o.Subject = stream, subject
		o.DuplicateWindow = 5 * time.Minute // the stream's
	})
	mon := watchNode(t, n)
	ld := startLoad(t, n, loadSpec{classes: []string{"critical", "ingest"}, rate: 300, pad: 100})
	mon.waitAcked(t, 0, 30*time.Second, "first acks")

	// Every replica current: the two that survive hold everything acked.
	leader := streamLeader(t, js, stream, true)
	time.Sleep(2 * time.Second)
	li := c.index(leader)
	if li < 0 {
		t.Fatalf("stream leader %q is not a server of the cluster", leader)
	}
	killAt := time.Now()
	c.crash(li)
	crashTook := time.Since(killAt)
	// Acks already on their way when the leader went are not a recovery.
	time.Sleep(300 * time.Millisecond)
	base, _ := totals(n.Stats())
	resumed := mon.waitAcked(t, base, 60*time.Second, "acks after the leader's crash")
	newLeader := streamLeader(t, js, stream, false)
	time.Sleep(3 * time.Second)

	c.restart(li)
	restartAt := time.Now()
	time.Sleep(3 * time.Second)
	ld.stopLoad()
	drained := drainNode(t, n, 60*time.Second)
	mon.close()

	survivor := (li + 1) % 3
	tally := checkExactlyOnce(t, connect(t, c.url(survivor)), stream, ld)
	gap, gapEnd := mon.ackGap(killAt)
	t.Logf("leader %s crashed %s after the start (took %v); acks resumed %v after the crash, under leader %s; longest time without acks %v (ending %v after the crash); crashed server back %s after the start; drained %v after the load stopped; max level %d",
		leader, killAt.Sub(mon.start).Round(time.Millisecond), crashTook.Round(time.Millisecond),
		resumed.Sub(killAt).Round(time.Millisecond), newLeader, gap.Round(time.Millisecond),
		gapEnd.Sub(killAt).Round(time.Millisecond), restartAt.Sub(mon.start).Round(time.Millisecond),
		drained.Round(time.Millisecond), mon.maxLevel())
	logTally(t, tally, n.Stats())
	if newLeader == leader {
		t.Errorf("stream leader still %s after its crash", leader)
	}
}

// streamLeader returns the name of the stream's leader; with current, once
// every replica is also current.
func streamLeader(t testing.TB, js jetstream.JetStream, stream string, current bool) string {
	t.Helper()
	var leader string
	waitJetStream(t, 60*time.Second, "stream leader", func(ctx context.Context) error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		cl := info.Cluster
		if cl == nil || cl.Leader == "" {
			return errors.New("no leader")
		}
		if current {
			if len(cl.Replicas) != 2 {
				return fmt.Errorf("%d replicas besides the leader", len(cl.Replicas))
			}
			for _, p := range cl.Replicas {
				if !p.Current || p.Offline {
					return fmt.Errorf("replica %s: current %v, offline %v", p.Name, p.Current, p.Offline)
				}
			}
		}
		leader = cl.Leader
		return nil
	})
	return leader
}

// TestFaultLinkResetMidPublish resets the node's connection several times
// while large batches are on the link, so that publishes die half sent or
// their acks never come back. The node must recover each time, and the
// republished batches must be absorbed by the stream's duplicate window.
func TestFaultLinkResetMidPublish(t *testing.T) {
	t.Parallel()
	const (
		cuts       = 5
		cutFor     = 200 * time.Millisecond
		largeOnAir = 32 << 10 // bytes on the link that make a cut land mid-publish
	)
	srv := natstest.Start(t)
	link, err := linkemu.New(linkemu.Options{
		Upstream:   srv.Addr().String(),
		Settings:   linkemu.Symmetric(linkemu.Shape{Bandwidth: 40 * linkemu.Mbit, Latency: 20 * time.Millisecond}),
		OutageMode: linkemu.OutageReset,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	nc := nodeConn(t, "nats://"+link.Addr())
	n := faultNode(t, nc, nil)
	mon := watchNode(t, n)
	// Random hex padding compresses to about half: replication's 500 ms
	// batches are about 50 KB on the wire.
	ld := startLoad(t, n, loadSpec{classes: []string{"critical", "ingest", "replication"}, rate: 200, pad: 1000, random: true})
	mon.waitAcked(t, 0, 20*time.Second, "first acks")

	type cut struct {
		up   time.Time
		base map[string]uint64 // acked per class while the link was down
	}
	var (
		recoveries []string
		done       []cut
		mid        int
		dropped    int64
		resets     int64
	)
	for i := range cuts {
		onAir := waitOnAir(link, largeOnAir, 10*time.Second)
		if onAir >= largeOnAir {
			mid++
		}
		before := link.Stats()
		if err := link.SetDown(true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cutFor)
		st := n.Stats() // nothing can be acked while the link is down
		base, _ := totals(st)
		perClass := make(map[string]uint64)
		for _, c := range ld.classes {
			perClass[c] = st.Classes[c].Acked
		}
		if err := link.SetDown(false); err != nil {
			t.Fatal(err)
		}
		upAt := time.Now()
		done = append(done, cut{upAt, perClass})
		at := mon.waitAcked(t, base, 30*time.Second, fmt.Sprintf("acks after cut %d", i+1))
		d := link.Stats().Sub(before)
		dropped += d.Upstream.Dropped + d.Downstream.Dropped
		resets += d.Resets
		recoveries = append(recoveries, fmt.Sprintf("%v (%d B on air, %d B dropped)",
			at.Sub(upAt).Round(time.Millisecond), onAir, d.Upstream.Dropped+d.Downstream.Dropped))
		time.Sleep(time.Second)
	}
	ld.stopLoad()
	// The bulk classes can take tens of seconds to come back after the
	// cuts (see the figures logged below), and their backlog with them.
	drained := drainNode(t, n, 90*time.Second)
	mon.close()

	// How long each class waited after each cut: the first ack above is
	// any class's (critical's, as a rule).
	slowest := make(map[string]time.Duration)
	for _, c := range done {
		for class, d := range mon.classResumed(c.up, c.base) {
			if d < 0 { // not before the drain ended: at least that long
				d = time.Since(c.up)
			}
			slowest[class] = max(slowest[class], d)
		}
	}
	var perClass []string
	for _, class := range ld.classes {
		perClass = append(perClass, fmt.Sprintf("%s %v", class, slowest[class].Round(time.Millisecond)))
	}

	tally := checkExactlyOnce(t, connect(t, srv.ClientURL()), "SLUICE", ld)
	st := n.Stats()
	var errs uint64
	for _, c := range st.Classes {
		errs += c.Errors
	}
	t.Logf("%d cuts of %v, %d with ≥ %d B on the link: %d connections reset, %d B dropped, %d failed attempts; first ack after each cut: %s; longest wait for a class's first ack after a cut: %s; drained %v after the load stopped; max level %d",
		cuts, cutFor, mid, largeOnAir, resets, dropped, errs, strings.Join(recoveries, ", "), strings.Join(perClass, ", "), drained.Round(time.Millisecond), mon.maxLevel())
	logTally(t, tally, st)
	if resets < cuts {
		t.Errorf("%d connections reset by %d cuts", resets, cuts)
	}
	if dropped == 0 || errs == 0 {
		t.Errorf("%d B dropped, %d failed attempts: no cut landed mid-publish", dropped, errs)
	}
}

// waitOnAir waits until at least bytes are on the link towards the server
// (read from the node, not yet delivered), or timeout, and returns the
// most it saw.
func waitOnAir(link *linkemu.Link, bytes int64, timeout time.Duration) int64 {
	var most int64
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if b := link.Stats().Upstream.InFlight; b > most {
			most = b
			if most >= bytes {
				break
			}
		}
	}
	return most
}

// nodeConn connects a node to url as cmd/sluice does: reconnecting
// forever and without the client's reconnect buffer, so that publishes
// during an outage fail at once and the node's spool is the only buffer
// (with the client's, a retry given up on could still arrive and hide a
// loss).
func nodeConn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.Name("sluice faults"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// faultNode starts a node on nc, with a spool in a fresh directory, tuned
// to recover from these tests' faults in seconds (see newNode).
func faultNode(t testing.TB, nc *nats.Conn, mod func(*aggregator.Options)) *aggregator.Node {
	t.Helper()
	return newNode(t, t.TempDir(), nc, func(o *aggregator.Options) {
		o.Node = "faults"
		o.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
		if mod != nil {
			mod(o)
		}
	})
}

// loadSpec is a steady offered load.
type loadSpec struct {
	classes []string
	rate    float64 // events per second, per class
	pad     int     // padding bytes per event
	random  bool    // random hex padding (incompressible), else a constant
}

// faultLoad offers a loadSpec to a node, one goroutine per class, and
// remembers which events Ingest acknowledged. Event ids are
// "<class>-<seq>", seq counting from 0 per class.
type faultLoad struct {
	n       *aggregator.Node
	classes []string
	stop    chan struct{}
	wg      sync.WaitGroup

	mu       sync.Mutex
	acked    map[string][]bool // by class, by seq: Ingest returned nil
	refused  int
	firstErr error
	ackedN   atomic.Int64
}

func startLoad(t testing.TB, n *aggregator.Node, spec loadSpec) *faultLoad {
	ld := &faultLoad{n: n, classes: spec.classes, stop: make(chan struct{}), acked: make(map[string][]bool)}
	for ci, class := range spec.classes {
		ld.wg.Go(func() { ld.run(class, uint64(ci), spec) })
	}
	t.Cleanup(ld.stopLoad)
	return ld
}

// run keeps class at spec.rate from its start, catching up after a slow
// Ingest in calls of at most 500 events.
func (ld *faultLoad) run(class string, seed uint64, spec loadSpec) {
	rnd := rand.New(rand.NewPCG(seed, 7))
	pad := []byte(strings.Repeat("x", spec.pad))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	seq := 0
	for {
		select {
		case <-ld.stop:
			return
		case <-tick.C:
		}
		k := min(int(spec.rate*time.Since(start).Seconds())-seq, 500)
		if k <= 0 {
			continue
		}
		evs := make([][]byte, k)
		for i := range evs {
			if spec.random {
				for j := range pad {
					pad[j] = "0123456789abcdef"[rnd.IntN(16)]
				}
			}
			evs[i] = fmt.Appendf(nil, `{"id":"%s-%d","type":"track","properties":{"n":%d,"pad":"%s"}}`, class, seq+i, seq+i, pad)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := ld.n.Ingest(ctx, class, evs...)
		cancel()
		ld.record(class, k, err)
		seq += k
	}
}

func (ld *faultLoad) record(class string, k int, err error) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for range k {
		ld.acked[class] = append(ld.acked[class], err == nil)
	}
	if err != nil {
		ld.refused += k
		if ld.firstErr == nil {
			ld.firstErr = err
		}
		return
	}
	ld.ackedN.Add(int64(k))
}

// ackedCount is the number of events Ingest acknowledged so far.
func (ld *faultLoad) ackedCount() int64 { return ld.ackedN.Load() }

// stopLoad stops the load and waits for its goroutines. Idempotent.
func (ld *faultLoad) stopLoad() {
	ld.mu.Lock()
	select {
	case <-ld.stop:
	default:
		close(ld.stop)
	}
	ld.mu.Unlock()
	ld.wg.Wait()
}

// faultSample is a node's totals over all classes at one instant.
type faultSample struct {
	at           time.Time
	acked, depth uint64
	level        int
	classAcked   map[string]uint64
}

// faultMonitor samples a node's stats every 20 ms.
type faultMonitor struct {
	n     *aggregator.Node
	start time.Time
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	samples []faultSample
}

func watchNode(t testing.TB, n *aggregator.Node) *faultMonitor {
	m := &faultMonitor{n: n, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	t.Cleanup(m.close)
	return m
}

func (m *faultMonitor) run() {
	defer close(m.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := m.n.Stats()
		acked, depth := totals(st)
		ca := make(map[string]uint64, len(st.Classes))
		for name, c := range st.Classes {
			ca[name] = c.Acked
		}
		m.mu.Lock()
		m.samples = append(m.samples, faultSample{at: time.Now(), acked: acked, depth: depth, level: st.Link.Level, classAcked: ca})
		m.mu.Unlock()
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
	}
}

// close stops sampling. Idempotent.
func (m *faultMonitor) close() {
	m.mu.Lock()
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	m.mu.Unlock()
	<-m.done
}

// waitAcked returns the time of the first sample with more than above
// events acked upstream, waiting for it up to timeout raised to hangGuard;
// past that the test fails: the node is stuck.
func (m *faultMonitor) waitAcked(t testing.TB, above uint64, timeout time.Duration, what string) time.Time {
	t.Helper()
	deadline := guard(timeout)
	seen := 0
	for {
		m.mu.Lock()
		samples := m.samples[seen:]
		m.mu.Unlock()
		for _, s := range samples {
			if s.acked > above {
				return s.at
			}
		}
		seen += len(samples)
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %s: no more than %d events acked after %v; stats %+v", what, above, max(timeout, hangGuard), m.n.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ackGap returns the longest time between two consecutive increases of the
// acked count that ends after from, and when it ended.
func (m *faultMonitor) ackGap(from time.Time) (gap time.Duration, end time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var last faultSample
	for i, s := range m.samples {
		if i == 0 || s.acked > last.acked {
			if i > 0 && s.at.After(from) && s.at.Sub(last.at) > gap {
				gap, end = s.at.Sub(last.at), s.at
			}
			last = s
		}
	}
	return gap, end
}

// classResumed returns, for each class whose acked count was base[class]
// at from, how long after from it first grew; a class that never grew
// again maps to -1.
func (m *faultMonitor) classResumed(from time.Time, base map[string]uint64) map[string]time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]time.Duration, len(base))
	for class := range base {
		out[class] = -1
	}
	for _, s := range m.samples {
		if s.at.Before(from) {
			continue
		}
		for class, b := range base {
			if out[class] < 0 && s.classAcked[class] > b {
				out[class] = s.at.Sub(from)
			}
		}
	}
	return out
}

func (m *faultMonitor) maxDepth() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var d uint64
	for _, s := range m.samples {
		d = max(d, s.depth)
	}
	return d
}

func (m *faultMonitor) maxLevel() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var l int
	for _, s := range m.samples {
		l = max(l, s.level)
	}
	return l
}

// totals sums the events acked upstream and the spool depth of all classes.
func totals(st aggregator.Stats) (acked, depth uint64) {
	for _, c := range st.Classes {
		acked += c.Acked
		depth += c.Depth
	}
	return acked, depth
}

// drainNode waits until the spool is empty and nothing is in flight, then
// shuts the node down, so nothing more reaches the stream; it returns how
// long that took. A node that does not drain in timeout (raised to
// hangGuard) is stuck.
func drainNode(t testing.TB, n *aggregator.Node, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := guard(timeout)
	for {
		st := n.Stats()
		empty := true
		for _, c := range st.Classes {
			if c.Depth != 0 || c.InFlight != 0 {
				empty = false
			}
		}
		if empty {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: not drained after %v: %+v", max(timeout, hangGuard), st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("shutdown after the drain: %v", err)
	}
	return took
}

// faultTally is the exactly-once verdict of a stream against a load.
type faultTally struct {
	acked      int // events Ingest acknowledged
	delivered  int // of those, found in the stream
	lost       int // acknowledged, not in the stream
	duplicates int // extra copies of events in the stream
	unexpected int // events in the stream Ingest refused or never saw
	refused    int // events Ingest refused
	msgs       int // stream messages (batches)
	dupMsgIDs  int // messages whose Nats-Msg-Id an earlier message had
}

// checkExactlyOnce reads the whole stream through nc and fails the test
// unless every event ld had acknowledged is in it exactly once, and
// nothing else.
func checkExactlyOnce(t testing.TB, nc *nats.Conn, stream string, ld *faultLoad) faultTally {
	t.Helper()
	seen, msgs, dupIDs := readStream(t, nc, stream)
	ld.mu.Lock()
	defer ld.mu.Unlock()
	tl := faultTally{msgs: msgs, dupMsgIDs: dupIDs, refused: ld.refused}
	var lost, dup, odd []string
	for class, acks := range ld.acked {
		for seq, ok := range acks {
			id := class + "-" + strconv.Itoa(seq)
			c := seen[id]
			delete(seen, id)
			switch {
			case !ok && c > 0:
				tl.unexpected += c
				odd = append(odd, id)
			case !ok:
			case c == 0:
				tl.acked++
				tl.lost++
				lost = append(lost, id)
			default:
				tl.acked++
				tl.delivered++
				if c > 1 {
					tl.duplicates += c - 1
					dup = append(dup, id)
				}
			}
		}
	}
	for id, c := range seen { // ids the load never made
		tl.unexpected += c
		odd = append(odd, id)
	}
	if tl.lost > 0 || tl.duplicates > 0 || tl.unexpected > 0 {
		t.Errorf("not exactly once: %d of %d acknowledged events lost (e.g. %v), %d duplicate copies (e.g. %v), %d unexpected (e.g. %v); %d messages, %d with a repeated Nats-Msg-Id",
			tl.lost, tl.acked, head(lost), tl.duplicates, head(dup), tl.unexpected, head(odd), tl.msgs, tl.dupMsgIDs)
	}
	if tl.acked == 0 {
		t.Error("no event acknowledged")
	}
	if ld.firstErr != nil {
		t.Logf("Ingest refused %d events; first: %v", ld.refused, ld.firstErr)
	}
	return tl
}

func head(ids []string) []string { return ids[:min(len(ids), 5)] }

func logTally(t testing.TB, tl faultTally, st aggregator.Stats) {
	t.Helper()
	var dups, retries, errs uint64
	for _, c := range st.Classes {
		dups += c.Duplicates
		retries += c.Retries
		errs += c.Errors
	}
	t.Logf("acked %d, delivered %d, lost %d, duplicated %d, unexpected %d, refused %d; %d stream messages, %d repeated msg ids; node: %d retries, %d failed attempts, %d batches acked as duplicates by JetStream",
		tl.acked, tl.delivered, tl.lost, tl.duplicates, tl.unexpected, tl.refused, tl.msgs, tl.dupMsgIDs, retries, errs, dups)
}

// readStream reads every message of stream up to its last sequence at the
// time of the call, and counts each event id and repeated Nats-Msg-Ids.
func readStream(t testing.TB, nc *nats.Conn, stream string) (seen map[string]int, msgs, dupIDs int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var s jetstream.Stream
	var info *jetstream.StreamInfo
	waitJetStream(t, 30*time.Second, "stream info", func(ctx context.Context) error {
		if s, err = js.Stream(ctx, stream); err != nil {
			return err
		}
		info, err = s.Info(ctx)
		return err
	})
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.NewStreamDictionaries(js, stream)))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	seen = make(map[string]int)
	ids := make(map[string]bool)
	var seq uint64
	for seq < info.State.LastSeq {
		if ctx.Err() != nil {
			t.Fatalf("read %s: at seq %d of %d after 60 s", stream, seq, info.State.LastSeq)
		}
		mb, err := oc.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Logf("fetch from %s: %v", stream, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for m := range mb.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			seq = md.Sequence.Stream
			b, err := dec.Decode(m.Headers(), m.Data())
			if err != nil {
				t.Fatalf("decode %s seq %d: %v", stream, seq, err)
			}
			msgs++
			if id := m.Headers().Get(wire.HdrMsgID); ids[id] {
				dupIDs++
			} else {
				ids[id] = true
			}
			for _, ev := range b.Events {
				var e struct{ ID string }
				if err := json.Unmarshal(ev, &e); err != nil {
					t.Fatalf("seq %d: event %.100q: %v", seq, ev, err)
				}
				seen[e.ID]++
			}
		}
	}
	if msgs != int(info.State.Msgs) {
		t.Errorf("read %d messages of %s, its state says %d", msgs, stream, info.State.Msgs)
	}
	return seen, msgs, dupIDs
}

// TestFaultFreshUpstream starts a node whose upstream has never been up:
// its backlog spools while every attempt fails, then a server with an empty
// store (no stream yet) starts on the port. The node must create the
// stream and drain as soon as the server is there, not when its retry
// backoff next wakes (before the fix: 5.2 s with the default RetryMax of
// 5 s). Every backoff is up to a day here (the stream's check and the
// batches' retries), so a node that waited them out would hang; the drain
// is judged on reaching the state, within the hang guard, never on how
// fast it came (a node that draws a full-jitter backoff under hangGuard
// for every retry passes by luck: at most 1 run in 700).
func TestFaultFreshUpstream(t *testing.T) {
	t.Parallel()
	port := quietPort(t)
	nc := nodeConn(t, fmt.Sprintf("nats://127.0.0.1:%d", port))
	n := faultNode(t, nc, func(o *aggregator.Options) { o.RetryMin, o.RetryMax = 24*time.Hour, 24*time.Hour })
	const total = 20_000
	ingest(t, n, "ingest", 0, total, 100)
	// Wait until an attempt has failed: its retry is then up to a day
	// away, and only the upstream's return can bring it forward.
	for deadline := guard(0); n.Stats().Classes["ingest"].Errors == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: no failed attempt %v without a server: %+v", hangGuard, n.Stats().Classes["ingest"])
		}
	}
	if st := n.Stats().Classes["ingest"]; st.Acked != 0 || st.Depth != total {
		t.Fatalf("before the server: acked %d, depth %d", st.Acked, st.Depth)
	}
	srv := startAt(t, t.TempDir(), port)
	upAt := time.Now()
	for deadline := guard(0); n.Stats().Classes["ingest"].Acked < total; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: acked %d of %d %v after the server started: the node waits out its backoff", n.Stats().Classes["ingest"].Acked, total, hangGuard)
		}
	}
	timingBound(t, fmt.Sprintf("%d events drained after the server started", total), time.Since(upAt), 8*time.Second)
	seen := collect(t, connect(t, srv.ClientURL()), total, hangGuard)
	exactlyOnce(t, seen, total, "ingest")
}
