package shaper

import (
	"math"
	"time"
)

// This file is the bottleneck model: the arithmetic by which the node sizes
// its batches and the shaper charges them, as pure functions, so that
// `sluice plan` evaluates the same code the data path runs. Rates are
// bytes/s and messages (packets, batches) per second; sizes are bytes.

// Batch sizing defaults, as the node uses them.
const (
	// DefaultBatchAirtime: a batch takes at most this long on the wire at
	// the link's target rate. A batch is the shaper's packet: once on the
	// wire nothing overtakes it, so a critical batch queued behind a bulk
	// batch waits for all of it.
	DefaultBatchAirtime = 25 * time.Millisecond
	// MinBatchRawBytes: a batch is never cut below this many raw bytes for
	// air time's sake (the class's own bound may still be smaller).
	MinBatchRawBytes = 16 << 10
)

// TargetRate is the estimator's rule Target = min(ceil, capacity) ×
// headroom, in bytes/s, with the same integer arithmetic (headroom in
// parts per million). ceil ≤ 0 means no ceiling.
func TargetRate(capacity, ceil int64, headroom float64) int64 {
	if ceil > 0 {
		capacity = min(capacity, ceil)
	}
	return mulDiv(capacity, int64(math.Round(headroom*1e6)), 1_000_000)
}

// BatchRawBytes is the raw (uncompressed) size bound of a batch: maxBytes,
// or less on a slow link, so that the batch, compressed to wireFrac of its
// raw size (wire/raw, e.g. 0.125 for 8:1), takes at most airtime at
// target bytes/s; never below minBytes unless maxBytes is smaller. With
// target ≤ 0 (no target: unshaped) it is maxBytes. A wireFrac that is not
// positive counts as 1 (no compression).
func BatchRawBytes(target int64, airtime time.Duration, wireFrac float64, minBytes, maxBytes int) int {
	if target <= 0 {
		return maxBytes
	}
	if !(wireFrac > 0) {
		wireFrac = 1
	}
	b := float64(target) * airtime.Seconds() / wireFrac
	return int(min(max(b, float64(minBytes)), float64(maxBytes)))
}

// BatchEvents is the mean number of events in a batch of a class at a
// steady arrival rate of eventsPerSec (Poisson) events of meanBytes each:
//
//   - the spool's read rule: at least one event, then events while their
//     payload bytes fit in rawBound and their count in maxEvents (≤ 0: no
//     count bound);
//   - linger: the lane waits linger after the first unsent event, so a
//     batch holds 1 + λ·linger events on average when neither bound is
//     reached first. linger = 0 sends at once: one event (an upper bound
//     on packets; a backlog would fill batches).
func BatchEvents(eventsPerSec, meanBytes float64, rawBound, maxEvents int, linger time.Duration) float64 {
	n := math.Inf(1)
	if maxEvents > 0 {
		n = float64(maxEvents)
	}
	if meanBytes > 0 && rawBound > 0 {
		n = min(n, max(1, math.Floor(float64(rawBound)/meanBytes)))
	}
	fill := 1 + max(eventsPerSec, 0)*linger.Seconds()
	return max(1, min(n, fill))
}

// BatchWireBytes is the compressed body of a batch of events of meanBytes
// each: NDJSON (one newline per event) times wireFrac.
func BatchWireBytes(events, meanBytes, wireFrac float64) float64 {
	if !(wireFrac > 0) {
		wireFrac = 1
	}
	return events * (meanBytes + 1) * wireFrac
}

// MsgCost is what a message of bytes costs in the lanes' byte buckets:
// the bytes plus the per-message overhead (headers, framing), by default
// DefaultOverheadBytes.
func MsgCost(bytes float64, overhead int) float64 { return bytes + float64(max(overhead, 0)) }

// Load is an offered load.
type Load struct {
	BytesPerSec float64
	MsgsPerSec  float64
}

// Add returns l + o.
func (l Load) Add(o Load) Load {
	return Load{BytesPerSec: l.BytesPerSec + o.BytesPerSec, MsgsPerSec: l.MsgsPerSec + o.MsgsPerSec}
}

// Scale returns l × f (retry amplification, fan-out).
func (l Load) Scale(f float64) Load {
	return Load{BytesPerSec: l.BytesPerSec * f, MsgsPerSec: l.MsgsPerSec * f}
}

// BitsPerSec returns the byte rate in bits per second.
func (l Load) BitsPerSec() float64 { return l.BytesPerSec * 8 }

// MeanMsgBytes is the mean message size, 0 without messages.
func (l Load) MeanMsgBytes() float64 {
	if l.MsgsPerSec <= 0 {
		return 0
	}
	return l.BytesPerSec / l.MsgsPerSec
}

// Capacity is what a hop can carry. A zero dimension is unlimited.
type Capacity struct {
	BitsPerSec float64
	MsgsPerSec float64
}

// Utilization is ρ of a load on a hop: the larger of its bit and packet
// utilizations (the dimension that binds). It is 0 when the hop has no
// limit.
func Utilization(l Load, c Capacity) float64 {
	var u float64
	if c.BitsPerSec > 0 {
		u = l.BitsPerSec() / c.BitsPerSec
	}
	if c.MsgsPerSec > 0 {
		u = max(u, l.MsgsPerSec/c.MsgsPerSec)
	}
	return u
}

// ServiceTime is how long the hop takes to carry one message of
// meanBytes: its transmission time, or the hop's per-packet time if that
// is longer. 0 when the hop has no limit.
func ServiceTime(meanBytes float64, c Capacity) float64 {
	var s float64
	if c.BitsPerSec > 0 {
		s = meanBytes * 8 / c.BitsPerSec
	}
	if c.MsgsPerSec > 0 {
		s = max(s, 1/c.MsgsPerSec)
	}
	return s
}

// MD1Wait is the mean time a message waits in the queue of a hop before
// its service starts, modelled as M/D/1 (Poisson arrivals at lambda
// messages/s, a deterministic service rate mu messages/s): W = ρ / (2μ(1 −
// ρ)), ρ = λ/μ (Pollaczek–Khinchine with zero service variance). ok is
// false when ρ ≥ 1: the queue grows without bound.
func MD1Wait(lambda, mu float64) (wait time.Duration, ok bool) {
	if lambda <= 0 {
		return 0, true
	}
	if !(mu > 0) {
		return 0, false
	}
	rho := lambda / mu
	if rho >= 1 {
		return 0, false
	}
	w := math.Round(rho / (2 * mu * (1 - rho)) * 1e9)
	if w >= math.MaxInt64 {
		return math.MaxInt64, true
	}
	return time.Duration(w), true
}

// Verdict is how a hop's utilization compares with the headroom.
type Verdict string

// Verdicts.
const (
	VerdictOK           Verdict = "ok"            // ρ ≤ headroom
	VerdictOverHeadroom Verdict = "over headroom" // headroom < ρ ≤ 1
	VerdictOverCapacity Verdict = "over capacity" // ρ > 1
)

// HeadroomVerdict classifies a utilization against the headroom (the
// target utilization, DefaultHeadroom = 0.8).
func HeadroomVerdict(utilization, headroom float64) Verdict {
	switch {
	case utilization > 1:
		return VerdictOverCapacity
	case utilization > headroom:
		return VerdictOverHeadroom
	}
	return VerdictOK
}
