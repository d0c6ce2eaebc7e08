package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Group commit (leader/follower, as in LevelDB's writer queue). Each Append
// or Claim queues a request on its class. The caller that finds no leader
// becomes the leader: it takes the requests at the head of the queue that fit
// in the tail segment, commits them in one bbolt transaction, publishes the
// results and hands leadership to the request now at the head of the queue
// (if any). No goroutine is started: every leader is an Append or Claim
// caller, and every caller returns only after its own request has been
// committed or refused. A claim thus rides the commit of the appends queued
// with it and costs no fsync of its own while appends flow.

const (
	reqQueued   = iota // waiting in the queue; may still be cancelled
	reqPromoted        // at the head of the queue and made leader
	reqTaken           // in a leader's batch: will be committed, cannot be cancelled
	reqDone            // r and err are set
)

// appendReq is one queued request: the events of an Append (n > 0), or the
// ranges of a Claim (claims not empty).
type appendReq struct {
	rec    []byte
	n      uint64  // events
	bytes  uint64  // event bytes (without framing)
	claims []Range // claims to record, in order (a later one with the same First replaces an earlier)
	r      Range
	err    error
	state  int           // guarded by class.wmu
	wake   chan struct{} // buffered 1; signalled once, when done or promoted
	leader bool
}

// claimDisk is the estimated file growth of one claim entry.
const claimDisk = 32

// disk estimates the file bytes the request adds to a segment.
func (q *appendReq) disk() int64 {
	var n int64
	if q.n > 0 {
		n = estDisk(len(q.rec))
	}
	n += claimDisk * int64(len(q.claims))
	return n
}

// estDisk estimates the file bytes a record of n bytes adds to a segment:
// small values share leaf pages, large ones take whole overflow pages.
func estDisk(n int) int64 {
	const page = 4096
	if n < page/2 {
		return int64(n) + 64
	}
	return (int64(n) + 64 + page - 1) / page * page
}

// Append durably appends events, in order, to the class and returns their
// seqs. It returns only after the events are committed under the fsync policy
// (together with those of concurrent callers: group commit). Empty events
// return an empty Range and no error. An Append waiting behind another
// caller's commit returns ctx.Err() if ctx ends before its events were taken
// into a commit; once taken, it waits for that commit.
func (s *Spool) Append(ctx context.Context, class string, events [][]byte) (Range, error) {
	if !ValidClass(class) {
		return Range{}, fmt.Errorf("spool: append %q: %w", class, ErrInvalidClass)
	}
	if len(events) == 0 {
		return Range{}, nil
	}
	if err := ctx.Err(); err != nil {
		return Range{}, err
	}
	q := &appendReq{n: uint64(len(events)), wake: make(chan struct{}, 1)}
	for _, e := range events {
		q.bytes += uint64(len(e))
	}
	if size := encodedSize(events); estDisk(size) > s.maxRecord {
		return Range{}, fmt.Errorf("spool: append %s: %d bytes > %d: %w", class, size, s.maxRecord, ErrTooLarge)
	}
	rec := s.getRec()
	defer s.putRec(rec, q)
	q.rec = appendRecord(*rec, s.now().UnixNano(), events)
	if err := s.enter(); err != nil {
		return Range{}, fmt.Errorf("spool: append %s: %w", class, err)
	}
	defer s.wg.Done()
	c, err := s.classFor(class)
	if err != nil {
		return Range{}, err
	}

	if err := s.submit(ctx, c, q); err != nil {
		return Range{}, err
	}
	return q.r, q.err
}

// getRec returns a record buffer from the spool's pool, or an empty one.
func (s *Spool) getRec() *[]byte {
	if p, ok := s.recs.Get().(*[]byte); ok {
		return p
	}
	return new([]byte)
}

// putRec gives q's record buffer back to the pool once q is done with it:
// Append has returned from submit (or never queued q), so no commit
// refers to it any more (bbolt copies a value into its pages when it
// commits). Records larger than maxPooledRecord are left to the GC.
func (s *Spool) putRec(p *[]byte, q *appendReq) {
	if cap(q.rec) > maxPooledRecord {
		return
	}
	*p = q.rec[:0]
	s.recs.Put(p)
}

// maxPooledRecord bounds the records the pool keeps: a record is one
// Append's events, usually a request's (hundreds of KiB at most).
const maxPooledRecord = 4 << 20

// submit queues q on the class and returns once it has been committed or
// refused (q.r, q.err set), leading commits when its turn comes. ctx can end
// the wait only while q is still queued; then ctx.Err() is returned.
func (s *Spool) submit(ctx context.Context, c *class, q *appendReq) error {
	c.wmu.Lock()
	c.enqueueLocked(q)
	if !c.leading {
		c.leading = true
		c.wmu.Unlock()
		s.lead(c)
		return nil
	}
	c.wmu.Unlock()
	select {
	case <-q.wake:
	case <-ctx.Done():
		c.wmu.Lock()
		if q.state == reqQueued {
			c.removeLocked(q)
			c.wmu.Unlock()
			return ctx.Err()
		}
		c.wmu.Unlock()
		<-q.wake
	}
	if q.leader {
		s.lead(c)
	}
	return nil
}

// enqueueLocked queues q. Appends go to the back. A claim goes ahead of the
// queued appends, behind the claims queued before it (claims keep their
// order: a split's halves replace the whole) and behind a request promoted
// to leader (whose own request must stay at the head of the batch it
// commits), so that it rides the next commit: behind a backlog of appends
// it would otherwise wait several commits, and the batches it precedes
// with it, while it takes a few bytes of one. The appends it passes were
// not acknowledged to anyone yet and keep their order. c.wmu is held.
func (c *class) enqueueLocked(q *appendReq) {
	if len(q.claims) == 0 {
		c.queue = append(c.queue, q)
		return
	}
	i := 0
	for i < len(c.queue) && (c.queue[i].state == reqPromoted || len(c.queue[i].claims) > 0) {
		i++
	}
	c.queue = slices.Insert(c.queue, i, q)
}

// removeLocked removes a cancelled request from the queue. c.wmu is held.
func (c *class) removeLocked(q *appendReq) {
	for i, x := range c.queue {
		if x == q {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			return
		}
	}
}

// lead commits a batch from the head of the queue, which holds the leader's
// own request, then hands leadership on.
func (s *Spool) lead(c *class) {
	room := s.batchRoom(c)
	c.wmu.Lock()
	var batch []*appendReq
	var sum int64
	for _, q := range c.queue {
		est := q.disk()
		if len(batch) > 0 && sum+est > room {
			break
		}
		if len(batch) == 0 && est > room {
			room = s.maxRecord // will roll to an empty segment
		}
		q.state = reqTaken
		batch = append(batch, q)
		sum += est
	}
	c.queue = append(c.queue[:0:0], c.queue[len(batch):]...)
	c.wmu.Unlock()

	s.commit(c, batch)

	c.wmu.Lock()
	for _, q := range batch {
		q.state = reqDone
	}
	next := c.handOffLocked()
	c.wmu.Unlock()
	for _, q := range batch {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	if next != nil {
		next.wake <- struct{}{}
	}
}

// handOffLocked ends the current leadership: it promotes the request at the
// head of the queue, which the caller must wake, or clears c.leading. c.wmu
// is held.
func (c *class) handOffLocked() *appendReq {
	if len(c.queue) == 0 {
		c.leading = false
		return nil
	}
	next := c.queue[0]
	next.state = reqPromoted
	next.leader = true
	return next
}

// Trim reclaims the tail segment of an idle class: if every event in it is
// acknowledged and it has grown past a sixteenth of SegmentBytes, it is
// sealed behind a new empty tail and deleted, so disk use returns to near
// zero once a backlog has drained (an acknowledged tail is otherwise kept
// until it fills). It does nothing while appends are in progress. Callers
// (the aggregator, when a class has nothing left to send) may call it
// freely.
func (s *Spool) Trim(class string) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("spool: trim %s: %w", class, err)
	}
	defer s.wg.Done()
	c := s.lookup(class)
	if c == nil {
		return nil
	}
	c.wmu.Lock()
	if c.leading {
		c.wmu.Unlock()
		return nil
	}
	c.leading = true // keep appends out while the tail changes
	c.wmu.Unlock()
	defer func() {
		c.wmu.Lock()
		next := c.handOffLocked()
		c.wmu.Unlock()
		if next != nil {
			next.wake <- struct{}{}
		}
	}()

	c.mu.Lock()
	idle := c.tail != nil && c.tail.last >= c.tail.first && c.acks.cursor >= c.next-1 &&
		c.tail.size >= s.opts.SegmentBytes/16
	c.mu.Unlock()
	if !idle {
		return nil
	}
	if err := s.roll(c); err != nil {
		return fmt.Errorf("spool: trim %s: %w", class, err)
	}
	c.mu.Lock()
	s.reclaimLocked(c)
	c.mu.Unlock()
	return nil
}

