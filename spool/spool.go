package spool

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// cursorPersistEvery bounds how long a moved ack cursor stays unwritten while
// appends go on.
const cursorPersistEvery = time.Second

// Spool is a durable per-class FIFO queue of events. It is safe for
// concurrent use and starts no goroutines.
type Spool struct {
	dir       string
	opts      Options
	id        string
	hardBound int64 // bbolt MaxSize of a segment
	allocSize int64 // bbolt AllocSize of a segment (its growth step)
	maxRecord int64 // largest estimated record that fits an empty segment
	now       func() time.Time

	mu     sync.RWMutex // guards closed; operations in flight are counted in wg
	closed bool
	wg     sync.WaitGroup

	cmu     sync.Mutex
	classes map[string]*class

	metaMu      sync.Mutex // serialises meta.db writes; taken before any class mu
	meta        *bolt.DB
	persistedAt atomic.Int64 // unix ns of the last cursor write

	bytes       atomic.Int64 // disk bytes of all segments
	quarantined atomic.Int64
	// recs holds record buffers (*[]byte) between Appends: without it
	// each Append allocated its record, which the runtime clears first,
	// the largest allocation on the ingest path.
	recs   sync.Pool
	fullAt atomic.Int64 // unix ns of the last append refused for lack of space; 0: room (see space.go)
}

// class is the state of one class. Lock order: Spool.metaMu, then class.mu;
// class.wmu is never held with another lock.
type class struct {
	name string
	opts ClassOptions

	wmu     sync.Mutex // guards queue and leading
	queue   []*appendReq
	leading bool

	mu        sync.Mutex
	segs      []*segment // ascending by first seq; the last one is tail unless tail is nil
	tail      *segment
	hot       *segment // sealed segment kept open for the reader
	next      uint64   // next seq to assign (written only by the leader)
	acks      ackSet
	persisted uint64  // cursor last written to meta.db
	claims    []Range // ascending by First
	bytes     int64

	appended, appendedBytes, acked, commits uint64
	claimCommits                            uint64 // commits of claims alone, without events
	dropped                                 map[string]uint64
}

// Open opens or creates the spool in dir, checking every segment and
// quarantining damaged files (see the package doc).
func Open(dir string, opts Options) (*Spool, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Spool{
		dir:       dir,
		opts:      opts,
		hardBound: opts.SegmentBytes + opts.SegmentBytes/4,
		allocSize: min(max(opts.SegmentBytes/16, 64<<10), 16<<20),
		now:       time.Now,
		classes:   map[string]*class{},
	}
	s.maxRecord = s.roomLimit() - 32<<10 // room in a new segment, less its own pages
	if err := s.open(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func (s *Spool) open() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("spool: open %s: %w", s.dir, err)
	}
	_ = os.Remove(filepath.Join(s.dir, probeName)) // left by a crash during NoSpace
	metas, rebuilt, err := s.openMeta()
	if err != nil {
		return err
	}
	if s.id, err = loadID(s.dir, s.opts.Logger); err != nil {
		return err
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", s.dir, err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		if e.IsDir() && ValidClass(e.Name()) {
			names[e.Name()] = true
		}
	}
	for name := range metas {
		names[name] = true
	}
	for name := range names {
		if err := s.recoverClass(name, metas[name], rebuilt); err != nil {
			return err
		}
	}
	s.persistedAt.Store(s.now().UnixNano())
	return nil
}

func newClass(name string, opts ClassOptions) *class {
	return &class{name: name, opts: opts, next: 1, dropped: map[string]uint64{}}
}

