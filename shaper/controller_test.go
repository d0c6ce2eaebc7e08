package shaper

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// inflation is the input of a 40 ms path whose round-minimum RTT is v ×
// its minimum.
func inflation(v float64) Inputs {
	return Inputs{Link: Snapshot{Inflation: v, MinRtt: 40 * time.Millisecond}}
}

// TestControllerInflationFloor checks that RTT inflation on a
// sub-millisecond path counts only once the queueing delay reaches
// MinQueueDelay: a loopback's scheduling noise is not a queue.
func TestControllerInflationFloor(t *testing.T) {
	for _, tc := range []struct {
		minRtt    time.Duration
		inflation float64
		want      int
	}{
		{500 * time.Microsecond, 6, 0},  // 2.5 ms of queue: noise
		{500 * time.Microsecond, 12, 1}, // 5.5 ms: ≥ 4 but the level enters one confirm at a time
		{40 * time.Millisecond, 1.6, 1},
	} {
		c, _ := NewController(ControllerOptions{})
		in := Inputs{Link: Snapshot{Inflation: tc.inflation, MinRtt: tc.minRtt}}
		c.EvaluateAt(sec(0), in)
		if got := c.EvaluateAt(sec(0.25), in); got < tc.want || (tc.want == 0 && got != 0) {
			t.Errorf("min RTT %v inflation %v: level %d, want ≥ %d", tc.minRtt, tc.inflation, got, tc.want)
		}
	}
}

