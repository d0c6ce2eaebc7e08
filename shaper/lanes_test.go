package shaper

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicehq/sluice/priority"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

func mustLanes(t testing.TB, cs []priority.Class, target priority.Rate, o LanesOptions) *Lanes {
	t.Helper()
	l, err := NewLanes(cs, target, o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// §1 step table: one msgs bucket, rate 10/s, depth 2, full at t=0.
func TestLanesStepTableMsgsBucket(t *testing.T) {
	cs := []priority.Class{{Name: "a", Rate: priority.Rate{MsgsPerSec: 10}, Ceil: priority.Rate{MsgsPerSec: 10}}}
	l := mustLanes(t, cs, priority.Rate{}, LanesOptions{})
	for i := 0; i < 10; i++ {
		l.EnqueueAt(t0, 0, 1000)
	}
	for _, st := range []struct {
		t    int
		send bool
		wait int
	}{
		{0, true, 0},
		{0, true, 0},
		{0, false, 100},
		{100, true, 0},
		{150, false, 200},
		{1000, true, 0}, // bucket capped at 2 before the charge
		{1000, true, 0},
		{1000, false, 1100},
	} {
		p, ok, wait := l.PickAt(ms(st.t))
		if ok != st.send {
			t.Fatalf("t=%dms: ok=%v, want %v", st.t, ok, st.send)
		}
		if ok && (p.Class != 0 || p.Bytes != 1000) {
			t.Fatalf("t=%dms: pick %+v", st.t, p)
		}
		if !ok && !wait.Equal(ms(st.wait)) {
			t.Fatalf("t=%dms: wait until %v, want %dms", st.t, wait.Sub(t0), st.wait)
		}
	}
}

type satResult struct{ msgs, bytes []int64 }

// runPick drives scheduler mode for dur, keeping the backlogged classes
// saturated with msgSize messages, and counts sends after warm.
func runPick(t testing.TB, l *Lanes, backlogged []bool, msgSize int, start time.Time, warm, dur time.Duration) satResult {
	t.Helper()
	n := len(backlogged)
	r := satResult{make([]int64, n), make([]int64, n)}
	for i, b := range backlogged {
		if b {
			for l.Queued(i) < 2 {
				l.EnqueueAt(start, i, msgSize)
			}
		}
	}
	now := start
	end := start.Add(warm + dur)
	for steps := 0; now.Before(end); steps++ {
		if steps > 10_000_000 {
			t.Fatal("runaway")
		}
		p, ok, wait := l.PickAt(now)
		if !ok {
			if wait.IsZero() {
				t.Fatalf("blocked forever at %v", now.Sub(start))
			}
			if !wait.After(now) {
				t.Fatalf("wait %v not after now %v", wait, now)
			}
			now = wait
			continue
		}
		if !now.Before(start.Add(warm)) {
			r.msgs[p.Class]++
			r.bytes[p.Class] += int64(p.Bytes)
		}
		l.EnqueueAt(now, p.Class, msgSize)
	}
	return r
}

func twoClasses(samePrio bool) []priority.Class {
	b := priority.Class{Name: "B", Priority: 1, Rate: priority.Rate{MsgsPerSec: 2}, Ceil: priority.Rate{MsgsPerSec: 10}}
	if samePrio {
		b.Priority = 0
	}
	return []priority.Class{
		{Name: "A", Priority: 0, Rate: priority.Rate{MsgsPerSec: 2}, Ceil: priority.Rate{MsgsPerSec: 8}},
		b,
	}
}

// §1 steady-state table (msgs/s, link 10, 10 s windows, ±1 msg).
func TestLanesSteadyState(t *testing.T) {
	for _, tc := range []struct {
		name       string
		samePrio   bool
		backlogged []bool
		a, b       int64
	}{
		{"both saturated", false, []bool{true, true}, 80, 20},
		{"only B", false, []bool{false, true}, 0, 100},
		{"equal prio 1:1", true, []bool{true, true}, 50, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := mustLanes(t, twoClasses(tc.samePrio), priority.Rate{MsgsPerSec: 10}, LanesOptions{})
			r := runPick(t, l, tc.backlogged, 1000, t0, 10*time.Second, 10*time.Second)
			if abs(r.msgs[0]-tc.a) > 1 || abs(r.msgs[1]-tc.b) > 1 {
				t.Errorf("A=%d B=%d msgs in 10 s, want %d %d (±1)", r.msgs[0], r.msgs[1], tc.a, tc.b)
			}
		})
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// runReserve drives admission mode: one "goroutine" per backlogged class,
// each with a batch always ready, woken at its Reservation.At. order picks
// which of several classes due at the same instant calls first.
func runReserve(t testing.TB, l *Lanes, backlogged []bool, msgSize int, start time.Time, warm, dur time.Duration, reverse bool) satResult {
	t.Helper()
	n := len(backlogged)
	r := satResult{make([]int64, n), make([]int64, n)}
	wake := make([]time.Time, n)
	for i, b := range backlogged {
		if b {
			wake[i] = start
			l.SetBacklogAt(start, i, msgSize)
		}
	}
	end := start.Add(warm + dur)
	for steps := 0; ; steps++ {
		if steps > 10_000_000 {
			t.Fatal("runaway")
		}
		c := -1
		for k := range n {
			i := k
			if reverse {
				i = n - 1 - k
			}
			if backlogged[i] && (c < 0 || wake[i].Before(wake[c])) {
				c = i
			}
		}
		now := wake[c]
		if !now.Before(end) {
			return r
		}
		res := l.ReserveAt(now, c, msgSize)
		if res.OK {
			if !now.Before(start.Add(warm)) {
				r.msgs[c]++
				r.bytes[c] += int64(msgSize)
			}
			continue // next batch ready at once
		}
		if res.At.IsZero() || !res.At.After(now) {
			t.Fatalf("class %d refused with At=%v at %v", c, res.At, now)
		}
		wake[c] = res.At
	}
}

func TestLanesSteadyStateReserve(t *testing.T) {
	for _, reverse := range []bool{false, true} {
		for _, tc := range []struct {
			name       string
			samePrio   bool
			backlogged []bool
			a, b       int64
		}{
			{"both saturated", false, []bool{true, true}, 80, 20},
			{"only B", false, []bool{false, true}, 0, 100},
			{"equal prio 1:1", true, []bool{true, true}, 50, 50},
		} {
			t.Run(fmt.Sprintf("%s/reverse=%v", tc.name, reverse), func(t *testing.T) {
				l := mustLanes(t, twoClasses(tc.samePrio), priority.Rate{MsgsPerSec: 10}, LanesOptions{})
				r := runReserve(t, l, tc.backlogged, 1000, t0, 10*time.Second, 10*time.Second, reverse)
				if abs(r.msgs[0]-tc.a) > 1 || abs(r.msgs[1]-tc.b) > 1 {
					t.Errorf("A=%d B=%d msgs in 10 s, want %d %d (±1)", r.msgs[0], r.msgs[1], tc.a, tc.b)
				}
			})
		}
	}
}

func TestLanesCriticalStrictAndDefaults(t *testing.T) {
	const link = 1_000_000 // bytes/s
	cs := priority.Defaults(link)
	l := mustLanes(t, cs, priority.Rate{BytesPerSec: link}, LanesOptions{})
	all := []bool{true, true, true, true}
	r := runPick(t, l, all, 16<<10, t0, 5*time.Second, 10*time.Second)
	cost := func(i int) float64 { return float64(r.msgs[i]*(16<<10+DefaultOverheadBytes)) / 10 }
	// critical takes its ceil (40%); ingest and replication their
	// guarantees plus spare by priority: ingest gets the rest up to its ceil.
	if c := cost(0); c < 0.38*link || c > 0.42*link {
		t.Errorf("critical %.0f B/s, want ≈ 40%% of link", c)
	}
	if c := cost(2); c < 0.13*link || c > 0.17*link {
		t.Errorf("replication %.0f B/s, want its guarantee ≈ 15%%", c)
	}
	if c := cost(1); c < 0.43*link || c > 0.47*link {
		t.Errorf("ingest %.0f B/s, want the rest ≈ 45%%", c)
	}
	if r.msgs[3] > 2 {
		t.Errorf("backfill (throttled, lowest) sent %d msgs on a saturated link", r.msgs[3])
	}
	// Level 1: replication and backfill deferred: they send nothing.
	l.SetLevelAt(t0.Add(15*time.Second), 1)
	r = runPick(t, l, all, 16<<10, t0.Add(15*time.Second), time.Second, 5*time.Second)
	if r.msgs[2] != 0 || r.msgs[3] != 0 {
		t.Errorf("deferred classes sent %d/%d msgs", r.msgs[2], r.msgs[3])
	}
	if r.msgs[1] == 0 {
		t.Errorf("ingest starved at L1")
	}
}

func TestLanesGuaranteeScaling(t *testing.T) {
	cs := priority.Defaults(1_000_000) // Σ non-critical rate = 500k
	l := mustLanes(t, cs, priority.Rate{BytesPerSec: 1_000_000}, LanesOptions{})
	if l.Overcommitted() {
		t.Fatal("overcommitted at full link")
	}
	l.SetTargetAt(t0, priority.Rate{BytesPerSec: 350_000}) // (350k-100k)/500k = 0.5
	s := l.SnapshotAt(t0)
	if !s.Overcommitted || s.ScalePPM != 500_000 {
		t.Fatalf("scale %d overcommitted %v", s.ScalePPM, s.Overcommitted)
	}
	if got := s.Classes[1].Rate.BytesPerSec; got != 175_000 {
		t.Errorf("ingest eff rate %d, want 175000", got)
	}
	if got := s.Classes[0].Rate.BytesPerSec; got != 100_000 {
		t.Errorf("critical eff rate %d, want unscaled 100000", got)
	}
	// Deferring replication frees its share: (350-100)/350 of ingest.
	l.SetLevelAt(t0, 1)
	s = l.SnapshotAt(t0)
	if got := s.Classes[1].Rate.BytesPerSec; got != 250_000 || s.Classes[2].Rate.BytesPerSec != 0 || !s.Classes[2].Deferred {
		t.Errorf("L1: %+v", s.Classes)
	}
	if res := l.ReserveAt(t0, 2, 1000); res.OK || !res.At.IsZero() {
		t.Errorf("deferred class reservation %+v", res)
	}
}

// randomLanes builds a random valid configuration.
func randomLanes(rng *rand.Rand) ([]priority.Class, int64) {
	link := int64(100_000 + rng.IntN(10_000_000))
	n := 2 + rng.IntN(4)
	cs := make([]priority.Class, n)
	budget := link
	for i := range cs {
		c := priority.Class{Name: fmt.Sprint("c", i), Priority: rng.IntN(4), Weight: 1 + rng.IntN(4)}
		rate := int64(0)
		if rng.IntN(4) > 0 {
			rate = rng.Int64N(max(1, budget/int64(n)))
		}
		budget -= rate
		c.Rate.BytesPerSec = rate
		if rng.IntN(3) > 0 {
			c.Ceil.BytesPerSec = rate + rng.Int64N(link-rate+1)
			c.Ceil.BytesPerSec = max(c.Ceil.BytesPerSec, 1)
		}
		cs[i] = c
	}
	if rng.IntN(2) == 0 {
		cs[0].Critical = true
		cs[0].Ceil.BytesPerSec = max(cs[0].Rate.BytesPerSec, link/4)
	}
	return cs, link
}

// P1 ceilings, P2 no starvation, P3/P5 work conservation and exact
// NextEventAt, over random configs and adversarial backlog patterns.
func TestLanesProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 80 {
		cs, link := randomLanes(rng)
		target := link / 2 * int64(1+rng.IntN(2)) // sometimes overcommitted
		l := mustLanes(t, cs, priority.Rate{BytesPerSec: target}, LanesOptions{})
		n := len(cs)
		msgSize := 1000 + rng.IntN(60_000)
		maxCost := l.cost(msgSize)
		const W = 4 * time.Second
		sent := make([]int64, n)
		now := t0
		always := make([]bool, n)
		for i := range n {
			always[i] = rng.IntN(3) > 0
			if always[i] {
				l.EnqueueAt(now, i, msgSize)
			}
		}
		expectSend := false
		for now.Before(t0.Add(W)) {
			if !expectSend {
				for i := range n { // adversarial refills of the others
					if !always[i] && rng.IntN(20) == 0 {
						l.EnqueueAt(now, i, msgSize)
					}
				}
			}
			p, ok, wait := l.PickAt(now)
			if !ok {
				if expectSend {
					t.Fatalf("iter %d: P5: nothing sent at NextEventAt %v", iter, now.Sub(t0))
				}
				if wait.IsZero() {
					break
				}
				if !wait.After(now) {
					t.Fatalf("iter %d: P3: told to wait until %v at %v", iter, wait, now)
				}
				if before := wait.Add(-1); before.After(now) {
					if _, ok2, _ := l.PickAt(before); ok2 {
						t.Fatalf("iter %d: P5: send possible before NextEventAt", iter)
					}
				}
				now, expectSend = wait, true
				continue
			}
			expectSend = false
			sent[p.Class] += l.cost(p.Bytes)
			if always[p.Class] {
				l.EnqueueAt(now, p.Class, msgSize)
			}
		}
		secs := int64(W / time.Second)
		var total int64
		s := l.SnapshotAt(now)
		var critCeil, sumEff int64
		for i, c := range cs {
			total += sent[i]
			if ceil := c.Ceil.BytesPerSec; ceil > 0 {
				bound := ceil*secs + l.lanes[i].ceilB.depth/nano + maxCost
				if sent[i] > bound {
					t.Errorf("iter %d: P1: class %d sent %d > ceil bound %d", iter, i, sent[i], bound)
				}
			}
			if c.Critical {
				critCeil += c.Ceil.BytesPerSec
			} else {
				sumEff += s.Classes[i].Rate.BytesPerSec
			}
		}
		if bound := target*secs + l.linkB.depth/nano + maxCost; total > bound {
			t.Errorf("iter %d: P1: link sent %d > %d", iter, total, bound)
		}
		if target < critCeil+sumEff {
			continue // strict priority may take guarantees: see Caveats
		}
		for i, c := range cs {
			eff := s.Classes[i].Rate.BytesPerSec
			if !always[i] || c.Critical || eff == 0 {
				continue
			}
			if floor := eff*secs - l.lanes[i].rateB.depth/nano - maxCost; sent[i] < floor {
				t.Errorf("iter %d: P2: class %d (eff %d B/s) sent %d < %d", iter, i, eff, sent[i], floor)
			}
		}
	}
}

// P4: equal-priority borrowers share spare capacity in proportion to weight,
// in both driving modes.
func TestLanesBorrowByWeight(t *testing.T) {
	cs := []priority.Class{
		{Name: "A", Weight: 2, Ceil: priority.Rate{MsgsPerSec: 100}},
		{Name: "B", Weight: 1, Ceil: priority.Rate{MsgsPerSec: 100}},
	}
	for _, reserve := range []bool{false, true} {
		l := mustLanes(t, cs, priority.Rate{MsgsPerSec: 30}, LanesOptions{})
		var r satResult
		if reserve {
			r = runReserve(t, l, []bool{true, true}, 1000, t0, 5*time.Second, 10*time.Second, true)
		} else {
			r = runPick(t, l, []bool{true, true}, 1000, t0, 5*time.Second, 10*time.Second)
		}
		if abs(r.msgs[0]-200) > 2 || abs(r.msgs[1]-100) > 2 {
			t.Errorf("reserve=%v: A=%d B=%d, want 200:100", reserve, r.msgs[0], r.msgs[1])
		}
	}
}

// Critical protection in admission mode: critical keeps its ceil share
// while every other class is saturated, whatever order the goroutines call.
func TestLanesCriticalProtectedReserve(t *testing.T) {
	const link = 1_000_000
	for _, reverse := range []bool{false, true} {
		l := mustLanes(t, priority.Defaults(link), priority.Rate{BytesPerSec: link}, LanesOptions{})
		r := runReserve(t, l, []bool{true, true, true, true}, 16<<10, t0, 5*time.Second, 10*time.Second, reverse)
		crit := float64(r.msgs[0]*(16<<10+DefaultOverheadBytes)) / 10
		if crit < 0.38*link || crit > 0.42*link {
			t.Errorf("reverse=%v: critical %.0f B/s, want ≈ its 40%% ceil", reverse, crit)
		}
		repl := float64(r.msgs[2]*(16<<10+DefaultOverheadBytes)) / 10
		if repl < 0.13*link {
			t.Errorf("reverse=%v: replication %.0f B/s below its guarantee", reverse, repl)
		}
	}
}

// A reload changes a class's ceiling and priority in place: admission
// follows at once; a different class set is refused and changes nothing.
func TestLanesSetClasses(t *testing.T) {
	cs := []priority.Class{
		{Name: "a", Priority: 0, Ceil: priority.Rate{MsgsPerSec: 10}},
		{Name: "b", Priority: 1, Ceil: priority.Rate{MsgsPerSec: 10}},
	}
	l := mustLanes(t, cs, priority.Rate{}, LanesOptions{})
	sent := func(class int, at time.Time) int {
		n := 0
		for l.ReserveAt(at, class, 100).OK {
			n++
		}
		return n
	}
	if n := sent(0, t0); n != 2 { // ceil bucket depth: 2 msgs
		t.Fatalf("before: a sent %d at once, want 2", n)
	}
	up := append([]priority.Class(nil), cs...)
	up[0].Ceil.MsgsPerSec = 100
	if err := l.SetClassesAt(ms(1000), up); err != nil {
		t.Fatal(err)
	}
	if n := sent(0, ms(2000)); n != 10 { // 100 ms of depth at 100/s
		t.Errorf("after raising a's ceiling to 100/s: %d at once, want 10", n)
	}
	if s := l.SnapshotAt(ms(2000)); s.Classes[0].Ceil.MsgsPerSec != 100 {
		t.Errorf("snapshot ceil %+v", s.Classes[0].Ceil)
	}
	for _, bad := range [][]priority.Class{cs[:1], {cs[1], cs[0]}, {cs[0], {Name: "b", Priority: 99}}} {
		if err := l.SetClassesAt(ms(3000), bad); err == nil {
			t.Errorf("SetClassesAt(%v) accepted", bad)
		}
	}
	if s := l.SnapshotAt(ms(3000)); s.Classes[0].Ceil.MsgsPerSec != 100 {
		t.Errorf("a refused reload changed the ceiling: %+v", s.Classes[0].Ceil)
	}
}

// TestLanesLinkBurst: after an idle second the link admits LinkDepth at the
// target and at most one message more, whatever MaxMsgBytes says: a 5
// Mbit/s link once took 128 KiB (2 × MaxMsgBytes) at once, 200 ms queued.
func TestLanesLinkBurst(t *testing.T) {
	const target = 500_000 // bytes/s: a 5 Mbit/s link at 80%
	cs := priority.Defaults(625_000)
	l := mustLanes(t, cs, priority.Rate{BytesPerSec: target}, LanesOptions{OverheadBytes: -1})
	now := t0.Add(time.Second)
	var burst int
	for l.ReserveAt(now, 3, 10_000).OK { // backfill: borrows the link
		burst += 10_000
	}
	depth := target * int(DefaultLinkDepth) / int(time.Second)
	if burst < depth-10_000 || burst > depth+10_000 {
		t.Errorf("burst %d bytes, want about LinkDepth at the target (%d)", burst, depth)
	}
	// A message deeper than the bucket still goes, alone, when it is full.
	now = now.Add(time.Second)
	if !l.ReserveAt(now, 3, 100_000).OK || l.ReserveAt(now, 3, 1000).OK {
		t.Error("a message deeper than the link bucket: not admitted alone when full")
	}
}

// EffectiveAction over the default plans: a defer stops a class only where
// the link's own health defers it too.
func TestEffectiveAction(t *testing.T) {
	cs := priority.Defaults(1_000_000)
	ingest, repl := &cs[1], &cs[2]
	for _, tc := range []struct {
		c           *priority.Class
		level, link int
		want        priority.ActionKind
		note        string
	}{
		{ingest, 3, 3, priority.ActionDefer, "the link is down: ingest waits"},
		{ingest, 3, 0, priority.ActionThrottle, "a full spool on a healthy link: ingest drains"},
		{ingest, 3, 2, priority.ActionThrottle, "the link at 2 drops fields, does not defer"},
		{ingest, 2, 0, priority.ActionDropFields, "no defer: the plan's action"},
		{repl, 1, 1, priority.ActionDefer, "inflation: replication waits"},
		{repl, 2, 1, priority.ActionDefer, "the link's part defers it"},
		{repl, 2, 0, priority.ActionThrottle, "load only: replication borrows"},
		{repl, 1, 3, priority.ActionDefer, "link above level: clamped to level"},
		{repl, 0, 0, priority.ActionNone, "level 0"},
	} {
		if got := EffectiveAction(tc.c, tc.level, tc.link).Kind; got != tc.want {
			t.Errorf("%s at level %d link %d (%s): %v, want %v", tc.c.Name, tc.level, tc.link, tc.note, got, tc.want)
		}
	}
}

// A level raised by load alone throttles the classes its plan defers: a
// full spool of ingest on a healthy link still drains, behind the classes
// with a guarantee; the link's part of the level defers for real.
func TestLanesLoadLevelThrottles(t *testing.T) {
	cs := priority.Defaults(1_000_000)
	l := mustLanes(t, cs, priority.Rate{BytesPerSec: 800_000}, LanesOptions{})
	l.SetLevelsAt(t0, 3, 0)
	s := l.SnapshotAt(t0)
	for i, c := range s.Classes {
		if c.Deferred {
			t.Fatalf("load-only level 3 defers %s: %+v", cs[i].Name, s.Classes)
		}
	}
	if res := l.ReserveAt(t0, 1, 1000); !res.OK || res.Phase != PhaseBorrow {
		t.Fatalf("ingest at load-only level 3: %+v, want a borrow", res)
	}
	l.SetLevelsAt(t0, 3, 3)
	if res := l.ReserveAt(t0, 1, 1000); res.OK || !res.At.IsZero() {
		t.Fatalf("ingest with the link down: %+v, want deferred", res)
	}
	l.SetLevelsAt(t0, 1, 5) // the link's part is clamped to the level
	if res := l.ReserveAt(t0, 2, 1000); res.OK || !res.At.IsZero() {
		t.Fatalf("replication at level 1 from the link: %+v, want deferred", res)
	}
	if res := l.ReserveAt(t0, 1, 1000); !res.OK {
		t.Fatalf("ingest at level 1: %+v", res)
	}
}

// A class that leaves a defer resumes its borrow over LanesOptions.Ramp:
// its ceiling starts 1/8 of the way from its guarantee to the target (it
// has no ceiling of its own) and grows linearly; its guarantee is whole at
// once. Deferred again, it stops; resumed again, it ramps again.
func TestLanesResumeRamps(t *testing.T) {
	cs := priority.Defaults(0)                       // no link ceiling: the classes have neither ceilings nor guarantees
	cs[2].Rate = priority.Rate{BytesPerSec: 100_000} // but replication has a guarantee
	l := mustLanes(t, cs, priority.Rate{BytesPerSec: 1_000_000}, LanesOptions{})
	const repl = 2
	l.SetLevelsAt(t0, 1, 1)
	if s := l.SnapshotAt(t0); !s.Classes[repl].Deferred {
		t.Fatalf("level 1: replication not deferred: %+v", s.Classes[repl])
	}
	ms := func(v int) time.Time { return t0.Add(time.Duration(v) * time.Millisecond) }
	l.SetLevelsAt(ms(1000), 0, 0)
	eff := l.SnapshotAt(ms(1000)).Classes[repl].Rate.BytesPerSec
	if eff != 100_000 {
		t.Fatalf("replication's guarantee at level 0: %d", eff)
	}
	for _, st := range []struct {
		at       int   // ms
		ceil     int64 // bytes/s the ceil bucket fills at
		resuming bool
	}{
		{1000, eff + (1_000_000-eff)/8, true},
		{3000, eff + (1_000_000-eff)*5625/10000, true}, // halfway: 1/8 + 7/8 × 1/2
		{4999, eff + mulDiv(1_000_000-eff, 125_000+mulDiv(875_000, 3999, 4000), 1_000_000), true},
		{5000, 0, false}, // whole: no ceiling of its own, unlimited
	} {
		l.ReserveAt(ms(st.at), repl, 0)
		l.SetBacklogAt(ms(st.at), repl, 0)
		ln := &l.lanes[repl]
		got := ln.ceilB.rate
		if ln.ceilB.unlimited {
			got = 0
		}
		if got != st.ceil || l.SnapshotAt(ms(st.at)).Classes[repl].Resuming != st.resuming {
			t.Errorf("t=%d ms: ceil rate %d resuming %v, want %d %v", st.at, got, !ln.rampFrom.IsZero(), st.ceil, st.resuming)
		}
		if l.SnapshotAt(ms(st.at)).Classes[repl].Rate.BytesPerSec != eff {
			t.Errorf("t=%d ms: the guarantee ramps too", st.at)
		}
	}
	// Deferred mid-ramp: nothing; resumed: from the floor again.
	l.SetLevelsAt(ms(6000), 1, 0)
	l.SetLevelsAt(ms(6000), 1, 1)
	if res := l.ReserveAt(ms(6000), repl, 1000); res.OK || !res.At.IsZero() || l.SnapshotAt(ms(6000)).Classes[repl].Resuming {
		t.Fatalf("deferred again: %+v, %+v", res, l.SnapshotAt(ms(6000)).Classes[repl])
	}
	l.SetLevelsAt(ms(7000), 0, 0)
	if got := l.lanes[repl].ceilB.rate; got != eff+(1_000_000-eff)/8 || l.lanes[repl].ceilB.unlimited {
		t.Errorf("resumed again: ceil rate %d, want the floor %d", got, eff+(1_000_000-eff)/8)
	}
	// A level raised by load only throttles replication: not a defer, no ramp.
	l2 := mustLanes(t, cs, priority.Rate{BytesPerSec: 1_000_000}, LanesOptions{})
	l2.SetLevelsAt(t0, 2, 0)
	l2.SetLevelsAt(ms(1000), 0, 0)
	if l2.SnapshotAt(ms(1000)).Classes[repl].Resuming {
		t.Error("a class that was throttled, not deferred, ramps")
	}
	// Ramp < 0: none.
	l3 := mustLanes(t, cs, priority.Rate{BytesPerSec: 1_000_000}, LanesOptions{Ramp: -1})
	l3.SetLevelsAt(t0, 1, 1)
	l3.SetLevelsAt(ms(1000), 0, 0)
	if l3.SnapshotAt(ms(1000)).Classes[repl].Resuming || !l3.lanes[repl].ceilB.unlimited {
		t.Error("Ramp < 0 ramps")
	}
}

// A recovery's drain (SetDrainAt) takes the link above the target while
// the critical classes send little, and gives the headroom back as they
// send more, from the send that raises their demand; never below the
// target, and not at all once the drain ends.
func TestLanesDrainGivesBackToCritical(t *testing.T) {
	cs := priority.Defaults(1_000_000)
	l := mustLanes(t, cs, priority.Rate{BytesPerSec: 800_000}, LanesOptions{OverheadBytes: -1})
	ms := func(v int) time.Time { return t0.Add(time.Duration(v) * time.Millisecond) }
	const crit, ingest = 0, 1
	steps := []struct {
		at   int // ms
		do   func(now time.Time)
		rate int64
		note string
	}{
		{0, func(now time.Time) {}, 800_000, "no drain: the target"},
		{0, func(now time.Time) { l.SetDrainAt(now, 950_000) }, 950_000, "drain, critical idle: all of it"},
		{0, func(now time.Time) { mustReserve(t, l, now, crit, 30_000) }, 890_000, "critical sends 30 kB: twice that given back at once"},
		{500, func(now time.Time) { mustReserve(t, l, now, ingest, 1000) }, 920_000, "half a second later half of it leaked"},
		{1000, func(now time.Time) { mustReserve(t, l, now, ingest, 1000) }, 950_000, "a second later: all of it again"},
		{1500, func(now time.Time) { mustReserve(t, l, now, crit, 100_000) }, 800_000, "critical sends 100 kB: back to the target, not below"},
		{3000, func(now time.Time) { l.SetDrainAt(now, 0) }, 800_000, "the drain ends"},
		{3000, func(now time.Time) { l.SetDrainAt(now, 700_000) }, 800_000, "a drain below the target is the target"},
	}
	for _, st := range steps {
		now := ms(st.at)
		st.do(now)
		if got := l.LinkRate(); got != st.rate {
			t.Errorf("t=%d ms (%s): link rate %d, want %d", st.at, st.note, got, st.rate)
		}
	}
	// The target moving under a drain keeps the drain.
	l.SetDrainAt(ms(5000), 950_000)
	l.SetTargetAt(ms(5000), priority.Rate{BytesPerSec: 600_000})
	if got := l.LinkRate(); got != 950_000 {
		t.Errorf("target moved under a drain: link rate %d, want 950000", got)
	}
}

func mustReserve(t *testing.T, l *Lanes, now time.Time, class, bytes int) {
	t.Helper()
	if r := l.ReserveAt(now, class, bytes); !r.OK {
		t.Fatalf("class %d, %d bytes at %v: %+v", class, bytes, now, r)
	}
}
