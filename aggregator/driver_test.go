package aggregator

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/spool"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// fakeNode is what a driver reads of a node, set by the test, and its
// clock.
type fakeNode struct {
	now        time.Time
	connected  bool
	backlog    int64
	sojourn    time.Duration
	ratio      float64
	spoolBytes int64
	spoolLive  int64
}

// testDriver is a driver over the default classes with the node's
// default options, reading fn and its clock.
func testDriver(t *testing.T, fn *fakeNode, unshaped bool) *driver {
	t.Helper()
	o := Options{
		Node: "edge", Subject: "sluice", MaxInFlight: 16, AckTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 5 * time.Second, RetryBudget: 0.1,
		DuplicateWindow: 10 * time.Minute, Classes: priority.Defaults(0),
		Link:   Link{Headroom: 0.8, Tick: 250 * time.Millisecond, Dwell: 10 * time.Second, Unshaped: unshaped},
		Logger: slog.New(slog.DiscardHandler),
	}
	d, err := newDriver(o, msgOverhead(o, "0123456789abcdef"), driverInputs{
		backlog:    func(time.Time) (int64, time.Duration) { return fn.backlog, fn.sojourn },
		ratio:      func() float64 { return fn.ratio },
		spoolBytes: func() (int64, int64) { return fn.spoolBytes, fn.spoolLive },
		connected:  func() bool { return fn.connected },
	}, func() time.Time { return fn.now })
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func classID(t *testing.T, name string) int {
	t.Helper()
	for i, c := range priority.Defaults(0) {
		if c.Name == name {
			return i
		}
	}
	t.Fatalf("no default class %q", name)
	return -1
}

// TestDriverLinkDownStepTable drives the tick over fixed instants (every
// 250 ms tick from 0 to 5 s) through a connection lost at 0.5 s and back
// at 3 s: the link counts as down only after a second away, then level 3
// (the link's own) defers the bulk classes and wakes the lanes once. Once
// the connection is back the dwell holds the level, but not the classes:
// the node recovers, and they act at the signals' level, 0.
func TestDriverLinkDownStepTable(t *testing.T) {
	fn := &fakeNode{now: t0, connected: true, ratio: 1}
	d := testDriver(t, fn, false)
	steps := []struct {
		t         float64
		connected bool
		level     int
		act       int  // the level the classes act at
		replDefer bool // replication deferred
	}{
		{0, true, 0, 0, false},
		{0.5, false, 0, 0, false}, // first tick not connected
		{1.25, false, 0, 0, false},
		{1.5, false, 3, 3, true}, // a second away: the link is down
		{2.75, false, 3, 3, true},
		{3.0, true, 3, 0, false}, // back: the level holds a dwell, the classes recover
		{5.0, true, 3, 0, false},
	}
	crit, repl := &priority.Defaults(0)[classID(t, "critical")], &priority.Defaults(0)[classID(t, "replication")]
	i := 0
	var changed <-chan struct{}
	for tick := 0; tick <= 20; tick++ {
		now := float64(tick) / 4
		for i+1 < len(steps) && steps[i+1].t <= now {
			i++
		}
		st := steps[i]
		fn.now, fn.connected = at(now), st.connected
		if changed == nil {
			changed = d.levelChanged()
		}
		d.tick(fn.now, d.tickIv)
		if steps[i].t != now {
			if got := d.Level(); got != st.level {
				t.Fatalf("t=%vs (between steps): level %d, want %d", now, got, st.level)
			}
			continue
		}
		if got := d.Level(); got != st.level {
			t.Fatalf("t=%vs: level %d, want %d", now, got, st.level)
		}
		if got := d.snap.Load(); got.Level != st.level || got.LinkLevel != d.linkLevel() {
			t.Fatalf("t=%vs: stats level %d link level %d, driver %d %d", now, got.Level, got.LinkLevel, st.level, d.linkLevel())
		}
		act, level := d.action(repl)
		if (act.Kind == priority.ActionDefer) != st.replDefer || level != st.act {
			t.Fatalf("t=%vs: replication %v at level %d, want deferred %v at %d", now, act.Kind, level, st.replDefer, st.act)
		}
		if act, _ := d.action(crit); act.Kind == priority.ActionDefer {
			t.Fatalf("t=%vs: critical deferred", now)
		}
		if st.level == 3 && now == 1.5 {
			if !isClosed(changed) {
				t.Fatalf("t=%vs: level changed to 3 without waking the lanes", now)
			}
			if got := d.transitions.Load(); got != 1 {
				t.Fatalf("t=%vs: %d transitions, want 1", now, got)
			}
			changed = nil
		}
	}
}

// TestDriverDeferredReserveOnDrain: a class the level defers does not
// wait for admission once the node drains: its batch stays claimed.
func TestDriverDeferredReserveOnDrain(t *testing.T) {
	fn := &fakeNode{now: t0, connected: false, ratio: 1}
	d := testDriver(t, fn, false)
	for s := 0.0; s <= 1.5; s += 0.25 {
		fn.now = at(s)
		d.tick(fn.now, d.tickIv)
	}
	if d.Level() != 3 {
		t.Fatalf("level %d after 1.5 s disconnected, want 3", d.Level())
	}
	drain := make(chan struct{})
	close(drain)
	ok, held := d.reserve(context.Background(), classID(t, "replication"), 1000, false, drain)
	if ok || held {
		t.Errorf("deferred class draining: reserve ok %v held %v, want false false", ok, held)
	}
}

// TestDriverUnshaped: unshaped, the driver admits at once, never acts on
// a class and gives no target to size batches by.
func TestDriverUnshaped(t *testing.T) {
	fn := &fakeNode{now: t0, connected: false, ratio: 1}
	d := testDriver(t, fn, true)
	for s := 0.0; s <= 2; s += 0.25 {
		fn.now = at(s)
		d.tick(fn.now, d.tickIv)
	}
	repl := &priority.Defaults(0)[classID(t, "replication")]
	if act, level := d.action(repl); act != (priority.Action{}) || level != 0 {
		t.Errorf("unshaped: action %+v at level %d", act, level)
	}
	if d.target() != 0 {
		t.Errorf("unshaped: target %d", d.target())
	}
	if ok, held := d.reserve(context.Background(), classID(t, "replication"), 1<<20, false, nil); !ok || held {
		t.Errorf("unshaped: reserve ok %v held %v", ok, held)
	}
	if d.window == nil || cap(d.window) != 16 {
		t.Errorf("unshaped: shared window %v", d.window)
	}
}

// TestDriverFailureDecisions: the retrier's decisions as the driver hands
// them out, at fixed instants: a batch too large is split, a timeout is
// retried after its backoff, never before the failure.
func TestDriverFailureDecisions(t *testing.T) {
	fn := &fakeNode{now: t0, connected: true, ratio: 1}
	d := testDriver(t, fn, false)
	for _, tc := range []struct {
		o    shaper.Outcome
		want shaper.Disposition
	}{
		{shaper.OutcomePayloadTooLarge, shaper.Split},
		{shaper.OutcomeTimeout, shaper.Retry},
		{shaper.OutcomeDisconnected, shaper.Retry},
	} {
		fn.now = fn.now.Add(time.Second)
		id := d.onSend(1000, true, true)
		sent := fn.now
		fn.now = fn.now.Add(100 * time.Millisecond)
		dec := d.onFailure(id, shaper.Attempt{FirstSent: sent, N: 1, Outcome: tc.o})
		if dec.Disposition != tc.want {
			t.Errorf("%v: %v, want %v", tc.o, dec.Disposition, tc.want)
		}
		if dec.Disposition == shaper.Retry && dec.At.Before(fn.now) {
			t.Errorf("%v: retry at %v, before the failure at %v", tc.o, dec.At, fn.now)
		}
		if got := time.Unix(0, d.lastOutcome.Load()); !got.Equal(fn.now) {
			t.Errorf("%v: last outcome %v, want the clock's %v", tc.o, got, fn.now)
		}
	}
}

func TestLinkDownAt(t *testing.T) {
	for _, tc := range []struct {
		name      string
		now       float64
		since     time.Time
		connected bool
		wantSince time.Time
		wantDown  bool
	}{
		{"connected", 5, at(1), true, time.Time{}, false},
		{"first seen away", 5, time.Time{}, false, at(5), false},
		{"away 0.75 s", 5.75, at(5), false, at(5), false},
		{"away 1 s", 6, at(5), false, at(5), true},
		{"back", 6.25, at(5), true, time.Time{}, false},
	} {
		since, down := linkDownAt(at(tc.now), tc.since, tc.connected)
		if !since.Equal(tc.wantSince) || down != tc.wantDown {
			t.Errorf("%s: since %v down %v, want %v %v", tc.name, since, down, tc.wantSince, tc.wantDown)
		}
	}
}

func TestInflightFull(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		critical                  bool
		bytes, inflight, capBytes int64
		want                      bool
	}{
		{"nothing in flight", false, 1 << 20, 0, 1000, false},
		{"room", false, 400, 500, 1000, false},
		{"just room", false, 500, 500, 1000, false},
		{"no room", false, 600, 501, 1000, true},
		{"critical past the cap", true, 600, 900, 1000, false},
		{"large batch needs half the cap", false, 10_000, 500, 1000, false},
		{"large batch, less than half free", false, 10_000, 501, 1000, true},
	} {
		if got := inflightFull(tc.critical, tc.bytes, tc.inflight, tc.capBytes); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFreshHealth(t *testing.T) {
	s := shaper.Snapshot{ErrorRate: 0.2, Inflation: 3, InflightMsgs: 4, Target: 1000}
	if got := freshHealth(s, at(5), at(0)); got != s {
		t.Errorf("outcome 5 s ago: %+v, want the snapshot as it is", got)
	}
	got := freshHealth(s, at(5.25), at(0))
	if got.ErrorRate != 0 || got.Inflation != 0 || got.InflightMsgs != 0 || got.Target != 1000 {
		t.Errorf("outcome 5.25 s ago: %+v, want error rate, inflation and in-flight cleared, the rest kept", got)
	}
}

func TestDemand(t *testing.T) {
	for _, tc := range []struct {
		in    int64
		dt    time.Duration
		ratio float64
		want  int64
	}{
		{1000, time.Second, 1, 1000},
		{1000, 250 * time.Millisecond, 0.5, 2000},
		{1000, 0, 1, 1_000_000}, // dt floored at 1 ms
	} {
		if got := demand(tc.in, tc.dt, tc.ratio); got != tc.want {
			t.Errorf("demand(%d, %v, %v) = %d, want %d", tc.in, tc.dt, tc.ratio, got, tc.want)
		}
	}
}

// TestDriverRunWakesDeferred runs the driver's tick goroutine and a
// deferred class's reserve in a synctest bubble: the connection gone for
// over a second takes the level to 3 at a tick, a bulk class then waits
// for admission without a timer (nothing but a level change, the drain
// or the end of the node can wake it), and the drain's start sends it
// back with its batch still claimed.
func TestDriverRunWakesDeferred(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNode{connected: false, ratio: 1}
		d := testDriver(t, fn, false)
		d.now = time.Now // the bubble's clock
		d.cpuEcho = false
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go d.run(ctx)

		time.Sleep(time.Second) // ticks at 0.25 .. 1 s: away 0.75 s
		synctest.Wait()
		if d.Level() != 0 {
			t.Fatalf("away 0.75 s: level %d", d.Level())
		}
		time.Sleep(250 * time.Millisecond)
		synctest.Wait()
		if d.Level() != 3 {
			t.Fatalf("away 1 s: level %d, want 3", d.Level())
		}

		drain := make(chan struct{})
		type result struct{ ok, held bool }
		res := make(chan result, 1)
		go func() {
			ok, held := d.reserve(ctx, classID(t, "replication"), 1000, false, drain)
			res <- result{ok, held}
		}()
		time.Sleep(time.Minute) // a minute of ticks at level 3
		synctest.Wait()
		select {
		case r := <-res:
			t.Fatalf("deferred class admitted at level 3: %+v", r)
		default:
		}
		close(drain)
		synctest.Wait()
		select {
		case r := <-res:
			if r.ok || !r.held {
				t.Fatalf("deferred class at the drain: ok %v held %v, want false true", r.ok, r.held)
			}
		default:
			t.Fatal("deferred class still waiting after the drain began")
		}
		cancel()
	})
}