// recoverClass loads a class from its segment files and its meta entry.
func (s *Spool) recoverClass(name string, mc *metaClass, rebuilt bool) error {
	if mc == nil {
		mc = &metaClass{}
	}
	c := newClass(name, s.opts.class(name))
	dir := filepath.Join(s.dir, name)
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: open %s: %w", dir, err)
	}
	var firsts []uint64
	for _, e := range ents {
		if f, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			firsts = append(firsts, f)
		} else if strings.HasSuffix(e.Name(), ".db.tmp") {
			_ = os.Remove(filepath.Join(dir, e.Name())) // a segment whose creation was cut short
		}
	}
	slices.Sort(firsts)

	// Claims: those of meta.db (written by older versions) are the oldest,
	// then each segment's in seq order; a later claim with the same First
	// replaces an earlier one (a split batch).
	claims := map[uint64]uint64{}
	fromMeta := map[uint64]bool{}
	for _, r := range mc.claims {
		claims[r.First] = r.Last
		fromMeta[r.First] = true
	}
	var lost []Range // sealed segments quarantined: their seqs are gone
	tailLost := uint64(0)
	tailSealed := false // the tail holds a damaged record: sealed, a new tail follows it
	for i, first := range firsts {
		path := filepath.Join(dir, segName(first))
		isTail := i == len(firsts)-1
		seg, segClaims, sealed, err := s.openSegment(name, path, first, isTail)
		if err == nil {
			c.segs = append(c.segs, seg)
			tailSealed = sealed
			for _, r := range segClaims {
				claims[r.First] = r.Last
				delete(fromMeta, r.First)
			}
			continue
		}
		if !isCorruption(err) {
			return fmt.Errorf("spool: open %s: %w", path, err)
		}
		s.quarantine(path, name, err)
		s.opts.Logger.Warn("spool: claims recorded in a quarantined segment are lost; ranges they covered will be cut again and may be delivered twice",
			"class", name, "file", path)
		if isTail {
			tailLost = first
		} else {
			lost = append(lost, Range{first, firsts[i+1] - 1})
		}
	}

	// The next seq must exceed every seq ever issued. It is derivable from the
	// tail; if the tail was lost, from its first seq and the hard bound (an
	// event takes at least one byte), and from the reservation in meta.db.
	if len(c.segs) > 0 {
		c.next = c.segs[len(c.segs)-1].last + 1
	}
	var maxFirst uint64
	if len(firsts) > 0 {
		maxFirst = firsts[len(firsts)-1]
	}
	needTail := len(c.segs) == 0 && len(firsts) > 0 || tailSealed // every file lost, or the tail sealed
	if tailLost > 0 || mc.hwm > maxFirst {
		needTail = true
		c.next = max(c.next, mc.reserved, tailLost+uint64(s.hardBound))
		s.opts.Logger.Warn("spool: tail segment lost; seqs skip ahead so none is reused",
			"class", name, "next_seq", c.next)
	}
	c.next = max(c.next, mc.cursor+1)

	// The lost ranges count against the persisted cursor, before it is
	// raised past them to the oldest segment left.
	c.acks.cursor = min(mc.cursor, c.next-1)
	for _, r := range lost {
		c.dropped["quarantine"] += c.acks.live(r)
		c.acks.add(r)
	}
	if len(c.segs) > 0 {
		c.acks.add(Range{1, c.segs[0].first - 1})
	} else {
		c.acks.add(Range{1, c.next - 1})
	}
	if needTail {
		if len(c.segs) > 0 {
			old := c.segs[len(c.segs)-1]
			c.acks.add(Range{old.last + 1, c.next - 1})
			if old.db != nil {
				_ = old.db.Close()
				old.db = nil
			}
		}
	} else if len(c.segs) > 0 {
		c.tail = c.segs[len(c.segs)-1]
	}
	c.persisted = mc.cursor
	if rebuilt {
		c.persisted = 0
	}
	var migrate []Range // live claims only meta.db holds
	for first, last := range claims {
		r := Range{first, last}
		if r.Last >= c.next || c.acks.covered(r) {
			continue // fully acknowledged (or beyond any seq issued: damaged)
		}
		c.claims = append(c.claims, r)
		if fromMeta[first] {
			migrate = append(migrate, r)
		}
	}
	slices.SortFunc(c.claims, func(a, b Range) int { return cmp.Compare(a.First, b.First) })
	slices.SortFunc(migrate, func(a, b Range) int { return cmp.Compare(a.First, b.First) })
	for _, seg := range c.segs {
		c.bytes += seg.size
	}
	s.bytes.Add(c.bytes)
	s.cmu.Lock()
	s.classes[name] = c
	s.cmu.Unlock()
	if needTail {
		// Keep the invariant that the newest issued seq is derivable from disk.
		if err := s.roll(c); err != nil {
			return fmt.Errorf("spool: open class %s: new tail: %w", name, err)
		}
	}
	if len(mc.claims) > 0 {
		if err := s.migrateClaims(c, migrate); err != nil {
			return fmt.Errorf("spool: open class %s: migrate claims from meta.db: %w", name, err)
		}
	}
	return nil
}

