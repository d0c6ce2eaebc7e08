package shaper

import (
	"math/rand/v2"
	"testing"
	"time"
)

// §4 delay table: base 250 ms, cap 30 s, RNG stub returning u.
func TestBackoffDelayTable(t *testing.T) {
	b := Backoff{Base: 250 * time.Millisecond, Cap: 30 * time.Second}
	for _, tc := range []struct {
		n    int
		u    float64
		want time.Duration
	}{
		{0, 0.5, 125 * time.Millisecond},
		{3, 0.5, time.Second},
		{10, 0.999, 29970 * time.Millisecond},
		{200, 0.5, 15 * time.Second},
		{1 << 30, 0.5, 15 * time.Second},
		{-1, 0.5, 125 * time.Millisecond},
		{0, 0, 0},
	} {
		if got := b.Delay(tc.n, tc.u); got != tc.want {
			t.Errorf("Delay(%d, %v) = %v, want %v", tc.n, tc.u, got, tc.want)
		}
	}
	// zero value = defaults
	if got := (Backoff{}).Delay(3, 0.5); got != time.Second {
		t.Errorf("zero Backoff Delay = %v", got)
	}
}

func TestBackoffDelayBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	b := Backoff{Base: 250 * time.Millisecond, Cap: 30 * time.Second}
	for range 10000 {
		n := rng.IntN(100)
		d := b.Delay(n, rng.Float64())
		if d < 0 || d > b.Ceiling(n) || b.Ceiling(n) > 30*time.Second {
			t.Fatalf("Delay(%d) = %v outside [0, %v]", n, d, b.Ceiling(n))
		}
	}
}

// §4 budget step table (ttl 10 s, ratio 0.2, reserve 1/s).
func TestBudgetStepTable(t *testing.T) {
	b, err := NewBudget(BudgetOptions{TTL: 10 * time.Second, Ratio: 0.2, ReservePerSec: 1})
	if err != nil {
		t.Fatal(err)
	}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for range 50 {
		b.OnFirstSendAt(at(0))
	}
	approved, denied := 0, 0
	for range 25 {
		if b.TryRetryAt(at(1)) {
			approved++
		} else {
			denied++
		}
	}
	if approved != 20 || denied != 5 {
		t.Errorf("approved %d denied %d, want 20 5", approved, denied)
	}
	if got := b.AllowedAt(at(10.5)); got != 0 { // t=0 slot expired: 10 − 20
		if got != -10 {
			t.Errorf("allowed at 10.5 s = %d, want -10", got)
		}
	}
	if got := b.AllowedAt(at(11)); got != 10 {
		t.Errorf("allowed at 11 s = %d, want 10", got)
	}
	if next := b.NextEventAt(at(10.5)); !next.Equal(at(11)) {
		t.Errorf("NextEventAt = %v, want 11 s", next.Sub(t0))
	}
	if s := b.Stats(); s.FirstSends != 50 || s.Retries != 20 || s.Denied != 5 {
		t.Errorf("stats %+v", s)
	}
	// default ratio is 10%
	d, _ := NewBudget(BudgetOptions{})
	for range 100 {
		d.OnFirstSendAt(at(0))
	}
	if got := d.AllowedAt(at(0)); got != 20 {
		t.Errorf("default allowed = %d, want 10 + 10", got)
	}
}

// Property: in every TTL window, retries ≤ reserve·ttl + ratio·first sends (+1).
func TestBudgetWindowProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	b, _ := NewBudget(BudgetOptions{TTL: 10 * time.Second, Ratio: 0.2, ReservePerSec: 1})
	type ev struct {
		at    time.Time
		retry bool
	}
	var evs []ev
	now := t0
	for range 20000 {
		now = now.Add(time.Duration(rng.IntN(20)) * time.Millisecond)
		if rng.IntN(3) == 0 {
			b.OnFirstSendAt(now)
			evs = append(evs, ev{now, false})
		} else if b.TryRetryAt(now) {
			evs = append(evs, ev{now, true})
		}
	}
	// slide a 10 s window aligned on slots
	for start := t0; start.Before(now); start = start.Add(time.Second) {
		end := start.Add(10 * time.Second)
		var s, r int64
		for _, e := range evs {
			if !e.at.Before(start) && e.at.Before(end) {
				if e.retry {
					r++
				} else {
					s++
				}
			}
		}
		if r > 10+s/5+1 {
			t.Fatalf("window at %v: %d retries for %d sends", start.Sub(t0), r, s)
		}
	}
}

