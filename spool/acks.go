package spool

// Range is an inclusive range of seqs. Seqs start at 1 in each class and are
// never reused.
type Range struct{ First, Last uint64 }

// Len returns the number of seqs in r (0 for an empty or inverted range).
func (r Range) Len() uint64 {
	if r.First == 0 && r.Last == 0 || r.Last < r.First {
		return 0
	}
	return r.Last - r.First + 1
}

// ackSet is a class's acknowledged seqs: every seq <= cursor, plus the
// disjoint, non-adjacent ranges above cursor+1 acknowledged out of order.
type ackSet struct {
	cursor uint64
	ranges []Range // ascending; ranges[0].First > cursor+1
}

// add marks r acknowledged and returns how many seqs were newly acknowledged.
func (a *ackSet) add(r Range) uint64 {
	if r.First <= a.cursor {
		r.First = a.cursor + 1
	}
	if r.Last < r.First {
		return 0
	}
	newly := r.Len()
	out := make([]Range, 0, len(a.ranges)+1)
	inserted := false
	for _, x := range a.ranges {
		switch {
		case x.Last+1 < r.First: // entirely before r, not adjacent
			out = append(out, x)
		case r.Last+1 < x.First: // entirely after r, not adjacent
			if !inserted {
				out = append(out, r)
				inserted = true
			}
			out = append(out, x)
		default: // overlaps or touches r: merge into r
			newly -= overlap(x, r)
			r = Range{min(r.First, x.First), max(r.Last, x.Last)}
		}
	}
	if !inserted {
		out = append(out, r)
	}
	for len(out) > 0 && out[0].First <= a.cursor+1 {
		a.cursor = max(a.cursor, out[0].Last)
		out = out[1:]
	}
	a.ranges = out
	return newly
}

// acked reports whether seq is acknowledged.
func (a *ackSet) acked(seq uint64) bool {
	if seq <= a.cursor {
		return true
	}
	for _, x := range a.ranges {
		if seq < x.First {
			return false
		}
		if seq <= x.Last {
			return true
		}
	}
	return false
}

// live returns how many seqs of r are not acknowledged.
func (a *ackSet) live(r Range) uint64 {
	if r.First <= a.cursor {
		r.First = a.cursor + 1
	}
	if r.Last < r.First {
		return 0
	}
	n := r.Len()
	for _, x := range a.ranges {
		n -= overlap(x, r)
	}
	return n
}

// covered reports whether every seq of r is acknowledged.
func (a *ackSet) covered(r Range) bool { return a.live(r) == 0 }

// nextLive returns the first seq >= from that is not acknowledged.
func (a *ackSet) nextLive(from uint64) uint64 {
	from = max(from, a.cursor+1)
	for _, x := range a.ranges {
		if from < x.First {
			break
		}
		if from <= x.Last {
			from = x.Last + 1
		}
	}
	return from
}

func (a *ackSet) clone() ackSet {
	return ackSet{cursor: a.cursor, ranges: append([]Range(nil), a.ranges...)}
}

func overlap(a, b Range) uint64 {
	lo, hi := max(a.First, b.First), min(a.Last, b.Last)
	if hi < lo {
		return 0
	}
	return hi - lo + 1
}
