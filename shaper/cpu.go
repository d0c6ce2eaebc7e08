package shaper

import (
	"fmt"
	"math"
	"time"
)

// CPU signal defaults.
const (
	// DefaultCPUWindow is how long a tick's figures count: a round of acks
	// spans several ticks on a slow link, and its minimum RTT is inflated
	// only by contention that lasted the round.
	DefaultCPUWindow = 3 * time.Second
	// DefaultAckHops is how many scheduling waits one ack's round trip can
	// take on a busy machine (Proposed): the publisher's flush, the
	// server's read and its ack (the server shares the node's CPUs when it
	// is on the same machine, and its waits are like the node's), and the
	// client's reader handing the ack to the acker goroutine.
	DefaultAckHops = 4
	// minSchedSamples is the fewest goroutine waits in a tick from which
	// its quantiles are taken; fewer say nothing.
	minSchedSamples = 16
)

// SchedHistogram is the Go runtime's scheduling-latency histogram at an
// instant (runtime/metrics "/sched/latencies:seconds"): cumulative counts
// of the times goroutines waited to run, by bucket. Buckets are the
// boundaries in seconds, one more than Counts, as in
// metrics.Float64Histogram; the outer ones may be infinite.
type SchedHistogram struct {
	Counts  []uint64
	Buckets []float64
}

// CPUOptions configures a CPUSignal; zero values take the defaults.
type CPUOptions struct {
	// Window is how long each tick's figures count. Default 3 s.
	Window time.Duration
	// AckHops multiplies the scheduling median into RTT an ack loses to
	// it. Default 4.
	AckHops int
}

// CPUStatus is the node's CPU contention over the window.
type CPUStatus struct {
	// SchedP50 is the lowest tick's median time a goroutine waited to
	// run, over the window: the wait nearly every ack met throughout.
	// SchedP90 and SchedP99 are the worst tick's 90th and 99th
	// percentiles (for metrics: how bad it got).
	SchedP50, SchedP90, SchedP99 time.Duration
	// Loopback is the fastest round trip over the window of a message
	// through the machine's loopback to an echo in the node and back: the
	// queueing every ack met on the node's machine with no link in the
	// way. 0 when not measured in every tick of the window.
	Loopback time.Duration
	// Delay is the RTT inflation the node's own CPU explains:
	// max(AckHops × SchedP50, Loopback). Both are floors over the window,
	// not peaks, because what the estimator takes Delay out of is a
	// round's minimum RTT, which only delay every ack met can raise (a
	// peak-based delay, 4 × the worst p99, was 60–270 ms on a machine
	// with a load of 20 and hid a real queue: no cut on a step from 20 to
	// 5 Mbit/s). See Estimator.SetCPUDelayAt.
	Delay time.Duration
}

// CPUSignal tells CPU contention from link congestion: it turns per-tick
// samples of the runtime's scheduling latencies (and, where measured, a
// loopback round trip) into the RTT inflation the node's own CPU
// explains. On a busy machine acks queue behind the node's (and a local
// server's) work; without this, that delay read as the link's queue: the
// estimator cut capacity, the controller raised the level, and the node
// degraded itself on a healthy link. Not safe for concurrent use.
type CPUSignal struct {
	o     CPUOptions
	prev  []uint64
	ticks []cpuTick
}

type cpuTick struct {
	at                  time.Time
	p50, p90, p99, loop time.Duration
}

// NewCPUSignal returns a signal with no samples (CPUStatus zero).
func NewCPUSignal(o CPUOptions) (*CPUSignal, error) {
	if o.Window == 0 {
		o.Window = DefaultCPUWindow
	}
	if o.AckHops == 0 {
		o.AckHops = DefaultAckHops
	}
	if o.Window < 0 || o.AckHops < 0 {
		return nil, fmt.Errorf("%w: cpu options %+v", ErrInvalidOptions, o)
	}
	return &CPUSignal{o: o}, nil
}

// ObserveAt records one tick at now: the cumulative histogram h (its
// difference from the previous one is the tick's waits) and the tick's
// loopback round trip (0: not measured). The first histogram, or one whose
// shape changed or whose counts went back, only sets the baseline.
func (c *CPUSignal) ObserveAt(now time.Time, h SchedHistogram, loopback time.Duration) {
	t := cpuTick{at: now, loop: max(loopback, 0)}
	if len(h.Buckets) == len(h.Counts)+1 && len(c.prev) == len(h.Counts) {
		delta := make([]uint64, len(h.Counts))
		var total uint64
		ok := true
		for i, n := range h.Counts {
			if n < c.prev[i] {
				ok = false
				break
			}
			delta[i] = n - c.prev[i]
			total += delta[i]
		}
		if ok && total >= minSchedSamples {
			t.p50 = quantileLow(delta, h.Buckets, total, 50)
			t.p90 = quantileLow(delta, h.Buckets, total, 90)
			t.p99 = quantileLow(delta, h.Buckets, total, 99)
		}
	}
	if len(h.Buckets) == len(h.Counts)+1 {
		c.prev = append(c.prev[:0], h.Counts...)
	} else {
		c.prev = c.prev[:0]
	}
	c.ticks = append(c.ticks, t)
	c.expire(now)
}

// quantileLow is the pct-th percentile of the histogram counts over
// boundaries b (total counts): the lower edge of the bucket holding that
// rank, so that a bucket's width never adds to the delay excused.
func quantileLow(counts []uint64, b []float64, total uint64, pct uint64) time.Duration {
	rank := (total*pct + 99) / 100 // nearest rank, ≥ 1
	var seen uint64
	for i, n := range counts {
		seen += n
		if seen >= rank {
			lo := b[i]
			if math.IsInf(lo, 0) || lo <= 0 || math.IsNaN(lo) {
				return 0
			}
			if lo >= float64(math.MaxInt64)/1e9 {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(lo * 1e9)
		}
	}
	return 0
}

// expire drops ticks older than the window.
func (c *CPUSignal) expire(now time.Time) {
	i := 0
	for i < len(c.ticks) && now.Sub(c.ticks[i].at) > c.o.Window {
		i++
	}
	if i > 0 {
		c.ticks = append(c.ticks[:0], c.ticks[i:]...)
	}
}

// StatusAt returns the contention over the window ending at now.
func (c *CPUSignal) StatusAt(now time.Time) CPUStatus {
	c.expire(now)
	var s CPUStatus
	for i, t := range c.ticks {
		if i == 0 {
			s.SchedP50, s.Loopback = t.p50, t.loop
		}
		s.SchedP50 = min(s.SchedP50, t.p50)
		s.SchedP90 = max(s.SchedP90, t.p90)
		s.SchedP99 = max(s.SchedP99, t.p99)
		s.Loopback = min(s.Loopback, t.loop)
	}
	hops := s.SchedP50 * time.Duration(c.o.AckHops)
	if c.o.AckHops > 0 && hops/time.Duration(c.o.AckHops) != s.SchedP50 {
		hops = time.Duration(math.MaxInt64) // overflow
	}
	s.Delay = max(hops, s.Loopback)
	return s
}