// batchRoom is how many estimated bytes the tail can take in one commit.
func (s *Spool) batchRoom(c *class) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tail == nil || c.tail.size >= s.opts.SegmentBytes {
		return s.maxRecord
	}
	return max(s.roomLimit()-c.tail.size, 0)
}

// roomLimit is the file size a commit may bring the tail to: the hard bound
// less bbolt's growth step and a slack for branch and meta pages.
func (s *Spool) roomLimit() int64 { return s.hardBound - s.allocSize - 32<<10 }

// commit applies the caps to batch, then commits the admitted requests in one
// transaction, rolling to a new segment first if the tail is full (or, for
// claims alone, missing). It sets r or err of every request.
func (s *Spool) commit(c *class, batch []*appendReq) {
	ok := s.admit(c, batch)
	if len(ok) == 0 {
		return
	}
	fail := func(reqs []*appendReq, err error) {
		for _, q := range reqs {
			q.err = err
		}
	}
	var need int64 // of the events; claims fit in any tail
	for _, q := range ok {
		if q.n > 0 {
			need += estDisk(len(q.rec))
		}
	}
	if err := s.ensureRoom(c, need); err != nil {
		fail(ok, fmt.Errorf("spool: append %s: %w", c.name, s.noSpace(fmt.Errorf("roll segment: %w", err))))
		return
	}
	err := s.put(c, ok)
	if errors.Is(err, berrors.ErrMaxSizeReached) {
		// The estimate was short: seal the tail and retry in an empty segment,
		// one request at a time if the batch still does not fit.
		if !c.tailEmpty() {
			if err := s.roll(c); err != nil {
				fail(ok, fmt.Errorf("spool: append %s: %w", c.name, s.noSpace(fmt.Errorf("roll segment: %w", err))))
				return
			}
			err = s.put(c, ok)
		}
		if errors.Is(err, berrors.ErrMaxSizeReached) {
			if len(ok) == 1 {
				err = fmt.Errorf("spool: append %s: %w", c.name, ErrTooLarge)
			} else {
				for _, q := range ok {
					s.commit(c, []*appendReq{q})
				}
				return
			}
		}
	}
	if err != nil {
		fail(ok, fmt.Errorf("spool: append %s: %w", c.name, s.noSpace(err)))
	}
	if s.now().UnixNano()-s.persistedAt.Load() >= cursorPersistEvery.Nanoseconds() {
		if err := s.persistCursors(); isNoSpace(err) {
			_ = s.noSpace(err) // logged once, when the disk fills
		} else if err != nil {
			s.opts.Logger.Error("spool: persist ack cursors", "err", err)
		}
	}
}

