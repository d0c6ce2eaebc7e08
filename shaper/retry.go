package shaper

import (
	"fmt"
	"math"
	"time"
)

// Outcome is the result of one publish attempt, as the publisher maps it
// from its client's errors (shaper does not import the NATS client).
type Outcome uint8

const (
	OutcomeAck             Outcome = iota // stored
	OutcomeDuplicate                      // stored before (Nats-Msg-Id in the duplicate window): success
	OutcomeTimeout                        // no ack within the per-attempt timeout
	OutcomeNoResponders                   // no stream responded (503)
	OutcomeUnavailable                    // JetStream temporarily unavailable, leader change
	OutcomeDisconnected                   // connection lost with the attempt in flight
	OutcomePayloadTooLarge                // message above max_payload: split, never retry as is
	OutcomeNoStream                       // subject not bound to a stream
	OutcomeSeqMismatch                    // expected-sequence check failed
	OutcomeOther                          // anything else: treated as retryable
)

var outcomeNames = [...]string{"ack", "duplicate", "timeout", "no_responders", "unavailable",
	"disconnected", "payload_too_large", "no_stream", "seq_mismatch", "other"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Disposition is what to do with a batch after an outcome.
type Disposition uint8

const (
	// Delivered: done; advance the spool's acknowledged cursor.
	Delivered Disposition = iota
	// Retry: publish the identical batch (same Nats-Msg-Id) again at
	// Decision.At, through the lanes like a first send.
	Retry
	// Backlog: return the batch to the durable backlog (not dropped) and
	// send it again later, in order; the budget, horizon, attempts or level
	// refused an immediate retry.
	Backlog
	// Split: the batch is too large for the server; split it in two and send
	// the halves as new batches.
	Split
	// DeadLetter: a permanent failure; retrying cannot help.
	DeadLetter
)

var dispositionNames = [...]string{"delivered", "retry", "backlog", "split", "dead_letter"}

func (d Disposition) String() string {
	if int(d) < len(dispositionNames) {
		return dispositionNames[d]
	}
	return fmt.Sprintf("Disposition(%d)", uint8(d))
}

// Classify maps an outcome to its disposition before budget and backoff:
// Delivered, Retry, Split or DeadLetter.
func Classify(o Outcome) Disposition {
	switch o {
	case OutcomeAck, OutcomeDuplicate:
		return Delivered
	case OutcomePayloadTooLarge:
		return Split
	case OutcomeNoStream, OutcomeSeqMismatch:
		return DeadLetter
	}
	return Retry
}

// IsError reports whether the outcome counts as an error for link health
// (everything but an ack or a duplicate).
func (o Outcome) IsError() bool { return Classify(o) != Delivered }

// Backoff is capped exponential backoff with full jitter:
// delay(n) = U(0, min(Cap, Base·2ⁿ)).
type Backoff struct {
	Base time.Duration // default 250 ms
	Cap  time.Duration // default 30 s
}

// Ceiling returns min(Cap, Base·2ⁿ) without overflow (the exponent is
// clamped before shifting).
func (b Backoff) Ceiling(n int) time.Duration {
	base, cp := b.Base, b.Cap
	if base <= 0 {
		base = 250 * time.Millisecond
	}
	if cp <= 0 {
		cp = 30 * time.Second
	}
	n = max(0, n)
	if n >= 62 || base > cp>>n {
		return cp
	}
	return min(cp, base<<n)
}

// Delay returns the full-jitter delay for attempt n (0-based) given a
// uniform u in [0, 1): round(u·Ceiling(n)).
func (b Backoff) Delay(n int, u float64) time.Duration {
	v := b.Ceiling(n)
	u = max(0, min(u, 1))
	d := time.Duration(math.Round(u * float64(v)))
	return max(0, min(d, v))
}

// BudgetOptions configures a retry budget. Zero values take the defaults.
type BudgetOptions struct {
	// TTL is how long a first send backs retries. Default 10 s; kept in 10
	// slots of TTL/10.
	TTL time.Duration
	// Ratio of retries to first sends in the window. Default 0.1 (issue 3);
	// Finagle and Linkerd use 0.2. Negative means 0.
	Ratio float64
	// ReservePerSec retries are allowed per second regardless of traffic.
	// Default 1; negative means 0.
	ReservePerSec float64
}

const budgetSlots = 10

// Budget is a retry budget (Finagle/Linkerd/tower model): within the last
// TTL, allowed = ⌊ReservePerSec·TTL + Ratio·first sends⌋ − retries, and a
// retry goes out only if allowed ≥ 1. Not safe for concurrent use.
type Budget struct {
	width    int64 // slot width, ns
	ratioPPM int64
	reserve  int64 // retries per TTL, in ppm
	keys     [budgetSlots]int64
	sends    [budgetSlots]int64
	retries  [budgetSlots]int64
	stats    BudgetStats
}

// BudgetStats are cumulative counters.
type BudgetStats struct {
	FirstSends, Retries, Denied int64
}

// NewBudget returns a budget with o's settings.
func NewBudget(o BudgetOptions) (*Budget, error) {
	if o.TTL == 0 {
		o.TTL = 10 * time.Second
	}
	if o.TTL < budgetSlots {
		return nil, fmt.Errorf("%w: budget TTL %v too short", ErrInvalidOptions, o.TTL)
	}
	if o.Ratio == 0 {
		o.Ratio = 0.1
	}
	if o.ReservePerSec == 0 {
		o.ReservePerSec = 1
	}
	if math.IsNaN(o.Ratio) || math.IsNaN(o.ReservePerSec) || o.Ratio > 1000 || o.ReservePerSec > 1e6 {
		return nil, fmt.Errorf("%w: budget ratio %v reserve %v", ErrInvalidOptions, o.Ratio, o.ReservePerSec)
	}
	b := &Budget{width: int64(o.TTL) / budgetSlots}
	b.ratioPPM = int64(math.Round(max(0, o.Ratio) * 1e6))
	// reserve·TTL in ppm of a retry
	b.reserve = int64(math.Round(max(0, o.ReservePerSec) * 1e6 * o.TTL.Seconds()))
	for i := range b.keys {
		b.keys[i] = math.MinInt64
	}
	return b, nil
}

func (b *Budget) key(now time.Time) int64 {
	k := now.UnixNano() / b.width
	if now.UnixNano() < 0 && now.UnixNano()%b.width != 0 {
		k--
	}
	return k
}

// slot returns the slot for now, recycling it if it holds an older key.
func (b *Budget) slot(now time.Time) (int, int64) {
	k := b.key(now)
	i := int(((k % budgetSlots) + budgetSlots) % budgetSlots)
	if b.keys[i] < k {
		b.keys[i], b.sends[i], b.retries[i] = k, 0, 0
	}
	return i, k
}

// window sums the slots of the TTL ending at now, without changing them.
func (b *Budget) window(now time.Time) (sends, retries int64) {
	k := b.key(now)
	for i := range b.keys {
		if b.keys[i] > k-budgetSlots && b.keys[i] <= k {
			sends += b.sends[i]
			retries += b.retries[i]
		}
	}
	return sends, retries
}

// OnFirstSendAt deposits one first send (call it for each new batch sent).
func (b *Budget) OnFirstSendAt(now time.Time) {
	i, _ := b.slot(now)
	b.sends[i]++
	b.stats.FirstSends++
}

// AllowedAt returns how many retries the budget would approve now.
func (b *Budget) AllowedAt(now time.Time) int64 {
	s, r := b.window(now)
	return (b.reserve+b.ratioPPM*s)/1_000_000 - r
}

// TryRetryAt withdraws one retry if allowed ≥ 1.
func (b *Budget) TryRetryAt(now time.Time) bool {
	if b.AllowedAt(now) < 1 {
		b.stats.Denied++
		return false
	}
	i, _ := b.slot(now)
	b.retries[i]++
	b.stats.Retries++
	return true
}

// NextEventAt returns when the budget can next change by time alone (the
// next slot boundary) if it allows nothing now; zero otherwise.
func (b *Budget) NextEventAt(now time.Time) time.Time {
	if b.AllowedAt(now) >= 1 {
		return time.Time{}
	}
	return time.Unix(0, (b.key(now)+1)*b.width).In(now.Location())
}

// Stats returns cumulative counters.
func (b *Budget) Stats() BudgetStats { return b.stats }

// RetryOptions configures a Retrier. Zero values take the defaults.
type RetryOptions struct {
	Backoff Backoff
	// MaxAttempts including the first send. Default 6.
	MaxAttempts int
	// Horizon: no retry later than first send + Horizon; keep it ≤ the
	// stream's duplicate window − 20 s. Default 100 s (2 min window).
	Horizon time.Duration
	Budget  BudgetOptions
	// Rand returns uniform values in [0, 1) for jitter; seed it in
	// production (e.g. rand.New(rand.NewPCG(seed, 0)).Float64).
	// Required.
	Rand func() float64
}

// Retrier decides what happens after each failed attempt: capped full-jitter
// backoff, a retry budget, a horizon inside the duplicate window, and
// classification (split oversized batches, dead-letter permanent errors).
// Not safe for concurrent use.
type Retrier struct {
	opts   RetryOptions
	budget *Budget
}

// NewRetrier validates o and returns a Retrier.
func NewRetrier(o RetryOptions) (*Retrier, error) {
	if o.Rand == nil {
		return nil, fmt.Errorf("%w: RetryOptions.Rand is nil", ErrInvalidOptions)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 6
	}
	if o.Horizon == 0 {
		o.Horizon = 100 * time.Second
	}
	if o.MaxAttempts < 1 || o.Horizon < 0 || o.Backoff.Base < 0 || o.Backoff.Cap < 0 {
		return nil, fmt.Errorf("%w: retry options %+v", ErrInvalidOptions, o)
	}
	b, err := NewBudget(o.Budget)
	if err != nil {
		return nil, err
	}
	return &Retrier{opts: o, budget: b}, nil
}

// Budget returns the retrier's budget.
func (r *Retrier) Budget() *Budget { return r.budget }

// OnFirstSendAt records a first send (deposits into the budget).
func (r *Retrier) OnFirstSendAt(now time.Time) { r.budget.OnFirstSendAt(now) }

// Attempt describes a failed attempt.
type Attempt struct {
	FirstSent time.Time // the batch's first publish
	N         int       // attempts made so far, including this one (≥ 1)
	Outcome   Outcome
	Critical  bool // the batch's class is critical
	Level     int  // current degradation level
}

// Decision is the Retrier's answer.
type Decision struct {
	Disposition Disposition
	At          time.Time // with Retry: when to publish again
	// Reason says why a retryable failure was sent to the backlog:
	// "budget", "horizon", "attempts" or "level".
	Reason string
}

// OnFailureAt decides what to do after a failed attempt a at now.
func (r *Retrier) OnFailureAt(now time.Time, a Attempt) Decision {
	d := Classify(a.Outcome)
	if d != Retry {
		return Decision{Disposition: d}
	}
	switch {
	case a.Level >= 3 && !a.Critical:
		return Decision{Disposition: Backlog, Reason: "level"}
	case a.N >= r.opts.MaxAttempts:
		return Decision{Disposition: Backlog, Reason: "attempts"}
	}
	at := now.Add(r.opts.Backoff.Delay(a.N-1, r.opts.Rand()))
	if at.After(a.FirstSent.Add(r.opts.Horizon)) {
		return Decision{Disposition: Backlog, Reason: "horizon"}
	}
	if !r.budget.TryRetryAt(now) {
		return Decision{Disposition: Backlog, Reason: "budget"}
	}
	return Decision{Disposition: Retry, At: at}
}

// RTO is the RFC 6298 retransmission-timeout estimator, fed with RTTs of
// first attempts only (Karn's rule).
type RTO struct {
	srtt, rttvar time.Duration
	n            int64
}

// Sample adds one RTT measurement.
func (e *RTO) Sample(r time.Duration) {
	if r <= 0 {
		return
	}
	if e.n == 0 {
		e.srtt, e.rttvar = r, r/2
	} else {
		diff := e.srtt - r
		if diff < 0 {
			diff = -diff
		}
		e.rttvar = (3*e.rttvar + diff) / 4
		e.srtt = (7*e.srtt + r) / 8
	}
	e.n++
}

// SRTT and RTTVar return the smoothed RTT and its variation.
func (e *RTO) SRTT() time.Duration   { return e.srtt }
func (e *RTO) RTTVar() time.Duration { return e.rttvar }

// Timeout returns SRTT + max(1 ms, 4·RTTVAR), floored at 1 s (RFC 6298; 1 s
// before any sample) and capped at 60 s.
func (e *RTO) Timeout() time.Duration {
	if e.n == 0 {
		return time.Second
	}
	return max(time.Second, min(60*time.Second, e.srtt+max(time.Millisecond, 4*e.rttvar)))
}
