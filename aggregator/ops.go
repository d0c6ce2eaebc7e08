package aggregator

import (
	"math"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// This file holds what operations tooling (metrics, health checks, the
// status page) reads from a node beyond Stats: readiness, the shaper's
// per-class view and the latency histograms themselves.

// Accepting reports whether Ingest takes events: false once Shutdown or
// Close has begun. The spool stays open exactly as long as the node
// accepts, and until the drain ends after that.
func (n *Node) Accepting() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return !n.closing
}

// DiskFull reports whether the filesystem holding the spool is full: an
// Ingest failed with ErrNoSpace and no room has been seen since. It clears
// by itself at the first commit more than a second after the last refusal,
// or when DiskFull finds room: while the disk is full it checks at most
// once a second by writing and removing a 64 KiB probe file (see
// spool.Spool.NoSpace), so a node taken out of rotation because of it
// still comes back. /readyz is 503 while it is true.
func (n *Node) DiskFull() bool { return n.spool.NoSpace() }

// ClassShape is one class as the shaper sees it at an instant: what it was
// configured with and what the link and the degradation level make of it.
type ClassShape struct {
	Class    string
	Priority int  // 0 highest .. 7 lowest
	Critical bool // served with strict priority
	// Rate and Ceil are the configured guarantee and ceiling; a zero
	// dimension means none (a class without a ceiling is bounded by the
	// link).
	Rate, Ceil priority.Rate
	// Guaranteed is the guarantee in force now: Rate scaled down when the
	// guarantees together exceed the link's target, and zero while the
	// level's plan throttles or defers the class. A zero guarantee means
	// the class gets only what the classes before it (by strict priority,
	// then priority and weight) leave of the link: with a link of unknown
	// capacity (Link.Ceil 0), percentages of it are zero and every class
	// is served that way.
	Guaranteed priority.Rate
	// LinkRate is the rate the lanes share now, bytes/s: the link's
	// target (Stats().Link.Target, measured when Link.Ceil is 0), or the
	// estimator's probe above it (Stats().Link.Pacing). 0 means
	// unlimited: Link.Unshaped, or before the first tick.
	LinkRate int64
	// CeilNow is the most the class may send now: its Ceil, or LinkRate
	// where that is lower or the class has no ceiling (a zero dimension
	// is unlimited); zero while the class is deferred.
	CeilNow priority.Rate
	// Unshaped is true with Link.Unshaped: the lanes are not used, and
	// only the configuration above is meaningful.
	Unshaped bool
	// Action is what the class does now: the plan's action at the current
	// degradation level, with a defer the link's health does not justify
	// turned into a throttle (shaper.EffectiveAction).
	Action priority.ActionKind
	// Deferred is true while the class sends nothing by its plan.
	Deferred bool
	// RateTokens and CeilTokens are the bytes available now in the
	// guarantee and ceiling buckets; negative is debt, 0 an unlimited
	// bucket.
	RateTokens, CeilTokens int64
	// GuaranteedBytes and BorrowedBytes count the bytes (wire bytes plus
	// the shaper's per-message overhead) sent since New within the
	// guarantee (or with strict priority) and borrowed from spare capacity.
	GuaranteedBytes, BorrowedBytes int64
}

// Shape returns every class's shaping state, in Options.Classes order
// (then classes found only in the spool), with the settings in force
// (Reconfigure changes them). With Link.Unshaped the token buckets are not
// used and only the configuration is meaningful.
func (n *Node) Shape() []ClassShape {
	k := n.drv
	snap := k.lanesSnapshot()
	out := make([]ClassShape, 0, len(n.lanes))
	for i, l := range n.lanes {
		c := l.cfg.Load().class
		act, _ := l.action()
		s := ClassShape{
			Class: l.name, Priority: c.Priority, Critical: c.Critical,
			Rate: c.Rate, Ceil: c.Ceil,
			Action: act.Kind, Unshaped: k.unshaped,
		}
		if i < len(snap.Classes) && !k.unshaped {
			ls := snap.Classes[i]
			s.Guaranteed, s.Deferred = ls.Rate, ls.Deferred
			s.RateTokens, s.CeilTokens = ls.RateTokens, ls.CeilTokens
			s.GuaranteedBytes, s.BorrowedBytes = ls.GuaranteedBytes, ls.BorrowedBytes
			s.LinkRate = snap.Target.BytesPerSec
			if !s.Deferred {
				s.CeilNow = priority.Rate{
					BytesPerSec: minLimit(c.Ceil.BytesPerSec, snap.Target.BytesPerSec),
					MsgsPerSec:  minLimit(c.Ceil.MsgsPerSec, snap.Target.MsgsPerSec),
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// minLimit is the lower of two limits where 0 means none.
func minLimit(a, b int64) int64 {
	switch {
	case a <= 0:
		return max(b, 0)
	case b <= 0:
		return a
	}
	return min(a, b)
}

// Histogram is a snapshot of a class's end-to-end latency distribution
// (ingest → JetStream ack, one observation per batch, of its oldest event)
// in the node's buckets: 8 per doubling, from 1 µs to about 18 minutes, so
// every power of two microseconds is a bucket edge. The zero value is an
// empty histogram.
type Histogram struct {
	Count uint64        // observations
	Sum   time.Duration // their sum
	Max   time.Duration // the largest observation since New
	// counts[i] is the observations in bucket i, below histUpper(i); the
	// last bucket also holds everything beyond the range.
	counts []uint64
}

// LatencyHistograms returns each class's latency histogram since New.
func (n *Node) LatencyHistograms() map[string]Histogram {
	out := make(map[string]Histogram, len(n.lanes))
	for _, l := range n.lanes {
		out[l.name] = l.stats.latency.snapshot()
	}
	return out
}

func (h *histogram) snapshot() Histogram {
	s := Histogram{counts: make([]uint64, histBuckets)}
	for i := range s.counts {
		s.counts[i] = h.buckets[i].Load()
		s.Count += s.counts[i]
	}
	s.Sum = time.Duration(h.sum.Load())
	s.Max = time.Duration(h.max.Load())
	return s
}

// Below returns the observations in the buckets whose upper edge is at
// most d: those shorter than d, with d rounded down to a bucket edge (at
// most 9% lower). Powers of two microseconds are edges, so there the count
// is exact. Observations beyond the range (about 18 minutes) are counted
// only in Count.
func (h Histogram) Below(d time.Duration) uint64 {
	var n uint64
	for i := 0; i < len(h.counts)-1 && histUpper(i) <= d; i++ {
		n += h.counts[i]
	}
	return n
}

// Quantile returns the q-quantile (q in [0, 1]) of the observations,
// accurate to about 10%: the upper edge of the bucket holding its rank,
// capped at Max. It returns 0 for an empty histogram.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	q = max(0, min(q, 1))
	rank := max(uint64(math.Ceil(q*float64(h.Count))), 1)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return min(histUpper(i), h.Max)
		}
	}
	return h.Max
}

// Sub returns h - o, bucket by bucket: the distribution of the
// observations between two snapshots of the same histogram, o the older.
// Max stays h's (the largest since New, not in the interval).
func (h Histogram) Sub(o Histogram) Histogram {
	d := Histogram{Sum: h.Sum - o.Sum, Max: h.Max, counts: make([]uint64, len(h.counts))}
	for i := range d.counts {
		d.counts[i] = h.counts[i]
		if i < len(o.counts) {
			d.counts[i] -= min(o.counts[i], h.counts[i])
		}
		d.Count += d.counts[i]
	}
	return d
}
