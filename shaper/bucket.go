package shaper

import (
	"math/bits"
	"time"
)

// nano is the token sub-unit: buckets hold nano-tokens so that a rate in
// tokens/s times an interval in ns is exact integer arithmetic.
const nano = int64(time.Second)

// maxRate clamps any rate (tokens/s) so that depth and refill products stay
// far from int64 overflow: 2^34 B/s ≈ 137 Gbit/s.
const maxRate = int64(1) << 34

// maxDepthTokens clamps a bucket depth (tokens) for the same reason.
const maxDepthTokens = int64(1) << 32

// bucket is a token bucket with lazy refill. tok may go negative by at most
// one message (the admission rule charges a full cost once min(cost, depth)
// is available). A bucket with unlimited set always admits and never charges.
type bucket struct {
	rate      int64 // tokens per second
	depth     int64 // nano-tokens
	tok       int64 // nano-tokens at last
	last      time.Time
	unlimited bool
}

func newBucket(rate, depthTokens int64) bucket {
	b := bucket{}
	b.configure(rate, depthTokens)
	b.tok = b.depth
	return b
}

func (b *bucket) configure(rate, depthTokens int64) {
	if rate <= 0 {
		b.unlimited, b.rate = true, 0
		return
	}
	if b.unlimited {
		b.unlimited = false
		b.tok = -1 // refilled below
	}
	b.rate = min(rate, maxRate)
	b.depth = max(1, min(depthTokens, maxDepthTokens)) * nano
	if b.tok == -1 || b.tok > b.depth {
		b.tok = b.depth
	}
}

// tokensAt returns the nano-tokens at t without changing the bucket. Times
// before the last update count as the last update (as x/time/rate does).
func (b *bucket) tokensAt(t time.Time) int64 {
	if b.unlimited {
		return 1<<62 - 1
	}
	if b.last.IsZero() || !t.After(b.last) || b.tok >= b.depth {
		return b.tok
	}
	dt := int64(t.Sub(b.last))
	if fill := (b.depth - b.tok + b.rate - 1) / b.rate; dt >= fill {
		return b.depth
	}
	return b.tok + b.rate*dt
}

// advance moves the bucket's clock to t (never backwards).
func (b *bucket) advance(t time.Time) {
	if b.unlimited {
		return
	}
	b.tok = b.tokensAt(t)
	if b.last.IsZero() || t.After(b.last) {
		b.last = t
	}
}

// reconfigure changes rate and depth at t, keeping the tokens earned so far.
func (b *bucket) reconfigure(t time.Time, rate, depthTokens int64) {
	b.advance(t)
	b.configure(rate, depthTokens)
	if !b.unlimited && (b.last.IsZero() || t.After(b.last)) {
		b.last = t
	}
}

// need is the admission threshold for a cost in tokens: min(cost, depth).
func (b *bucket) need(cost int64) int64 {
	return min(cost*nano, b.depth)
}

func (b *bucket) has(t time.Time, cost int64) bool {
	return b.unlimited || b.tokensAt(t) >= b.need(cost)
}

func (b *bucket) charge(t time.Time, cost int64) {
	if b.unlimited {
		return
	}
	b.advance(t)
	b.tok -= cost * nano
}

// timeFor returns the earliest instant ≥ now at which the bucket holds n
// nano-tokens, or zero time (never) when n exceeds its depth.
func (b *bucket) timeFor(now time.Time, n int64) time.Time {
	if b.unlimited {
		return now
	}
	tok := b.tokensAt(now)
	if tok >= n {
		return now
	}
	if n > b.depth || b.rate <= 0 {
		return time.Time{}
	}
	from := now
	if !b.last.IsZero() && b.last.After(now) {
		from = b.last
	}
	return from.Add(time.Duration((n - tok + b.rate - 1) / b.rate))
}

// mulDiv returns a*b/c for non-negative operands without intermediate
// overflow (the result must fit in int64; it is clamped otherwise).
func mulDiv(a, b, c int64) int64 {
	if a <= 0 || b <= 0 || c <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi >= uint64(c) {
		return 1<<63 - 1
	}
	q, _ := bits.Div64(hi, lo, uint64(c))
	if q > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(q)
}

// later returns the later of two instants; zero (never) wins.
func later(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}

// earlier returns the earlier of two instants; zero (never) loses.
func earlier(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case b.Before(a):
		return b
	}
	return a
}
