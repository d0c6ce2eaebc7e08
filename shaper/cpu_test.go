package shaper

import (
	"math"
	"testing"
	"time"
)

// hist builds a cumulative histogram over the boundaries 0, 1, 2, 4, 8,
// 16 ms, +Inf from per-bucket counts.
func hist(counts ...uint64) SchedHistogram {
	return SchedHistogram{Counts: counts, Buckets: []float64{0, 0.001, 0.002, 0.004, 0.008, 0.016, math.Inf(1)}}
}

// hist2 is a histogram over the boundaries 0, 1 ms, +Inf.
func hist2(counts ...uint64) SchedHistogram {
	return SchedHistogram{Counts: counts, Buckets: []float64{0, 0.001, math.Inf(1)}}
}

// The signal's step table: each tick's waits are the difference of two
// cumulative histograms; a tick counts for the window (3 s) after it. The
// delay is a floor: 4 × the lowest tick's median wait, or the fastest
// loopback round trip, whichever is longer.
func TestCPUSignalSteps(t *testing.T) {
	c, err := NewCPUSignal(CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const ms = time.Millisecond
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, st := range []struct {
		t               float64
		h               SchedHistogram
		loop            time.Duration
		p50, p90, p99   time.Duration
		loopback, delay time.Duration
		note            string
	}{
		{t: 0, h: hist(0, 0, 0, 0, 0, 0), note: "baseline only"},
		{t: 1, h: hist(0, 0, 100, 0, 0, 0), loop: 3 * ms, p90: 2 * ms, p99: 2 * ms,
			note: "100 waits in [2, 4) ms; beside the baseline tick the floor is 0"},
		{t: 2, h: hist(0, 0, 200, 0, 0, 0), loop: 5 * ms, p90: 2 * ms, p99: 2 * ms, note: "the baseline is 2 s old"},
		{t: 3.5, h: hist(0, 0, 300, 0, 0, 100), loop: 4 * ms, p50: 2 * ms, p90: 16 * ms, p99: 16 * ms, loopback: 3 * ms, delay: 8 * ms,
			note: "the baseline left the window: floors of three busy ticks (medians 2 ms, × 4 hops; loopbacks 3, 5, 4 ms); a tail of 16 ms does not count"},
		{t: 4.5, h: hist(0, 0, 300, 0, 0, 110), loop: 2 * ms, p90: 16 * ms, p99: 16 * ms, loopback: 2 * ms, delay: 2 * ms,
			note: "10 waits are too few to say anything: the scheduling floor falls to 0"},
		{t: 8, h: hist2(5, 0), note: "a histogram of another shape is a new baseline; the rest left the window"},
		{t: 8.25, h: hist2(0, 0), note: "counts that went back: a new baseline"},
		{t: 11.5, h: hist2(0, 20), loop: ms, p50: ms, p90: ms, p99: ms, loopback: ms, delay: 4 * ms, note: "20 waits from the new baseline, alone in the window"},
		{t: 11.75, h: SchedHistogram{Counts: []uint64{0, 40}}, p90: ms, p99: ms, note: "no boundaries: nothing measured, and no baseline"},
		{t: 12, h: hist2(0, 60), loop: ms, p90: ms, p99: ms, note: "so the next one is a baseline again"},
	} {
		c.ObserveAt(at(st.t), st.h, st.loop)
		s := c.StatusAt(at(st.t))
		want := CPUStatus{SchedP50: st.p50, SchedP90: st.p90, SchedP99: st.p99, Loopback: st.loopback, Delay: st.delay}
		if s != want {
			t.Errorf("t=%v (%s): %+v, want %+v", st.t, st.note, s, want)
		}
	}
}

func TestCPUSignalOptions(t *testing.T) {
	if _, err := NewCPUSignal(CPUOptions{AckHops: -1}); err == nil {
		t.Error("negative hops accepted")
	}
	c, err := NewCPUSignal(CPUOptions{AckHops: 1 << 60})
	if err != nil {
		t.Fatal(err)
	}
	c.ObserveAt(t0, hist(0, 0, 0, 0, 0, 0), 0)
	c.ObserveAt(t0.Add(4*time.Second), hist(0, 0, 0, 0, 0, 100), 0)
	if d := c.StatusAt(t0.Add(4 * time.Second)).Delay; d != time.Duration(math.MaxInt64) {
		t.Errorf("overflowing delay %v, want the largest duration", d)
	}
}

// Acks delayed by the node's own CPU (RTT 1 ms rising to 10 ms with every
// send held by the shaper, which alone reads as a standing queue and
// cuts C) neither cut C nor raise the controller's level when the CPU
// explains the delay, and do both when it explains less than the queue:
// the delay is subtracted, not a veto.
func TestEstimatorCPUDelayNotCongestion(t *testing.T) {
	for _, tc := range []struct {
		cpu       time.Duration
		cut       bool
		inflation float64 // at most, at the end
	}{
		{cpu: 0, cut: true},
		{cpu: 12 * time.Millisecond, cut: false, inflation: 1},
		{cpu: 2 * time.Millisecond, cut: true},
	} {
		e, err := NewEstimator(EstimatorOptions{LinkCeil: 100 * mb})
		if err != nil {
			t.Fatal(err)
		}
		id, now := uint64(0), t0
		send := func(rtt time.Duration) {
			for range 8 {
				id++
				e.OnSendAt(now, id, 10_000, false)
				e.OnAckAt(now.Add(rtt), id)
				now = now.Add(time.Millisecond)
			}
			now = now.Add(rtt)
		}
		for range 20 {
			send(time.Millisecond)
		}
		before := e.SnapshotAt(now).Capacity
		e.SetCPUDelayAt(now, tc.cpu)
		for range 40 {
			send(10 * time.Millisecond)
		}
		s := e.SnapshotAt(now)
		if cut := s.Capacity < before*9/10; cut != tc.cut {
			t.Errorf("cpu delay %v: C %d → %d, cut %v, want %v", tc.cpu, before, s.Capacity, cut, tc.cut)
		}
		if tc.inflation > 0 && s.Inflation > tc.inflation {
			t.Errorf("cpu delay %v: inflation %.2f, want ≤ %.2f", tc.cpu, s.Inflation, tc.inflation)
		}
		if s.CPUDelay != tc.cpu {
			t.Errorf("snapshot's CPU delay %v, want %v", s.CPUDelay, tc.cpu)
		}
		// The controller, fed the snapshot for a few ticks, raises the
		// level only for the queue the CPU does not explain.
		c, err := NewController(ControllerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		level := 0
		for i := range 4 {
			level = c.EvaluateAt(now.Add(time.Duration(i)*DefaultTick), Inputs{Link: s})
		}
		if raised := level > 0; raised != tc.cut {
			t.Errorf("cpu delay %v: inflation %.2f, level %d; want raised %v", tc.cpu, s.Inflation, level, tc.cut)
		}
	}
}
