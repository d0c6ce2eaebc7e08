package spool

import (
	"encoding/binary"
	"fmt"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// Entry is one event delivered by Read.
type Entry struct {
	Seq  uint64
	Time int64  // unix ns when the event was appended (the same for one Append call)
	Data []byte // valid only during the callback: it points into the segment's mmap
}

// reader is the state of one Read call.
type reader struct {
	maxEvents, maxBytes int
	fn                  func(Entry) error
	n, bytes            int
	inFn                bool   // a panic now is the callback's, not bbolt's
	limit               uint64 // last seq Append has returned: the end of what may be read
}

// fnError marks an error returned by the callback.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// Read calls fn for the live (neither acknowledged nor dropped) events of the
// class in seq order, starting at the first live seq >= from, up to maxEvents
// events and maxBytes of Data (<= 0: no limit). It delivers at least one event
// if any is available, however large. It returns the seq to read from next
// time: the seq after the last event delivered, or, if none was delivered,
// the first live seq >= from. Seqs may jump (dropped or quarantined ranges).
//
// An error from fn stops the read and is returned with next = the seq of the
// event fn refused. fn runs under no spool lock but inside a bbolt read
// transaction: it must not call Close. A damaged sealed segment met while
// reading is quarantined and skipped; its events from the reader's position
// on count as dropped. A record of the tail damaged since Open (which checks
// them all) returns ErrCorrupt.
func (s *Spool) Read(class string, from uint64, maxEvents, maxBytes int, fn func(Entry) error) (next uint64, err error) {
	if !ValidClass(class) {
		return from, fmt.Errorf("spool: read %q: %w", class, ErrInvalidClass)
	}
	if err := s.enter(); err != nil {
		return from, fmt.Errorf("spool: read %s: %w", class, err)
	}
	defer s.wg.Done()
	next = max(from, 1)
	c := s.lookup(class)
	if c == nil {
		return next, nil
	}
	rs := &reader{maxEvents: maxEvents, maxBytes: maxBytes, fn: fn}
	for {
		c.mu.Lock()
		acks := c.acks.clone()
		next = acks.nextLive(next)
		i := c.segIndexLocked(next)
		if i < 0 {
			c.mu.Unlock()
			return next, nil
		}
		seg := c.segs[i]
		sealed := seg != c.tail
		// A commit in progress is visible in bbolt before it is published
		// in c.next; deliver only what Append has returned.
		rs.limit = c.next - 1
		next = max(next, seg.first)
		if err := s.acquireLocked(c, seg); err != nil {
			if sealed && isCorruption(err) {
				s.dropSegLocked(c, i, next, "quarantine", err)
				c.mu.Unlock()
				continue
			}
			c.mu.Unlock()
			return next, fmt.Errorf("spool: read %s: open %s: %w", class, seg.path, err)
		}
		c.mu.Unlock()

		var stop bool
		var corrupt error
		next, stop, corrupt, err = s.readSegment(seg, next, &acks, rs)

		c.mu.Lock()
		j := c.indexLocked(seg)
		if corrupt != nil && j >= 0 {
			if sealed {
				s.releaseLocked(c, seg)
				s.dropSegLocked(c, j, next, "quarantine", corrupt)
				c.mu.Unlock()
				continue
			}
			s.releaseLocked(c, seg)
			c.mu.Unlock()
			return next, fmt.Errorf("spool: read %s: %s: %w", class, seg.path, corrupt)
		}
		if sealed && j >= 0 && !stop && err == nil {
			next = max(next, c.upperLocked(j)+1) // exhausted: skip any gap after it
		}
		if sealed && j >= 0 && next <= c.upperLocked(j) {
			c.hot = seg // the reader will come back here
		}
		s.releaseLocked(c, seg)
		c.mu.Unlock()
		if err != nil {
			if fe, ok := err.(fnError); ok {
				return next, fe.err
			}
			return next, fmt.Errorf("spool: read %s: %s: %w", class, seg.path, err)
		}
		if stop || !sealed {
			// Limits reached, or the tail (as it was when the read began) is
			// exhausted: anything newer is for the next call.
			return next, nil
		}
	}
}

// readSegment delivers the live events of seg from next on. stop reports that
// the limits were reached; corrupt reports a damaged record or a bbolt panic.
func (s *Spool) readSegment(seg *segment, next uint64, acks *ackSet, rs *reader) (_ uint64, stop bool, corrupt, err error) {
	// A fault on the mapped file (truncated or unreadable) becomes a panic.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if rs.inFn {
				panic(r)
			}
			corrupt = fmt.Errorf("bbolt panic: %v: %w", r, ErrCorrupt)
		}
	}()
	err = seg.db.View(func(tx *bolt.Tx) error {
		cur, err := newRecCursor(tx)
		if err != nil {
			corrupt = err
			return nil
		}
		// Pages read are unmapped from the segment's mapping now and then,
		// inside the transaction (see unmapReadPages).
		defer func() {
			if seg.readBytes.Load() >= unmapEvery {
				seg.readBytes.Store(0)
				unmapReadPages(tx.DB().Info().Data, tx.Size())
			}
		}()
		// Position on the record holding next: the last key <= next.
		k, v := cur.SeekHolding(next)
		for ; k != nil; k, v = cur.Next() {
			if len(k) != 8 {
				corrupt = fmt.Errorf("record key %x: %w", k, ErrCorrupt)
				return nil
			}
			rec, err := parseRecord(v)
			if err != nil {
				corrupt = fmt.Errorf("record %d: %w", binary.BigEndian.Uint64(k), err)
				return nil
			}
			seq := binary.BigEndian.Uint64(k)
			end := seq + rec.count
			if end <= next {
				continue
			}
			rest := rec.events
			for ; seq < end; seq++ {
				var ev []byte
				ev, rest = nextEvent(rest)
				if seq < next || acks.acked(seq) {
					continue
				}
				if seq > rs.limit {
					return nil
				}
				if rs.n > 0 && (rs.maxEvents > 0 && rs.n >= rs.maxEvents || rs.maxBytes > 0 && rs.bytes+len(ev) > rs.maxBytes) {
					next, stop = seq, true
					return nil
				}
				rs.inFn = true
				err := rs.fn(Entry{Seq: seq, Time: rec.time, Data: ev})
				rs.inFn = false
				if err != nil {
					next = seq
					return fnError{err}
				}
				rs.n++
				rs.bytes += len(ev)
				next = seq + 1
			}
			seg.readBytes.Add(int64(len(v))) // every event of the record is past
			next = max(next, min(end, rs.limit+1))
		}
		corrupt = cur.err
		return nil
	})
	return next, stop, corrupt, err
}

