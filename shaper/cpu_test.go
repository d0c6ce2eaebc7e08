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
// cumulative histograms; a tick counts for the window (3 s) after it.
func TestCPUSignalSteps(t *testing.T) {
	c, err := NewCPUSignal(CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const ms = time.Millisecond
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, st := range []struct {
		t        float64
		h        SchedHistogram
		loop     time.Duration
		p90, p99 time.Duration
		loopback time.Duration
		delay    time.Duration
		note     string
	}{
		{t: 0, h: hist(1000, 0, 0, 0, 0, 0), note: "baseline only"},
		{t: 0.25, h: hist(1100, 0, 0, 0, 0, 0), loop: 200 * time.Microsecond,
			loopback: 200 * time.Microsecond, delay: 200 * time.Microsecond, note: "idle: every wait under 1 ms"},
		{t: 0.5, h: hist(1180, 10, 5, 4, 1, 0), p90: ms, p99: 4 * ms, loopback: 200 * time.Microsecond, delay: 16 * ms,
			note: "100 waits: 80 < 1 ms, 10 in [1,2), 5 in [2,4), 4 in [4,8), 1 in [8,16): p90 1 ms, p99 4 ms (lower edges), × 4 hops"},
		{t: 0.75, h: hist(1185, 10, 5, 4, 1, 0), p90: ms, p99: 4 * ms, loopback: 200 * time.Microsecond, delay: 16 * ms,
			note: "5 waits are too few to say anything; the window still holds the last tick"},
		{t: 1, h: hist(1185, 10, 5, 4, 1, 100), loop: 30 * ms, p90: 16 * ms, p99: 16 * ms, loopback: 30 * ms, delay: 64 * ms,
			note: "every wait ≥ 16 ms: the open bucket's lower edge"},
		{t: 3.6, h: hist(1285, 10, 5, 4, 1, 100), loop: 0, p90: 16 * ms, p99: 16 * ms, loopback: 30 * ms, delay: 64 * ms,
			note: "idle tick, the 1 s tick is 2.6 s old"},
		{t: 4.1, h: hist(1385, 10, 5, 4, 1, 100), note: "3.1 s after the busy tick: forgotten"},
		{t: 4.35, h: hist2(50, 0), note: "a histogram of another shape is a new baseline"},
		{t: 4.6, h: hist2(0, 0), note: "counts that went back: a new baseline"},
		{t: 4.85, h: hist2(0, 20), p90: ms, p99: ms, delay: 4 * ms, note: "20 waits from the new baseline"},
		{t: 5.1, h: SchedHistogram{Counts: []uint64{0, 40}}, p90: ms, p99: ms, delay: 4 * ms, note: "no boundaries: no figures, no baseline"},
		{t: 5.35, h: hist2(0, 60), p90: ms, p99: ms, delay: 4 * ms, note: "so the next one is a baseline again"},
	} {
		c.ObserveAt(at(st.t), st.h, st.loop)
		s := c.StatusAt(at(st.t))
		want := CPUStatus{SchedP90: st.p90, SchedP99: st.p99, Loopback: st.loopback, Delay: st.delay}
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
	c.ObserveAt(t0.Add(time.Second), hist(0, 0, 0, 0, 0, 100), 0)
	if d := c.StatusAt(t0.Add(time.Second)).Delay; d != time.Duration(math.MaxInt64) {
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