func mustController(t testing.TB) *Controller {
	t.Helper()
	c, err := NewController(ControllerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// §3 step table (tick 250 ms, only the inflation signal), at the listed
// instants and with every 250 ms tick in between.
func TestControllerStepTable(t *testing.T) {
	steps := []struct {
		t     float64
		infl  float64
		level int
	}{
		{0, 1.2, 0},
		{0.25, 1.7, 0}, // first tick above the L1 threshold
		{0.5, 1.7, 1},  // second consecutive tick
		{0.75, 2.6, 1}, // first tick above the L2 threshold
		{1.0, 2.6, 2},
		{1.25, 1.1, 2}, // dwell running
		{11.0, 1.1, 1}, // dwell elapsed; window max is 0
		{21.0, 1.1, 0},
	}
	t.Run("listed instants", func(t *testing.T) {
		c := mustController(t)
		for _, st := range steps {
			if got := c.EvaluateAt(sec(st.t), inflation(st.infl)); got != st.level {
				t.Fatalf("t=%vs inflation %v: level %d, want %d", st.t, st.infl, got, st.level)
			}
		}
	})
	t.Run("every tick", func(t *testing.T) {
		c := mustController(t)
		i := 0
		for tick := 0; tick <= 84; tick++ { // 0 .. 21 s
			now := float64(tick) / 4
			for i+1 < len(steps) && steps[i+1].t <= now {
				i++
			}
			got := c.EvaluateAt(sec(now), inflation(steps[i].infl))
			if steps[i].t == now && got != steps[i].level {
				t.Fatalf("t=%vs: level %d, want %d", now, got, steps[i].level)
			}
			if now > 1.0 && now < 11.0 && got != 2 {
				t.Fatalf("t=%vs: level %d during dwell", now, got)
			}
			if now > 11.0 && now < 21.0 && got != 1 {
				t.Fatalf("t=%vs: level %d during second dwell", now, got)
			}
		}
	})
}

func TestControllerLinkDownAndErrors(t *testing.T) {
	c := mustController(t)
	if got := c.EvaluateAt(sec(0), Inputs{LinkDown: true}); got != 3 {
		t.Fatalf("link down: level %d", got)
	}
	c = mustController(t)
	in := Inputs{Link: Snapshot{InflightMsgs: 3, LastAckAt: sec(0), RTO: time.Second}}
	if got := c.EvaluateAt(sec(4.75), in); got != 0 {
		t.Fatalf("no ack for 4.75 s: level %d", got)
	}
	c.EvaluateAt(sec(5), in)
	if got := c.EvaluateAt(sec(5.25), in); got != 3 {
		t.Fatalf("no ack for 5 s with inflight: level %d, want 3", got)
	}
	c = mustController(t)
	for i := range 3 {
		c.EvaluateAt(sec(float64(i)/4), Inputs{Link: Snapshot{ErrorRate: 0.12}})
	}
	if c.Level() != 2 {
		t.Errorf("12%% errors: level %d, want 2", c.Level())
	}
}

func TestControllerDemandAndBacklog(t *testing.T) {
	c := mustController(t)
	in := Inputs{Link: Snapshot{Target: 1000}, IngressBytesPerSec: 1600}
	// Ingress is smoothed over DemandTau (5 s): a sustained ρ = 1.6 passes
	// 1.0 after 5·ln(1.6/0.6) ≈ 4.9 s and 1.5 after 5·ln(16) ≈ 13.9 s (plus
	// a confirming tick each); a one-tick burst moves nothing.
	want := map[int]int{0: 0, 1: 0, 18: 0, 22: 1, 54: 1, 60: 2} // tick (250 ms) → level
	for i := 0; i <= 60; i++ {
		got := c.EvaluateAt(sec(float64(i)/4), in)
		if w, ok := want[i]; ok && got != w {
			t.Errorf("ρ=1.6 held %vs: level %d, want %d", float64(i)/4, got, w)
		}
	}
	// Demand alone stops at level 2, however high: level 3 would defer
	// the traffic that measures the link.
	c = mustController(t)
	for i := 0; i <= 240; i++ {
		c.EvaluateAt(sec(float64(i)/4), Inputs{Link: Snapshot{Target: 1000}, IngressBytesPerSec: 10_000})
	}
	if c.Level() != 2 {
		t.Errorf("ρ=10 held 60 s: level %d, want 2", c.Level())
	}
	c = mustController(t)
	c.EvaluateAt(sec(0), Inputs{Link: Snapshot{Target: 1000}, IngressBytesPerSec: 100_000})
	if got := c.EvaluateAt(sec(0.25), Inputs{Link: Snapshot{Target: 1000}}); got != 0 {
		t.Errorf("one burst tick: level %d, want 0", got)
	}
	// backlog growing 1 MB/s with 20 MB of room: time to full 20 s → L3.
	c = mustController(t)
	var lv int
	for i := 0; i <= 40; i++ {
		lv = c.EvaluateAt(sec(float64(i)/4), Inputs{BacklogBytes: int64(i) * 250_000, CapBytes: 30_000_000})
	}
	if lv != 3 || c.Status().Signals[SignalTimeToFull] != 3 {
		t.Errorf("fast-filling backlog: level %d status %+v", lv, c.Status())
	}
}

// CoDel detector: bursts that drain within one interval never flag; a
// queue above target for longer than the interval always does.
func TestControllerStandingQueue(t *testing.T) {
	c := mustController(t)
	for i := range 200 {
		soj := time.Duration(0)
		if i%4 != 3 { // 750 ms above target, then drained
			soj = 400 * time.Millisecond
		}
		c.EvaluateAt(sec(float64(i)/4), Inputs{Sojourn: soj, BacklogBytes: 1})
		if c.Status().Signals[SignalQueue] != 0 {
			t.Fatalf("burst flagged at tick %d", i)
		}
	}
	c = mustController(t)
	for i := 0; i <= 4; i++ {
		c.EvaluateAt(sec(float64(i)/4), Inputs{Sojourn: 400 * time.Millisecond, BacklogBytes: 1})
	}
	if c.Status().Signals[SignalQueue] != 1 {
		t.Fatalf("standing queue not flagged: %+v", c.Status())
	}
}

func (c *Controller) clone() *Controller {
	d := *c
	d.hist = slices.Clone(c.hist)
	return &d
}

func randomInputs(rng *rand.Rand) Inputs {
	return Inputs{
		Link:               Snapshot{Inflation: 1 + 4*rng.Float64(), MinRtt: 40 * time.Millisecond, ErrorRate: 0.4 * rng.Float64() * rng.Float64(), Target: 1000},
		IngressBytesPerSec: rng.Int64N(3500),
		Sojourn:            time.Duration(rng.IntN(400)) * time.Millisecond,
		BacklogBytes:       rng.Int64N(1000),
		CapBytes:           1 << 40,
	}
}

// §3 properties.
func TestControllerProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	t.Run("falls at most one step per dwell", func(t *testing.T) {
		c := mustController(t)
		var lastDown time.Time
		prev := 0
		for i := range 20000 {
			now := sec(float64(i) / 4)
			in := randomInputs(rng)
			if (i/400)%2 == 1 {
				in = Inputs{}
			}
			lv := c.EvaluateAt(now, in)
			if lv < prev {
				if prev-lv > 1 {
					t.Fatalf("fell %d→%d at once", prev, lv)
				}
				if !lastDown.IsZero() && now.Sub(lastDown) < DefaultDwell {
					t.Fatalf("fell twice within %v", now.Sub(lastDown))
				}
				lastDown = now
			}
			prev = lv
		}
	})
	t.Run("held input reaches its level", func(t *testing.T) {
		for lv, v := range []float64{1.5, 2.5, 4} {
			c := mustController(t)
			c.EvaluateAt(sec(0), inflation(v))
			if got := c.EvaluateAt(sec(0.25), inflation(v)); got < lv+1 {
				t.Errorf("inflation %v held 2 ticks: level %d", v, got)
			}
		}
	})
	t.Run("inside the band never changes", func(t *testing.T) {
		for lv, entry := range inflationEntry {
			c := mustController(t)
			c.EvaluateAt(sec(0), inflation(entry))
			c.EvaluateAt(sec(0.25), inflation(entry))
			for i := 2; i < 2000; i++ {
				v := entry*inflationExit + rng.Float64()*(entry-entry*inflationExit)
				if v >= entry {
					continue
				}
				if got := c.EvaluateAt(sec(float64(i)/4), inflation(v)); got != lv+1 {
					t.Fatalf("L%d band: inflation %v moved level to %d", lv+1, v, got)
				}
			}
		}
	})
	t.Run("raising an input never lowers the output", func(t *testing.T) {
		c := mustController(t)
		for i := range 5000 {
			now := sec(float64(i) / 4)
			in := randomInputs(rng)
			hi := in
			switch rng.IntN(4) {
			case 0:
				hi.Link.Inflation += rng.Float64()
			case 1:
				hi.Link.ErrorRate += rng.Float64() / 10
			case 2:
				hi.IngressBytesPerSec += rng.Int64N(1000)
			default:
				hi.Sojourn += time.Duration(rng.IntN(500)) * time.Millisecond
			}
			alt := c.clone()
			lo := c.EvaluateAt(now, in)
			if h := alt.EvaluateAt(now, hi); h < lo {
				t.Fatalf("tick %d: raised input gave level %d < %d", i, h, lo)
			}
		}
	})
}

func TestControllerAntiFlap(t *testing.T) {
	c := mustController(t)
	now := 0.0
	step := func(v float64, secs float64) {
		for end := now + secs; now < end; now += 0.25 {
			c.EvaluateAt(sec(now), inflation(v))
		}
	}
	step(1.7, 1)  // → L1
	step(1.0, 11) // dwell 10 s → L0
	if c.Level() != 0 {
		t.Fatalf("level %d, want 0", c.Level())
	}
	step(1.7, 1) // re-enter L1 within 60 s: dwell doubles
	if c.Status().Dwell != 2*DefaultDwell {
		t.Fatalf("dwell %v, want doubled", c.Status().Dwell)
	}
	step(1.0, 15)
	if c.Level() != 1 {
		t.Errorf("left L1 before the doubled dwell")
	}
	step(1.0, 6)
	if c.Level() != 0 {
		t.Errorf("level %d after doubled dwell", c.Level())
	}
}

// An outage is not congestion: once the link delivers again, the level
// goes straight to what the signals say, with no dwell, and the queue
// signal forgets the backlog the outage built. Without an ack since the
// outage began, the level falls only by the dwell rule.
func TestControllerOutageRecovery(t *testing.T) {
	c := mustController(t)
	soj := Inputs{Sojourn: time.Second, BacklogBytes: 1 << 20}
	for i := 0; i <= 40; i++ { // 10 s down with a growing, standing backlog
		in := soj
		in.LinkDown = true
		in.BacklogBytes += int64(i) << 20
		if got := c.EvaluateAt(sec(float64(i)/4), in); got != 3 {
			t.Fatalf("t=%vs link down: level %d", float64(i)/4, got)
		}
	}
	in := soj
	in.Link.LastAckAt = sec(-1) // the last ack is from before the outage
	if got := c.EvaluateAt(sec(10.25), in); got < 2 {
		t.Fatalf("connected, no ack yet: level %d, want one step per dwell at most", got)
	}
	in.Link.LastAckAt = sec(10.4)
	if got := c.EvaluateAt(sec(10.5), in); got != 0 {
		t.Fatalf("delivering again: level %d, want 0 (status %+v)", got, c.Status())
	}
	if c.Status().Dwell != DefaultDwell {
		t.Errorf("dwell %v after an outage, want %v", c.Status().Dwell, DefaultDwell)
	}
	// Real congestion right after still raises the level, confirmed.
	bad := inflation(2)
	bad.Link.LastAckAt = sec(10.7)
	c.EvaluateAt(sec(10.75), bad)
	if got := c.EvaluateAt(sec(11), bad); got != 1 {
		t.Errorf("inflation 2 after recovery: level %d, want 1", got)
	}
}

// A standing queue that shrinks is a backlog draining at the link's rate,
// not congestion; one that grows is.
func TestControllerDrainingQueue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delta int64 // backlog change per tick
		want  int
	}{
		{"draining", -100_000, 0},
		{"growing", +100_000, 1},
	} {
		c := mustController(t)
		for i := 0; i <= 12; i++ {
			c.EvaluateAt(sec(float64(i)/4), Inputs{Sojourn: 400 * time.Millisecond, BacklogBytes: 10_000_000 + int64(i)*tc.delta})
		}
		if got := c.Status().Signals[SignalQueue]; got != tc.want {
			t.Errorf("%s: queue signal %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A probe's own queue is not the link's: inflation is ignored while the
// estimator says it is probing.
func TestControllerIgnoresProbeInflation(t *testing.T) {
	c := mustController(t)
	in := inflation(3)
	in.Link.Probing = true
	for i := range 8 {
		if got := c.EvaluateAt(sec(float64(i)/4), in); got != 0 {
			t.Fatalf("probing, inflation 3: level %d, want 0", got)
		}
	}
}

// A blackhole never shows as a disconnect: most attempts fail and the
// level reaches 3 by the error signal. Once acks come back without errors
// the level follows the signals at once; a link still failing some of its
// attempts stays on the dwell rule.
func TestControllerErrorOutageRecovery(t *testing.T) {
	for _, tc := range []struct {
		name    string
		errRate float64 // after the acks come back
		want    int
	}{
		{"clean", 0, 0},
		{"flaky", 0.05, 3},
	} {
		c := mustController(t)
		for i := 0; i <= 120; i++ { // 30 s of failing attempts
			c.EvaluateAt(sec(float64(i)/4), Inputs{Link: Snapshot{ErrorRate: 0.9, LastAckAt: sec(-1)}})
		}
		if c.Level() != 3 {
			t.Fatalf("%s: failing link at level %d", tc.name, c.Level())
		}
		got := c.EvaluateAt(sec(30.25), Inputs{Link: Snapshot{ErrorRate: tc.errRate, LastAckAt: sec(30.1)}})
		if got != tc.want {
			t.Errorf("%s: level %d after acks came back, want %d", tc.name, got, tc.want)
		}
	}
}

// The level's link part (ControllerStatus.LinkLevel) against load. A
// full spool on a healthy link (time to full, then nothing shipped, so no
// growth) raises the level but not its link part; inflation raises both;
// the link part falls with the window; a backlog that stops growing lets
// time to full go, exactly (the EWMA lands on 0, not a few bytes/s above).
func TestControllerLinkLevel(t *testing.T) {
	const capB = 3 << 20
	full := func(backlog int64) Inputs {
		return Inputs{Link: Snapshot{MinRtt: time.Millisecond, Inflation: 1}, BacklogBytes: backlog, CapBytes: capB}
	}
	c := mustController(t)
	steps := []struct {
		t           float64
		in          Inputs
		level, link int
		note        string
	}{
		{0, full(capB - 1_000_000), 0, 0, "first tick: no growth yet"},
		{0.25, full(capB - 200_000), 0, 0, "growing 3.2 MB/s: time to full below 30 s, first tick"},
		{0.5, full(capB), 3, 0, "full: level 3 on load alone"},
	}
	for _, st := range steps {
		got := c.EvaluateAt(sec(st.t), st.in)
		s := c.Status()
		if got != st.level || s.LinkLevel != st.link {
			t.Fatalf("t=%vs (%s): level %d link %d, want %d link %d; %+v", st.t, st.note, got, s.LinkLevel, st.level, st.link, s)
		}
	}
	// The spool stays full and flat, a tick every 250 ms for 2.5 minutes:
	// its growth must decay to exactly 0 (then time to full says nothing)
	// and the level fall a step per dwell; the link's part stays 0.
	for tick := 3; tick <= 4*150; tick++ {
		c.EvaluateAt(sec(float64(tick)/4), full(capB))
		if s := c.Status(); s.LinkLevel != 0 {
			t.Fatalf("t=%vs: link level %d on a healthy link", float64(tick)/4, s.LinkLevel)
		}
	}
	if s := c.Status(); s.Level != 0 || s.Signals[SignalTimeToFull] != 0 || c.growth != 0 {
		t.Fatalf("a full spool that stopped growing holds level %d (signals %v, growth %d B/s)", s.Level, s.Signals, c.growth)
	}

	// Inflation raises the link part too, which falls with the dwell window.
	c = mustController(t)
	for i := range 3 {
		c.EvaluateAt(sec(float64(i)/4), inflation(2.6))
	}
	if s := c.Status(); s.Level != 2 || s.LinkLevel != 2 {
		t.Fatalf("inflation 2.6: %+v, want level 2 link 2", s)
	}
	c.EvaluateAt(sec(1), inflation(1))
	if s := c.Status(); s.Level != 2 || !s.Recovering || s.ActLevel != 0 || s.LinkLevel != 0 {
		t.Fatalf("inflation gone for one tick: %+v, want level 2 held by the dwell, recovering at 0", s)
	}
	for tick := 5; tick <= 4*11; tick++ {
		c.EvaluateAt(sec(float64(tick)/4), inflation(1))
	}
	if s := c.Status(); s.Level != 1 || s.LinkLevel != 0 {
		t.Fatalf("11 s of a clean link: %+v, want level 1 link 0", s)
	}
	if got := c.EvaluateAt(sec(12), Inputs{LinkDown: true}); got != 3 || c.Status().LinkLevel != 3 {
		t.Fatalf("link down: level %d %+v", got, c.Status())
	}
}

// Recovery as a phase, step by step (a tick every 250 ms in between): the
// signals clear below a level the dwell holds, and the classes act at the
// signals' level at once while the level steps down a dwell at a time; a
// signal that comes back for a tick or two leaves the recovery as it is,
// one that stands at the level for a dwell ends it; at level 0 it lasts
// until nothing is left unsent.
func TestControllerRecoveryStepTable(t *testing.T) {
	c := mustController(t)
	type step struct {
		t          float64
		infl       float64
		unsent     int64
		level, act int
		recovering bool
		note       string
	}
	steps := []step{
		{0, 1, 0, 0, 0, false, "healthy, idle"},
		{0.25, 2.6, 1 << 20, 0, 0, false, "first tick at the L2 threshold"},
		{0.5, 2.6, 1 << 20, 2, 2, false, "level 2: degraded, not recovering"},
		{1, 1, 2 << 20, 2, 0, true, "signals clear: the dwell holds the level, not the classes"},
		{5, 1.7, 2 << 20, 2, 0, true, "inflation at L1 for a tick: the classes stay at 0"},
		{5.25, 2.6, 2 << 20, 2, 0, true, "a signal back at the level for a tick: still recovering"},
		{5.5, 1, 2 << 20, 2, 0, true, "cleared again"},
		{6, 1.7, 2 << 20, 2, 0, true, "inflation at L1 from now on"},
		{15.5, 1.7, 2 << 20, 1, 0, true, "a dwell after the last L2 signal: one step down; L1 has stood 9.5 s"},
		{16, 1.7, 2 << 20, 1, 1, false, "L1 stood for a dwell: degraded at 1, recovery over"},
		{16.25, 1, 2 << 20, 1, 0, true, "cleared: recovering again"},
		{26, 1, 1 << 19, 0, 0, true, "a dwell later: level 0, a backlog left: still recovering"},
		{26.5, 1, 0, 0, 0, false, "drained: recovery over"},
		{26.75, 1, 1 << 20, 0, 0, false, "a backlog with no degradation before it is no recovery"},
	}
	tick := 0
	for i, st := range steps {
		for ; float64(tick)/4 < st.t; tick++ {
			prev := steps[max(i-1, 0)]
			c.EvaluateAt(sec(float64(tick)/4), Inputs{Link: inflation(prev.infl).Link, UnsentBytes: prev.unsent})
		}
		got := c.EvaluateAt(sec(st.t), Inputs{Link: inflation(st.infl).Link, UnsentBytes: st.unsent})
		tick++
		s := c.Status()
		if got != st.level || s.ActLevel != st.act || s.Recovering != st.recovering {
			t.Fatalf("t=%vs (%s): level %d act %d recovering %v, want %d %d %v", st.t, st.note, got, s.ActLevel, s.Recovering, st.level, st.act, st.recovering)
		}
		if s.LinkLevel > s.ActLevel {
			t.Fatalf("t=%vs: link level %d above the act level %d", st.t, s.LinkLevel, s.ActLevel)
		}
	}
}

// TestControllerRecoveryStable reproduces the recovery phase switching on
// and off every few seconds: a node at level 1 drains its backlog, and
// the drain's own bursts raise the round-minimum RTT to 1.6 × for a second
// in every three (above level 1's entry, never for a dwell). The raw level
// flickers 0, 1, 0, 1; the phase, the act level and the link level must
// not: one entry into the recovery, the classes at 0 throughout.
func TestControllerRecoveryStable(t *testing.T) {
	c := mustController(t)
	for tick := 0; tick <= 4; tick++ {
		c.EvaluateAt(sec(float64(tick)/4), Inputs{Link: inflation(1.6).Link, UnsentBytes: 1 << 20})
	}
	if s := c.Status(); s.Level != 1 || s.Recovering {
		t.Fatalf("after 1 s of inflation 1.6: %+v, want level 1, not recovering", s)
	}
	entries, flips, rawFlips := 0, 0, 0
	was, prevAct, prevRaw := false, 1, 1
	for tick := 5; tick <= 4*60; tick++ {
		infl := 1.0
		if tick%12 >= 8 { // 1 s in every 3
			infl = 1.6
		}
		c.EvaluateAt(sec(float64(tick)/4), Inputs{Link: inflation(infl).Link, UnsentBytes: 1 << 20})
		s := c.Status()
		if s.Recovering != was {
			if was {
				t.Errorf("t=%.2fs: the recovery ended (raw %d, level %d)", float64(tick)/4, s.Raw, s.Level)
			}
			entries++
			was = s.Recovering
		}
		if s.ActLevel != prevAct {
			flips++
			prevAct = s.ActLevel
		}
		if s.Raw != prevRaw {
			rawFlips++
			prevRaw = s.Raw
		}
		if s.Level != 1 {
			t.Fatalf("t=%.2fs: level %d, want 1 held by the recurring signal", float64(tick)/4, s.Level)
		}
		if s.Recovering && (s.ActLevel != 0 || s.LinkLevel != 0) {
			t.Fatalf("t=%.2fs: recovering at act %d link %d, want 0 0", float64(tick)/4, s.ActLevel, s.LinkLevel)
		}
	}
	if rawFlips < 10 {
		t.Fatalf("the raw level changed %d times: the input does not flicker", rawFlips)
	}
	if entries != 1 || flips != 1 {
		t.Fatalf("recovery entered %d times, act level changed %d times; want 1 and 1", entries, flips)
	}
}