// TestDriverDeferSendsNothing: a class deferred by the link's own part of
// the level sends nothing, whatever the estimator does: at every round its
// action stays a defer and it is refused admission, while the estimator
// probes upward too. (Probes were once filled from the deferred classes'
// backlog, and replication, deferred at level 2, still sent 84–458
// events/s in some seconds.)
func TestDriverDeferSendsNothing(t *testing.T) {
	fn := &fakeNode{now: t0, connected: true, ratio: 1, backlog: 1 << 20, spoolBytes: 1 << 20}
	d := testDriver(t, fn, false)
	repl := &priority.Defaults(0)[classID(t, "replication")]
	drain := make(chan struct{})
	close(drain) // a refused reserve returns at once
	// Rounds of 4 batches acked after rtt: 10 ms for 3 s, then 20 ms, a
	// queue of 10 ms on the path (inflation 2), which takes the link's
	// part of the level to 1 and defers replication (its plan defers it
	// from level 1), until 10 s later 20 ms is the path's minimum RTT.
	// The estimator probes upward throughout, at levels ≤ 2.
	probes, deferred := 0, 0
	rtt := 10 * time.Millisecond
	for fn.now = t0; fn.now.Before(at(20)); {
		if fn.now.After(at(3)) {
			rtt = 20 * time.Millisecond
		}
		ids := make([]uint64, 4)
		for j := range ids {
			ids[j] = d.onSend(10_000, true, false)
		}
		fn.now = fn.now.Add(rtt)
		for _, id := range ids {
			d.onAck(id)
		}
		// A tick after every round, so that none of the estimator's
		// states goes unseen.
		d.tick(fn.now, rtt)
		d.mu.Lock()
		state := d.est.SnapshotAt(fn.now).State
		d.mu.Unlock()
		if state == shaper.StateUp || state == shaper.StateStartup {
			probes++
		}
		if d.linkLevel() < 1 {
			continue
		}
		deferred++
		if act, level := d.action(repl); act.Kind != priority.ActionDefer {
			t.Fatalf("%v: replication %v at level %d (link %d, estimator %v), want defer", fn.now.Sub(t0), act.Kind, level, d.linkLevel(), state)
		}
		if ok, _ := d.reserve(context.Background(), classID(t, "replication"), 1000, false, drain); ok {
			t.Fatalf("%v: replication admitted at level %d (link %d, estimator %v)", fn.now.Sub(t0), d.Level(), d.linkLevel(), state)
		}
	}
	if deferred == 0 || probes == 0 {
		t.Fatalf("%d rounds at a link level ≥ 1, %d probing: the test covers neither a defer nor a probe", deferred, probes)
	}
}

