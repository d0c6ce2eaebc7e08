package shaper

import (
	"fmt"
	"math"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// This file is the compression policy: which zstd level a class's batches
// are compressed at, and how large they are cut, from what the link can
// carry and what the cores can compress. ChooseCompression is the pure
// rule, which the node and `sluice plan` both evaluate; CompressMeter is
// the node's memory of each level's measured ratio and speed.

// CompressLevel is one of the four zstd levels a class may use, in order
// of ratio (and of cost): CompressFastest < CompressDefault <
// CompressBetter < CompressBest.
type CompressLevel uint8

// Compression levels.
const (
	CompressFastest CompressLevel = iota
	CompressDefault
	CompressBetter
	CompressBest
)

// CompressLevels is the number of compression levels.
const CompressLevels = 4

// String returns the level's name in config: priority.CompressionFastest,
// …Default, …Better, …Best.
func (l CompressLevel) String() string {
	switch l {
	case CompressFastest:
		return priority.CompressionFastest
	case CompressDefault:
		return priority.CompressionDefault
	case CompressBetter:
		return priority.CompressionBetter
	case CompressBest:
		return priority.CompressionBest
	}
	return fmt.Sprintf("CompressLevel(%d)", uint8(l))
}

// ParseCompressLevel returns the level named name (a priority.Compression*
// constant other than auto); "" is CompressFastest.
func ParseCompressLevel(name string) (CompressLevel, bool) {
	switch name {
	case "", priority.CompressionFastest:
		return CompressFastest, true
	case priority.CompressionDefault:
		return CompressDefault, true
	case priority.CompressionBetter:
		return CompressBetter, true
	case priority.CompressionBest:
		return CompressBest, true
	}
	return 0, false
}

// CompressBounds returns the levels class c may use: one level for a fixed
// compression, its CompressionMin..CompressionMax for
// priority.CompressionAuto ("" is auto). An unset bound is fastest and
// better, as priority.Class documents: best is opt-in, since an encoder at
// best holds about 35 MiB.
func CompressBounds(c *priority.Class) (lo, hi CompressLevel) {
	if l, ok := ParseCompressLevel(c.Compression); ok && c.Compression != "" {
		return l, l
	}
	lo, hi = CompressFastest, CompressBetter
	if l, ok := ParseCompressLevel(c.CompressionMin); ok && c.CompressionMin != "" {
		lo = l
	}
	if l, ok := ParseCompressLevel(c.CompressionMax); ok && c.CompressionMax != "" {
		hi = l
	}
	return lo, max(lo, hi)
}

// LevelEstimate is what is known of one level's compression of a class's
// batches.
type LevelEstimate struct {
	// Ratio is raw bytes per wire byte (8 = 8:1).
	Ratio float64
	// Speed is raw bytes compressed per second of one core's time.
	Speed float64
	// Measured: from the class's own batches at this level; else derived
	// from a measured level by the priors' proportions, or the priors.
	Measured bool
}

// Compression priors: each level's ratio and per-core speed relative to
// CompressFastest, and CompressFastest's own, for a level never measured.
// Measured with klauspost/compress zstd on the Segment SDK events of the
// issue-13 workload (one goroutine, batches of 128 and 512 KiB raw, best of
// three, 2-core machine, loaded): fastest 10.1× / 11.7×, 530–670 MB/s;
// default ×1.04, ×0.9 speed; better ×1.11–1.13, ×0.45; best ×1.14–1.17,
// ×0.11. Only the proportions matter once one level is measured.
var (
	priorRatio = [CompressLevels]float64{1, 1.04, 1.12, 1.16}
	priorSpeed = [CompressLevels]float64{1, 0.9, 0.45, 0.11}
)

// Absolute priors before any batch is measured.
const (
	PriorCompressRatio   = 8     // raw/wire of fastest (the node's only; sluice plan without a ratio or sample assumes 1)
	PriorCompressSpeed   = 400e6 // raw bytes/s per core of fastest
	DefaultCompressAlpha = 0.125 // EWMA weight of a new batch
)

// Policy defaults.
const (
	// DefaultCompressMargin: levels whose deliverable rate is within this
	// fraction of the best count as equal, and the one of highest ratio
	// among them is chosen (fewer bytes for the same events). The current
	// level is kept until it falls 2 × this below the best (hysteresis).
	DefaultCompressMargin = 0.05
	// DefaultLinkProbeGain: when the link held nothing back lately (the
	// node sent all it had), its estimate only says what the node sent;
	// the policy assumes the link carries this many times more.
	DefaultLinkProbeGain = 2
	// DefaultBulkAirtime is the air time at the link's target a batch of
	// a class under automatic compression may take: the longest a
	// critical batch waits behind it once it is on the wire. Longer than
	// DefaultBatchAirtime (fixed levels) because, on a link that is the
	// bottleneck, batch size is where most of the ratio is: on the SDK
	// events, fastest compresses 128 KiB batches 10.1× and 512 KiB ones
	// 11.7×; best compresses them 11.5× and 13.6×.
	DefaultBulkAirtime = 100 * time.Millisecond
)

// CompressInputs is what the policy decides from.
type CompressInputs struct {
	// LinkBytesPerSec is the link's target rate in wire bytes/s
	// (capacity × headroom); ≤ 0 when unknown or unshaped: then the
	// class's lowest level and its largest batches.
	LinkBytesPerSec int64
	// LinkFull: sends waited for the link (pacing, in-flight cap) lately,
	// so LinkBytesPerSec is the link's. When false it is a lower bound
	// (the node had nothing more to send) and counts DefaultLinkProbeGain
	// times: a node held back by its own compression would otherwise
	// never see the link is faster.
	LinkFull bool
	// Cores is the CPU the class's compression may use, in cores (its
	// compression workers). ≤ 0 counts as 1.
	Cores float64
	// Min and Max bound the level (CompressBounds).
	Min, Max CompressLevel
	// Current is the level in use (hysteresis).
	Current CompressLevel
	// Levels are the estimates of each level (CompressMeter.Estimates).
	Levels [CompressLevels]LevelEstimate
	// Airtime, MinBatchBytes and MaxBatchBytes bound the batch's raw size
	// (BatchRawBytes): at most Airtime on the wire at the target, never
	// below MinBatchBytes unless MaxBatchBytes (the class's) is smaller.
	Airtime                      time.Duration
	MinBatchBytes, MaxBatchBytes int
	// Margin is DefaultCompressMargin when 0.
	Margin float64
}

// Bottleneck names what bounds a class's delivery at the chosen level.
type Bottleneck string

// Bottlenecks.
const (
	BottleneckUnknown Bottleneck = "unknown" // no link estimate (unshaped, or none yet)
	BottleneckLink    Bottleneck = "link"
	BottleneckCPU     Bottleneck = "cpu"
)

// CompressChoice is the policy's decision.
type CompressChoice struct {
	Level CompressLevel
	// BatchBytes is the raw size bound of the class's next batches.
	BatchBytes int
	Bottleneck Bottleneck
	// Deliverable is each level's raw bytes/s, min(link × ratio, cores ×
	// speed); 0 outside the bounds or with no link estimate.
	Deliverable [CompressLevels]float64
}

// ChooseCompression is the compression policy. A level L delivers
//
//	D(L) = min(link × ratio(L), cores × speed(L))
//
// raw bytes/s: the link carries link wire bytes, which are ratio(L) raw
// bytes each, and the cores compress speed(L) raw bytes/s each. The
// policy picks, within [Min, Max], the level of highest ratio among those
// with D ≥ (1 − margin) × max D: fastest when the cores are the
// bottleneck, the densest level the cores keep up with when the link is.
// The current level is kept while it is within 2 × margin of the best and
// no candidate has a higher ratio. The batch bound is BatchRawBytes at the
// chosen level's ratio.
func ChooseCompression(in CompressInputs) CompressChoice {
	lo, hi := min(in.Min, CompressBest), min(in.Max, CompressBest)
	hi = max(lo, hi)
	margin := in.Margin
	if !(margin > 0) {
		margin = DefaultCompressMargin
	}
	cores := in.Cores
	if !(cores > 0) {
		cores = 1
	}
	est := in.Levels
	for l := range est {
		if !(est[l].Ratio >= 1) {
			est[l].Ratio = 1
		}
		if !(est[l].Speed > 0) {
			est[l].Speed = 1
		}
	}
	out := CompressChoice{Level: lo, Bottleneck: BottleneckUnknown, BatchBytes: in.MaxBatchBytes}
	if in.LinkBytesPerSec <= 0 {
		return out
	}
	link := float64(in.LinkBytesPerSec)
	if !in.LinkFull {
		link *= DefaultLinkProbeGain
	}
	var best float64
	for l := lo; l <= hi; l++ {
		d := min(link*est[l].Ratio, cores*est[l].Speed)
		out.Deliverable[l] = d
		best = max(best, d)
	}
	pick := CompressLevel(CompressLevels) // none yet
	for l := lo; l <= hi; l++ {
		if out.Deliverable[l] >= (1-margin)*best && (pick == CompressLevels || est[l].Ratio > est[pick].Ratio) {
			pick = l
		}
	}
	cur := in.Current
	if cur >= lo && cur <= hi && cur != pick && est[cur].Ratio >= est[pick].Ratio &&
		out.Deliverable[cur] >= (1-2*margin)*best {
		pick = cur
	}
	out.Level = pick
	out.Bottleneck = BottleneckCPU
	if link*est[pick].Ratio <= cores*est[pick].Speed {
		out.Bottleneck = BottleneckLink
	}
	out.BatchBytes = BatchRawBytes(in.LinkBytesPerSec, in.Airtime, 1/est[pick].Ratio, in.MinBatchBytes, in.MaxBatchBytes)
	return out
}

// CompressMeter keeps each level's ratio and speed as an EWMA over the
// class's batches (bytes-weighted: the sums of raw bytes, wire bytes and
// compression time decay by the same weight), and derives the levels not
// measured yet from a measured one by the priors' proportions. The zero
// value is not usable: use NewCompressMeter.
type CompressMeter struct {
	alpha float64
	raw   [CompressLevels]float64
	wire  [CompressLevels]float64
	busy  [CompressLevels]float64 // seconds
	n     [CompressLevels]int
}

// NewCompressMeter returns a meter whose EWMA weight per batch is alpha
// (DefaultCompressAlpha when not in (0, 1]).
func NewCompressMeter(alpha float64) *CompressMeter {
	if !(alpha > 0 && alpha <= 1) {
		alpha = DefaultCompressAlpha
	}
	return &CompressMeter{alpha: alpha}
}

// Observe records a batch of raw bytes compressed at level l to wire bytes
// in busy (the compressing goroutine's wall time). Empty batches and a
// level out of range are ignored.
func (m *CompressMeter) Observe(l CompressLevel, raw, wire int, busy time.Duration) {
	if l >= CompressLevels || raw <= 0 || wire <= 0 {
		return
	}
	b := max(busy.Seconds(), 1e-9)
	if m.n[l] == 0 {
		m.raw[l], m.wire[l], m.busy[l] = float64(raw), float64(wire), b
	} else {
		a := m.alpha
		m.raw[l] = (1-a)*m.raw[l] + a*float64(raw)
		m.wire[l] = (1-a)*m.wire[l] + a*float64(wire)
		m.busy[l] = (1-a)*m.busy[l] + a*b
	}
	m.n[l]++
}

// Samples returns the number of batches observed at level l.
func (m *CompressMeter) Samples(l CompressLevel) int {
	if l >= CompressLevels {
		return 0
	}
	return m.n[l]
}

// Estimates returns every level's estimate: measured where batches were
// observed, the others by EstimateLevels.
func (m *CompressMeter) Estimates() [CompressLevels]LevelEstimate {
	var out [CompressLevels]LevelEstimate
	for l := range CompressLevels {
		if m.n[l] > 0 {
			out[l] = LevelEstimate{Ratio: m.raw[l] / m.wire[l], Speed: m.raw[l] / m.busy[l], Measured: true}
		}
	}
	return EstimateLevels(out)
}

// EstimateLevels returns known with every level not Measured estimated:
// scaled by the priors' proportions from the measured level nearest to it
// (the lower one on a tie), or the priors when none is measured. A
// measured level with a speed of 0 (a ratio alone, as `sluice plan` has
// it) lends the prior speed.
func EstimateLevels(known [CompressLevels]LevelEstimate) [CompressLevels]LevelEstimate {
	out := known
	for l := range CompressLevels {
		if out[l].Measured && !(out[l].Speed > 0) {
			out[l].Speed = PriorCompressSpeed * priorSpeed[l]
		}
	}
	for l := range CompressLevels {
		if known[l].Measured {
			continue
		}
		ref, dist := -1, math.MaxInt
		for r := range CompressLevels {
			if d := max(r-l, l-r); known[r].Measured && d < dist {
				ref, dist = r, d
			}
		}
		if ref < 0 {
			out[l] = LevelEstimate{Ratio: PriorCompressRatio * priorRatio[l], Speed: PriorCompressSpeed * priorSpeed[l]}
			continue
		}
		out[l] = LevelEstimate{
			Ratio: max(1, out[ref].Ratio*priorRatio[l]/priorRatio[ref]),
			Speed: out[ref].Speed * priorSpeed[l] / priorSpeed[ref],
		}
	}
	return out
}
