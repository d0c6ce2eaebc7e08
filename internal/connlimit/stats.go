package connlimit

// Stats is a snapshot of a Listener.
type Stats struct {
	// Max and PerIP are the limits in force (Max after its default).
	Max, PerIP int
	// Open is the number of admitted connections not yet closed (gauge).
	Open int
	// Idle is the number of those between keep-alive requests (gauge).
	Idle int
	// Refusing is the number of refused connections still being answered
	// (RejectHTTP; gauge). They hold descriptors but no slot.
	Refusing int
	// Accepted counts connections taken from the inner listener, admitted
	// or refused (counter).
	Accepted int64
	// Refused counts connections closed at accept because a limit was
	// reached and nothing could be evicted (counter).
	Refused int64
	// RefusedPerIP counts the part of Refused due to the per-client cap
	// (counter).
	RefusedPerIP int64
	// Evicted counts idle connections closed to make room (counter).
	Evicted int64
	// AcceptErrors counts temporary errors of the inner Accept, waited out
	// with backoff (counter).
	AcceptErrors int64
}

// Sub returns the counters of s minus those of prev (for a rate over a
// window); limits and gauges are s's.
func (s Stats) Sub(prev Stats) Stats {
	d := s
	d.Accepted -= prev.Accepted
	d.Refused -= prev.Refused
	d.RefusedPerIP -= prev.RefusedPerIP
	d.Evicted -= prev.Evicted
	d.AcceptErrors -= prev.AcceptErrors
	return d
}

// Stats returns a snapshot of the listener's limits, gauges and counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open, idle, refusing := l.open, l.nidle, len(l.refusing)
	l.mu.Unlock()
	return Stats{
		Max:          l.opts.Max,
		PerIP:        l.opts.PerIP,
		Open:         open,
		Idle:         idle,
		Refusing:     refusing,
		Accepted:     l.accepted.Load(),
		Refused:      l.refused.Load(),
		RefusedPerIP: l.refusedPerIP.Load(),
		Evicted:      l.evicted.Load(),
		AcceptErrors: l.acceptErrors.Load(),
	}
}