// migrateClaims moves the live claims that an older version recorded in
// meta.db to the tail segment (one commit), then deletes meta.db's claims of
// the class. A crash in between leaves both copies, equal, meta.db's being
// the older. Claims left in meta.db would outlive a newer replacement whose
// segment was deleted and come back at a later Open.
func (s *Spool) migrateClaims(c *class, claims []Range) error {
	if len(claims) > 0 {
		reqs := []*appendReq{{claims: claims}}
		s.commit(c, reqs)
		for _, q := range reqs {
			if q.err != nil {
				return q.err
			}
		}
		if s.opts.Fsync == FsyncNever {
			c.mu.Lock()
			t := c.tail
			c.mu.Unlock()
			if err := t.db.Sync(); err != nil {
				return err
			}
		}
	}
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	return s.writeMetaLocked(func(tx *bolt.Tx) error {
		b, err := metaClassBucket(tx, c.name)
		if err != nil {
			return err
		}
		if b.Bucket(bucketClaims) == nil {
			return nil
		}
		return b.DeleteBucket(bucketClaims)
	})
}

// loadID returns the spool's id, creating dir/ID (atomically) if needed.
func loadID(dir string, log interface{ Error(string, ...any) }) (string, error) {
	path := filepath.Join(dir, "ID")
	b, err := os.ReadFile(path)
	if err == nil {
		id := string(b)
		if len(id) == 32 {
			if _, herr := hex.DecodeString(id); herr == nil {
				return id, nil
			}
		}
		log.Error("spool: ID file damaged; making a new id", "file", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("spool: open ID: %w", err)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(raw[:])
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, []byte(id)); err != nil {
		return "", fmt.Errorf("spool: write ID: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("spool: write ID: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("spool: write ID: %w", err)
	}
	return id, nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ID returns the spool's random 128-bit id in hex, made when the spool
// directory was created and stable across reopens.
func (s *Spool) ID() string { return s.id }

// enter counts an operation in flight, failing after Close.
func (s *Spool) enter() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.wg.Add(1)
	return nil
}

// lookup returns the class or nil.
func (s *Spool) lookup(name string) *class {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.classes[name]
}

// classFor returns the class, creating it (without files) on first use.
func (s *Spool) classFor(name string) (*class, error) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	c := s.classes[name]
	if c == nil {
		c = newClass(name, s.opts.class(name))
		s.classes[name] = c
	}
	return c, nil
}

func (s *Spool) classList() []*class {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	out := make([]*class, 0, len(s.classes))
	for _, c := range s.classes {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *class) int { return cmp.Compare(a.name, b.name) })
	return out
}

// Classes returns the classes with data on disk or appended since Open, sorted.
func (s *Spool) Classes() []string {
	var out []string
	for _, c := range s.classList() {
		c.mu.Lock()
		if len(c.segs) > 0 || c.next > 1 {
			out = append(out, c.name)
		}
		c.mu.Unlock()
	}
	return out
}

// Last returns the last seq issued in the class (0 if none). Seqs skipped
// because a tail segment was lost count as issued (and dropped).
func (s *Spool) Last(class string) uint64 {
	c := s.lookup(class)
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next - 1
}

// Acked returns the contiguous acknowledged cursor: every seq <= it is
// acknowledged or dropped.
func (s *Spool) Acked(class string) uint64 {
	c := s.lookup(class)
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acks.cursor
}