// admit applies the caps and the class's Overflow policy to each request of
// events in order, setting err of refused ones, and returns the admitted ones.
// Claims are always admitted: they take a few bytes, and shipping (which a
// claim precedes) is what frees space.
func (s *Spool) admit(c *class, batch []*appendReq) []*appendReq {
	if c.opts.MaxBytes == 0 && s.opts.MaxBytes == 0 {
		return batch
	}
	ok := batch[:0:0]
	var pending int64
	for _, q := range batch {
		if q.n == 0 {
			ok = append(ok, q)
			continue
		}
		need := estDisk(len(q.rec))
		for {
			c.mu.Lock()
			classOver := c.opts.MaxBytes > 0 && c.bytes+pending+need > c.opts.MaxBytes
			c.mu.Unlock()
			totalOver := s.opts.MaxBytes > 0 && s.bytes.Load()+pending+need > s.opts.MaxBytes
			if !classOver && !totalOver {
				ok = append(ok, q)
				pending += need
				break
			}
			which := "class"
			if !classOver {
				which = "total"
			}
			if c.opts.Overflow == DropOldest && s.dropOldest(c) {
				continue
			}
			if c.opts.Overflow == DropNewest {
				c.mu.Lock()
				c.dropped["drop_newest"] += q.n
				c.mu.Unlock()
				q.err = fmt.Errorf("spool: append %s: %s cap: %w", c.name, which, ErrDropped)
			} else {
				q.err = fmt.Errorf("spool: append %s: %s cap: %w", c.name, which, ErrFull)
			}
			break
		}
	}
	return ok
}

// dropOldest deletes the class's oldest segment, sealing the tail first if it
// is the only one. It reports whether anything was dropped.
func (s *Spool) dropOldest(c *class) bool {
	c.mu.Lock()
	if len(c.segs) == 0 || c.segs[0] == c.tail && c.tail.last < c.tail.first {
		c.mu.Unlock()
		return false
	}
	if c.segs[0] == c.tail {
		c.mu.Unlock()
		if err := s.roll(c); err != nil {
			s.opts.Logger.Error("spool: roll segment to drop it", "class", c.name, "err", err)
			return false
		}
		c.mu.Lock()
	}
	s.dropSegLocked(c, 0, 0, "drop_oldest", nil)
	c.mu.Unlock()
	return true
}

// ensureRoom rolls to a new segment if there is no tail, or if events
// (need > 0) are to be written and the tail reached SegmentBytes or need does
// not fit in it. Claims alone (need 0) go to any tail.
func (s *Spool) ensureRoom(c *class, need int64) error {
	c.mu.Lock()
	t := c.tail
	roll := t == nil || need > 0 && (t.size >= s.opts.SegmentBytes || t.last >= t.first && t.size+need > s.roomLimit())
	c.mu.Unlock()
	if !roll {
		return nil
	}
	return s.roll(c)
}

