package spool

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
)

// Ack acknowledges the events of r (typically when upstream acknowledged the
// batch). Acks may arrive out of order and may repeat. Once every seq of a
// sealed segment is acknowledged its file is deleted. The cursor reaches
// meta.db lazily (Sync, Close, a new segment, or within about a second of
// commits): after a crash, a range acknowledged but not persisted is read
// again.
func (s *Spool) Ack(class string, r Range) error {
	if !ValidClass(class) {
		return fmt.Errorf("spool: ack %q: %w", class, ErrInvalidClass)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("spool: ack %s: %w", class, err)
	}
	defer s.wg.Done()
	c := s.lookup(class)
	if c == nil {
		return fmt.Errorf("spool: ack %s %v: %w", class, r, ErrInvalidRange)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.First == 0 || r.Last < r.First || r.Last >= c.next {
		return fmt.Errorf("spool: ack %s %v (last %d): %w", class, r, c.next-1, ErrInvalidRange)
	}
	c.acked += c.acks.add(r)
	s.reclaimLocked(c)
	return nil
}

// reclaimLocked deletes the sealed segments wholly at or below the cursor and
// forgets the claims at or below it.
func (s *Spool) reclaimLocked(c *class) {
	for len(c.segs) > 0 && c.segs[0] != c.tail && c.upperLocked(0) <= c.acks.cursor {
		s.removeSegLocked(c, c.segs[0], nil)
	}
	c.claims = slices.DeleteFunc(c.claims, func(r Range) bool { return r.Last <= c.acks.cursor })
}

// dropSegLocked gives up the live events of sealed segment i (reason
// "drop_oldest" or "quarantine"): those from seq from on are counted as
// dropped (the ones before it were delivered to a reader, whose acks are to
// come), all are marked acknowledged, and its file is deleted, or moved to
// quarantine/ if qerr is not nil.
func (s *Spool) dropSegLocked(c *class, i int, from uint64, reason string, qerr error) {
	seg := c.segs[i]
	lo := seg.first
	if i == 0 {
		lo = 1 // everything below the oldest segment is acknowledged or dropped
	}
	c.dropped[reason] += c.acks.live(Range{max(from, seg.first), c.upperLocked(i)})
	c.acks.add(Range{lo, c.upperLocked(i)})
	s.removeSegLocked(c, seg, qerr)
	s.reclaimLocked(c)
}

// removeSegLocked takes seg out of the class and deletes (or quarantines) its
// file. An open file stays mapped until its last reader releases it.
func (s *Spool) removeSegLocked(c *class, seg *segment, qerr error) {
	i := c.indexLocked(seg)
	if i < 0 {
		return
	}
	c.segs = slices.Delete(c.segs, i, i+1)
	seg.gone = true
	if c.hot == seg {
		c.hot = nil
	}
	c.bytes -= seg.size
	s.bytes.Add(-seg.size)
	if qerr != nil {
		s.quarantine(seg.path, c.name, qerr)
	} else if err := os.Remove(seg.path); err != nil {
		s.opts.Logger.Error("spool: delete segment", "file", seg.path, "err", err)
	}
	s.closeIdleLocked(c, seg)
}

// Claim durably records that each of rs was cut as one batch, before the
// batch is published, so that after a restart the same range is republished
// as the same batch. It returns once the claims are committed and fsynced
// (except under FsyncNever): all of rs in one transaction, so after a crash
// either all of them or none are found. A claim replaces an earlier one with
// the same First (a batch split in two: claim [first, mid], then [mid+1,
// last]; within rs, the later one). Claims fully acknowledged are forgotten.
// No ranges: nothing is done.
//
// The claims are written to the class's tail segment in the group commit of
// the appends queued with them (see the package doc), so while appends flow
// they cost no fsync of their own, and a reader that cut several batches
// while an earlier claim committed claims them all in one commit.
func (s *Spool) Claim(class string, rs ...Range) error {
	if !ValidClass(class) {
		return fmt.Errorf("spool: claim %q: %w", class, ErrInvalidClass)
	}
	if len(rs) == 0 {
		return nil
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("spool: claim %s: %w", class, err)
	}
	defer s.wg.Done()
	c := s.lookup(class)
	if c == nil {
		return fmt.Errorf("spool: claim %s %v: %w", class, rs[0], ErrInvalidRange)
	}
	c.mu.Lock()
	last := c.next - 1
	c.mu.Unlock()
	for _, r := range rs {
		if r.First == 0 || r.Last < r.First || r.Last > last {
			return fmt.Errorf("spool: claim %s %v (last %d): %w", class, r, last, ErrInvalidRange)
		}
	}
	q := &appendReq{claims: slices.Clone(rs), wake: make(chan struct{}, 1)}
	if err := s.submit(context.Background(), c, q); err != nil {
		return fmt.Errorf("spool: claim %s %v: %w", class, rs[0], err)
	}
	if q.err != nil {
		return fmt.Errorf("spool: claim %s %v: %w", class, rs[0], q.err)
	}
	return nil
}

// setClaimLocked records r in memory, replacing a claim with the same First.
// c.mu is held.
func (c *class) setClaimLocked(r Range) {
	i, found := slices.BinarySearchFunc(c.claims, r.First, func(x Range, f uint64) int { return cmp.Compare(x.First, f) })
	if found {
		c.claims[i] = r
	} else {
		c.claims = slices.Insert(c.claims, i, r)
	}
}

// Claims returns the recorded claims of the class not yet fully acknowledged,
// ascending.
func (s *Spool) Claims(class string) []Range {
	c := s.lookup(class)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Range
	for _, r := range c.claims {
		if !c.acks.covered(r) {
			out = append(out, r)
		}
	}
	return out
}