func TestRetrierDecisions(t *testing.T) {
	u := 0.5
	r, err := NewRetrier(RetryOptions{Rand: func() float64 { return u }})
	if err != nil {
		t.Fatal(err)
	}
	first := t0
	r.OnFirstSendAt(first)
	for _, tc := range []struct {
		a      Attempt
		disp   Disposition
		at     time.Duration
		reason string
	}{
		{Attempt{FirstSent: first, N: 1, Outcome: OutcomeAck}, Delivered, 0, ""},
		{Attempt{FirstSent: first, N: 2, Outcome: OutcomeDuplicate}, Delivered, 0, ""},
		{Attempt{FirstSent: first, N: 1, Outcome: OutcomePayloadTooLarge}, Split, 0, ""},
		{Attempt{FirstSent: first, N: 1, Outcome: OutcomeNoStream}, DeadLetter, 0, ""},
		{Attempt{FirstSent: first, N: 1, Outcome: OutcomeSeqMismatch}, DeadLetter, 0, ""},
		{Attempt{FirstSent: first, N: 1, Outcome: OutcomeTimeout}, Retry, 125 * time.Millisecond, ""},
		{Attempt{FirstSent: first, N: 4, Outcome: OutcomeUnavailable}, Retry, time.Second, ""},
		{Attempt{FirstSent: first, N: 6, Outcome: OutcomeTimeout}, Backlog, 0, "attempts"},
		{Attempt{FirstSent: first, N: 1, Outcome: OutcomeTimeout, Level: 3}, Backlog, 0, "level"},
		{Attempt{FirstSent: first, N: 1, Outcome: OutcomeTimeout, Level: 3, Critical: true}, Retry, 125 * time.Millisecond, ""},
		{Attempt{FirstSent: first.Add(-100 * time.Second), N: 1, Outcome: OutcomeDisconnected}, Backlog, 0, "horizon"},
	} {
		d := r.OnFailureAt(first, tc.a)
		if d.Disposition != tc.disp || d.Reason != tc.reason || (d.Disposition == Retry && d.At.Sub(first) != tc.at) {
			t.Errorf("%+v: got %+v", tc.a, d)
		}
	}
	// budget: reserve 10 + 0.1·1 → 10 retries in the window, 3 used above.
	n := 0
	for r.OnFailureAt(first, Attempt{FirstSent: first, N: 1, Outcome: OutcomeTimeout}).Disposition == Retry {
		n++
	}
	if n != 7 {
		t.Errorf("budget allowed %d more retries, want 7", n)
	}
	if d := r.OnFailureAt(first, Attempt{FirstSent: first, N: 1, Outcome: OutcomeTimeout}); d.Reason != "budget" {
		t.Errorf("exhausted: %+v", d)
	}
}

// §4 property: in a 60 s simulation where every attempt fails, attempts ≤
// 1.2 × first sends + 60; every retry happens ≤ first send + horizon.
func TestRetrierOutageSimulation(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	r, err := NewRetrier(RetryOptions{Rand: rng.Float64, Budget: BudgetOptions{Ratio: 0.2}})
	if err != nil {
		t.Fatal(err)
	}
	type retry struct {
		at, first time.Time
		n         int
	}
	var pending []retry
	attempts, firsts := 0, 0
	end := t0.Add(60 * time.Second)
	for now := t0; now.Before(end); now = now.Add(10 * time.Millisecond) {
		// 100 first sends/s, all fail
		firsts++
		attempts++
		r.OnFirstSendAt(now)
		pending = append(pending, retry{at: now, first: now, n: 1})
		var keep []retry
		for _, p := range pending {
			if p.at.After(now) {
				keep = append(keep, p)
				continue
			}
			if p.n > 1 {
				attempts++
				if p.at.After(p.first.Add(100 * time.Second)) {
					t.Fatal("retry past horizon")
				}
			}
			d := r.OnFailureAt(now, Attempt{FirstSent: p.first, N: p.n, Outcome: OutcomeTimeout})
			if d.Disposition == Retry {
				keep = append(keep, retry{at: d.At, first: p.first, n: p.n + 1})
			}
		}
		pending = keep
	}
	if limit := int(1.2*float64(firsts)) + 60; attempts > limit {
		t.Errorf("attempts %d > %d (first sends %d)", attempts, limit, firsts)
	}
}

func TestRTO(t *testing.T) {
	var e RTO
	if e.Timeout() != time.Second {
		t.Fatal("initial RTO")
	}
	e.Sample(100 * time.Millisecond)
	if e.SRTT() != 100*time.Millisecond || e.RTTVar() != 50*time.Millisecond || e.Timeout() != time.Second {
		t.Errorf("after one sample: %v %v %v", e.SRTT(), e.RTTVar(), e.Timeout())
	}
	e.Sample(2 * time.Second) // srtt 337.5ms, rttvar 512.5ms → 2.3875 s
	if got := e.Timeout(); got != 2387500*time.Microsecond {
		t.Errorf("RTO = %v", got)
	}
}