func (c *class) tailEmpty() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tail == nil || c.tail.last < c.tail.first
}

// put commits reqs to the tail in one transaction (records in bucket "r",
// in layout 2 those of a large commit within a bucket of its own; claims in
// bucket "c") and publishes the result. Only the leader calls it.
func (s *Spool) put(c *class, reqs []*appendReq) error {
	c.mu.Lock()
	tail, first := c.tail, c.next
	c.mu.Unlock()
	keys := make([]byte, 8*len(reqs))
	claims := false
	full := s.fullAt.Load()
	err := tail.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		if b == nil {
			return fmt.Errorf("segment %s: missing bucket: %w", tail.path, ErrCorrupt)
		}
		layout, err := segLayout(tx)
		if err != nil {
			return fmt.Errorf("segment %s: %w", tail.path, err)
		}
		b.FillPercent = 1.0 // keys only ever grow: pack pages full
		// Layout 2: this commit's records go to a bucket of their own, made
		// at its first record, unless they are few bytes (see layout.go).
		nested := false
		if layout == segNested {
			var n int
			for _, q := range reqs {
				n += len(q.rec)
			}
			nested = n >= smallCommit
		}
		var cb *bolt.Bucket
		seq := first
		for i, q := range reqs {
			for _, r := range q.claims {
				if cb == nil {
					var err error
					if cb, err = tx.CreateBucketIfNotExists(bucketSegClaims); err != nil {
						return err
					}
				}
				if err := cb.Put(seqKey(r.First), seqKey(r.Last)); err != nil {
					return err
				}
				claims = true
			}
			if q.n == 0 {
				continue
			}
			k := keys[i*8 : i*8+8]
			binary.BigEndian.PutUint64(k, seq)
			if nested {
				sub, err := b.CreateBucket(k)
				if err != nil {
					return err
				}
				sub.FillPercent = 1.0
				b, nested = sub, false // the commit's other records follow
			}
			if err := b.Put(k, q.rec); err != nil {
				return err
			}
			seq += q.n
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.hasRoom(full)
	size := fileSize(tail.path)
	now := s.now()
	c.mu.Lock()
	seq := first
	for _, q := range reqs {
		for _, r := range q.claims {
			c.setClaimLocked(r)
		}
		if q.n == 0 {
			continue
		}
		q.r = Range{seq, seq + q.n - 1}
		seq += q.n
		c.appended += q.n
		c.appendedBytes += q.bytes
	}
	c.next = seq
	if seq > first {
		tail.last = seq - 1
	} else {
		c.claimCommits++
	}
	delta := size - tail.size
	tail.size = size
	c.bytes += delta
	c.commits++
	c.mu.Unlock()
	s.bytes.Add(delta)
	if s.opts.Fsync == FsyncInterval && (claims || now.Sub(tail.syncedAt) >= s.opts.FsyncInterval) {
		// The records are committed and acknowledged under this policy; a
		// failed fsync is reported but does not fail the appends. A claim
		// must be durable before it returns (a batch's identity survives a
		// power loss too), so it fails if the fsync does.
		if err := tail.db.Sync(); err != nil {
			s.opts.Logger.Error("spool: fsync segment", "file", tail.path, "err", err)
			for _, q := range reqs {
				if len(q.claims) > 0 {
					q.err = fmt.Errorf("fsync %s: %w", tail.path, err)
				}
			}
		}
		tail.syncedAt = now
	}
	return nil
}

// roll seals the tail (fsyncing it if commits did not) and starts a new
// segment at the next seq. A new segment's first seq is recorded in meta.db
// before its file is created. Only the leader (or Open) calls it.
func (s *Spool) roll(c *class) error {
	c.mu.Lock()
	old, first := c.tail, c.next
	c.mu.Unlock()
	if old != nil {
		if old.last < old.first {
			return nil // empty: a new segment would have the same name
		}
		if s.opts.Fsync != FsyncAlways {
			if err := old.db.Sync(); err != nil {
				return err
			}
		}
	}
	if err := s.reserve(c.name, first); err != nil {
		return err
	}
	seg, err := s.createSegment(c.name, first)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if old != nil {
		size := fileSize(old.path)
		c.bytes += size - old.size
		s.bytes.Add(size - old.size)
		old.size = size
	}
	c.segs = append(c.segs, seg)
	c.tail = seg
	c.bytes += seg.size
	if old != nil {
		s.closeIdleLocked(c, old)
	}
	c.mu.Unlock()
	s.bytes.Add(seg.size)
	return nil
}