// TestDriverDrainRate: a recovery drains at 0.95 of the capacity the
// target keeps 0.8 of; not recovering, unshaped, or with a headroom
// already that thin, the target alone.
func TestDriverDrainRate(t *testing.T) {
	fn := &fakeNode{now: t0, connected: true, ratio: 1}
	d := testDriver(t, fn, false)
	for _, tc := range []struct {
		recovering bool
		headroom   float64
		want       int64
	}{
		{true, 0.8, 1_900_000},
		{false, 0.8, 0},
		{true, 0.95, 0},
		{true, 0.5, 3_040_000},
	} {
		d.headroom = tc.headroom
		if got := d.drainRate(tc.recovering, 1_600_000); got != tc.want {
			t.Errorf("recovering %v headroom %v: %d, want %d", tc.recovering, tc.headroom, got, tc.want)
		}
	}
	if u := testDriver(t, fn, true); u.drainRate(true, 1_600_000) != 0 {
		t.Error("unshaped: a drain rate")
	}
}

// TestDriverTimeToFullDrain: the controller's time to full follows the
// spool's live bytes, not its disk space. During a drain with events
// still arriving the disk grows (a segment's file goes only once all of it
// is acknowledged), and fed as the backlog it read as a spool filling in
// under 5 minutes (64 MiB cap, 0.5 MiB/s): level 2 in the middle of a drain. The live bytes shrink,
// and the level stays 0; when they grow instead, the level rises.
func TestDriverTimeToFullDrain(t *testing.T) {
	for _, tc := range []struct {
		name             string
		diskRate, live   int64 // bytes per second
		wantTTF, wantLvl int   // the signal and the level after 30 s
	}{
		{"drain: disk grows, live shrinks", 1 << 19, -(1 << 18), 0, 0},
		{"filling: live grows", 1 << 19, 1 << 19, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := &fakeNode{now: t0, connected: true, ratio: 1, spoolBytes: 10 << 20, spoolLive: 8 << 20}
			d := testDriver(t, fn, false)
			d.capBytes = 64 << 20
			maxLevel := 0
			for tick := 1; tick <= 4*30; tick++ {
				fn.now = at(float64(tick) / 4)
				fn.spoolBytes += tc.diskRate / 4
				fn.spoolLive = max(0, min(fn.spoolLive+tc.live/4, fn.spoolBytes))
				d.tick(fn.now, 250*time.Millisecond)
				maxLevel = max(maxLevel, d.Level())
			}
			d.mu.Lock()
			st := d.ctl.Status()
			d.mu.Unlock()
			if got := st.Signals[shaper.SignalTimeToFull]; got != tc.wantTTF || d.Level() != tc.wantLvl {
				t.Fatalf("after 30 s: time-to-full signal %d level %d, want %d %d", got, d.Level(), tc.wantTTF, tc.wantLvl)
			}
			if tc.wantLvl == 0 && maxLevel > 0 {
				t.Fatalf("level %d during the drain", maxLevel)
			}
		})
	}
}

// TestSpoolUse: the live bytes are each class's live events at its mean
// event size, at most its disk space; a class with nothing appended since
// Open counts its disk space whole.
func TestSpoolUse(t *testing.T) {
	st := spool.Stats{Bytes: 1000 + 500 + 300 + 64, Classes: map[string]spool.ClassStats{
		"a": {Depth: 10, Bytes: 1000, Appended: 40, AppendedBytes: 1600}, // 10 × 40 B
		"b": {Depth: 100, Bytes: 500, Appended: 40, AppendedBytes: 1600}, // 4000 B > its disk
		"c": {Depth: 5, Bytes: 300},                                      // reopened, nothing appended
		"d": {Depth: 0, Bytes: 64, Appended: 8, AppendedBytes: 80},       // all acknowledged
	}}
	if disk, live := spoolUse(st); disk != 1864 || live != 400+500+300 {
		t.Fatalf("spoolUse: disk %d live %d, want 1864 1200", disk, live)
	}
}
