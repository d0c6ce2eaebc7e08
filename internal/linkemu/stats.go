package linkemu

// DirStats are the counters and gauges of one direction.
type DirStats struct {
	// Bytes is the total delivered to the far side (counter).
	Bytes int64
	// Dropped is the total read from a sender but never delivered because
	// its connection was reset or closed (counter).
	Dropped int64
	// Queued is the bytes now waiting for the bottleneck (gauge).
	Queued int64
	// InFlight is the bytes now read but not yet delivered: queued or in
	// propagation (gauge).
	InFlight int64
}

// Stats is a snapshot of a Link.
type Stats struct {
	// Settings are the settings at the time of the snapshot.
	Settings Settings
	// Upstream is client → server; Downstream is server → client.
	Upstream, Downstream DirStats
	// Conns is the number of connections open now (gauge).
	Conns int
	// Accepted counts accepted client connections, including refused ones.
	Accepted int64
	// Refused counts connections reset at accept time by an OutageReset.
	Refused int64
	// Resets counts open connections reset by an OutageReset.
	Resets int64
	// DialErrors counts connections closed because Upstream did not answer.
	DialErrors int64
}

// Sub returns the counters of s minus those of prev (for a rate over a
// window); gauges and Settings are s's.
func (s Stats) Sub(prev Stats) Stats {
	d := s
	d.Upstream.Bytes -= prev.Upstream.Bytes
	d.Upstream.Dropped -= prev.Upstream.Dropped
	d.Downstream.Bytes -= prev.Downstream.Bytes
	d.Downstream.Dropped -= prev.Downstream.Dropped
	d.Accepted -= prev.Accepted
	d.Refused -= prev.Refused
	d.Resets -= prev.Resets
	d.DialErrors -= prev.DialErrors
	return d
}

// Stats returns a snapshot of the link's counters and gauges.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	conns := len(l.conns)
	l.mu.Unlock()
	return Stats{
		Settings:   l.Settings(),
		Upstream:   l.dirs[upstream].stats(),
		Downstream: l.dirs[downstream].stats(),
		Conns:      conns,
		Accepted:   l.accepted.Load(),
		Refused:    l.refused.Load(),
		Resets:     l.resets.Load(),
		DialErrors: l.dialErrors.Load(),
	}
}

func (d *dir) stats() DirStats {
	d.mu.Lock()
	q := d.qBytes
	d.mu.Unlock()
	return DirStats{
		Bytes:    d.delivered.Load(),
		Dropped:  d.dropped.Load(),
		Queued:   int64(q),
		InFlight: d.inflight.Load(),
	}
}