// segIndexLocked returns the index of the first segment that can hold seqs
// >= seq, or -1.
func (c *class) segIndexLocked(seq uint64) int {
	for i := range c.segs {
		if c.upperLocked(i) >= seq {
			return i
		}
	}
	return -1
}

// upperLocked is the highest seq segment i can hold: up to the next
// segment's first seq, or the last issued seq for the newest segment.
func (c *class) upperLocked(i int) uint64 {
	if i+1 < len(c.segs) {
		return c.segs[i+1].first - 1
	}
	return c.next - 1
}

func (c *class) indexLocked(seg *segment) int {
	for i, x := range c.segs {
		if x == seg {
			return i
		}
	}
	return -1
}

// acquireLocked opens seg if needed and takes a reference on it. Opening a
// sealed segment closes the other idle sealed ones, so that at most the tail,
// the reader's current segment and the one being opened are mapped; it also
// starts reading that segment and the next sealed one into the page cache.
func (s *Spool) acquireLocked(c *class, seg *segment) error {
	if seg.db == nil {
		for _, o := range c.segs {
			if o != seg && o != c.hot {
				s.closeIdleLocked(c, o)
			}
		}
		db, err := s.openSegDB(seg.path, true)
		if err != nil {
			return err
		}
		seg.db = db
		s.readaheadLocked(c, seg)
	}
	seg.refs++
	return nil
}

// readaheadLocked starts readahead (see readahead) of sealed segment seg
// and of the sealed segment after it, each once, in the background: the
// drain reads segments in order, so the next one is on its way to memory
// while this one ships. The tail is in the page cache: it was just written.
func (s *Spool) readaheadLocked(c *class, seg *segment) {
	i := c.indexLocked(seg)
	if i < 0 {
		return
	}
	var paths []string
	for _, o := range c.segs[i:min(i+2, len(c.segs))] {
		if o != c.tail && !o.readahead {
			o.readahead = true
			paths = append(paths, o.path)
		}
	}
	if len(paths) == 0 {
		return
	}
	s.wg.Add(1) // acquireLocked runs inside an operation: Close waits for both
	go func() {
		defer s.wg.Done()
		for _, p := range paths {
			readahead(p)
		}
	}()
}

// releaseLocked drops a reference taken by acquireLocked.
func (s *Spool) releaseLocked(c *class, seg *segment) {
	seg.refs--
	if seg.gone || seg != c.hot {
		s.closeIdleLocked(c, seg)
	}
}

// closeIdleLocked closes seg's bbolt file if it is open, unused and not the tail.
func (s *Spool) closeIdleLocked(c *class, seg *segment) {
	if seg.db == nil || seg.refs > 0 || seg == c.tail {
		return
	}
	if err := seg.db.Close(); err != nil {
		s.opts.Logger.Error("spool: close segment", "file", seg.path, "err", err)
	}
	seg.db = nil
}