// Sync fsyncs everything pending: open segments and meta.db (with the
// cursors moved since the last write).
func (s *Spool) Sync() error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("spool: sync: %w", err)
	}
	defer s.wg.Done()
	var errs []error
	if s.opts.Fsync != FsyncAlways {
		for _, c := range s.classList() {
			c.mu.Lock()
			t := c.tail
			if t != nil {
				t.refs++ // keeps t.db open while we fsync without the lock
			}
			c.mu.Unlock()
			if t == nil {
				continue
			}
			if err := t.db.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("spool: sync %s: %w", t.path, err))
			}
			c.mu.Lock()
			s.releaseLocked(c, t)
			c.mu.Unlock()
		}
	}
	if err := s.persistCursors(); err != nil {
		errs = append(errs, err)
	}
	if s.opts.Fsync == FsyncNever {
		if err := s.meta.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("spool: sync meta.db: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close waits for operations in flight, persists the ack cursors, fsyncs and
// closes every file. It is idempotent; after it every operation returns
// ErrClosed.
func (s *Spool) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
	var errs []error
	if s.meta != nil {
		if err := s.persistCursors(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.closeFiles())
	return errors.Join(errs...)
}

// closeFiles fsyncs (if commits did not) and closes every open bbolt file.
func (s *Spool) closeFiles() error {
	var errs []error
	for _, c := range s.classList() {
		c.mu.Lock()
		for _, seg := range c.segs {
			if seg.db == nil {
				continue
			}
			if seg == c.tail && s.opts.Fsync != FsyncAlways {
				if err := seg.db.Sync(); err != nil {
					errs = append(errs, fmt.Errorf("spool: sync %s: %w", seg.path, err))
				}
			}
			if err := seg.db.Close(); err != nil {
				errs = append(errs, fmt.Errorf("spool: close %s: %w", seg.path, err))
			}
			seg.db = nil
		}
		c.mu.Unlock()
	}
	if s.meta != nil {
		if s.opts.Fsync == FsyncNever {
			if err := s.meta.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("spool: sync meta.db: %w", err))
			}
		}
		if err := s.meta.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool: close meta.db: %w", err))
		}
		s.meta = nil
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of the spool's state and counters since Open.
type Stats struct {
	Bytes       int64                 // disk bytes of all segment files
	Classes     map[string]ClassStats // by class
	Quarantined int                   // files (segments, meta.db) moved aside since Open, including at Open
}

// ClassStats is a snapshot of one class.
type ClassStats struct {
	Depth         uint64            // live events: issued, not acknowledged nor dropped
	Bytes         int64             // disk bytes of the class's segment files
	Segments      int               // segment files
	OldestTime    int64             // append time (unix ns) of the oldest live event, 0 if none
	Appended      uint64            // events appended since Open
	AppendedBytes uint64            // event bytes appended since Open
	Acked         uint64            // events newly acknowledged since Open
	Commits       uint64            // bbolt commits of appends and claims since Open (< Append + Claim calls under group commit)
	Dropped       map[string]uint64 // events lost since Open, by reason: "drop_oldest", "drop_newest", "quarantine"
}

// Stats returns a snapshot. OldestTime reads the oldest live record.
func (s *Spool) Stats() Stats {
	st := Stats{Bytes: s.bytes.Load(), Classes: map[string]ClassStats{}, Quarantined: int(s.quarantined.Load())}
	for _, c := range s.classList() {
		c.mu.Lock()
		cs := ClassStats{
			Depth:         c.acks.live(Range{c.acks.cursor + 1, c.next - 1}),
			Bytes:         c.bytes,
			Segments:      len(c.segs),
			Appended:      c.appended,
			AppendedBytes: c.appendedBytes,
			Acked:         c.acked,
			Commits:       c.commits,
			Dropped:       maps(c.dropped),
		}
		c.mu.Unlock()
		if cs.Depth > 0 {
			_, _ = s.Read(c.name, 0, 1, 0, func(e Entry) error {
				cs.OldestTime = e.Time
				return nil
			})
		}
		st.Classes[c.name] = cs
	}
	return st
}

func maps(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
