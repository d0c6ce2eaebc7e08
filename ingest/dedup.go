package ingest

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the dedup window.
const (
	defaultDedupTTL        = 10 * time.Minute
	defaultDedupMaxEntries = 1_000_000
)

// dedup is a bounded window of recently committed event ids that drops
// exact client retries before they reach the spool. SDKs retry a request
// whose answer they did not get with the same event ids (Segment
// messageId, Snowplow eid, PostHog uuid); the spool and JetStream would
// keep both copies, since JetStream only removes a republished batch.
//
// Use it in two phases around the durable append:
//
//	keys[i] = d.key(source, events[i].ID) // for each event
//	keys, events, dropped := dedupFilterAt(d, time.Now(), keys, events)
//	err := sink.Ingest(ctx, class, bodies(events)...)
//	if err == nil {
//		d.commitAt(time.Now(), keys)
//	}
//
// An id is recorded only once its event is durable, so a request refused
// with 429 or 503 (or dropped by policy, or failed) is not taken for a
// repeat when the client sends it again.
//
// An id is remembered for the TTL from its commit; a repeat does not
// extend it. At most MaxEntries ids are held: committing one more evicts
// the oldest first, so the window covers less than the TTL under a load of
// more than MaxEntries ids per TTL (the Evicted counter says so).
//
// Time is an argument, as in golang.org/x/time/rate: the methods ending in
// At take the current instant and use its monotonic reading when it has
// one. Instants are taken never to go back: an instant earlier than one
// already committed counts as that one. One mutex guards the window; it
// starts no goroutines. The methods of a nil *dedup keep every event and
// record nothing.
//
// # Keys
//
// A key is a 128-bit hash of (source, id): two 64-bit hash/maphash values
// under two seeds chosen at random per process, of the source's length,
// the source and the id. Taking the two as independent random functions,
// two different pairs share a key with probability 2^-128, so with a full window of 1,000,000 ids a new id is taken for a
// repeat with probability below 10^6 * 2^-128 = 3e-33; at a million events
// a second for a century (3e15 events) the odds of a single false drop are
// about 1e-17. maphash is not cryptographic, but its seeds never leave the
// process, so a client cannot aim at a collision.
//
// # Memory
//
// The window is a ring of entries in commit order, 24 bytes each (key and
// time), and an open-addressing index into it of 8-byte slots (32 bits of
// the key and a ring position) kept at most half full for the ring's
// capacity. Both grow by doubling up to MaxEntries, so the bound is
// 24*MaxEntries + 8*2^ceil(log2(2*MaxEntries)) bytes: 40.8 MB (41 bytes
// an entry) for the default 1,000,000 entries, measured by
// TestDedupMemory; below 56 bytes an entry for any MaxEntries of 512 or
// more. (A Go map of the keys alone costs 37 to 56 bytes an entry, and
// hashes keys that are hashes already.) Neither shrinks after a burst.
//
// # Caveats
//
// Concurrent requests carrying the same id both pass dedupFilterAt when
// neither has committed yet, and both reach the spool: delivery stays
// at-least-once there, and JetStream does not dedup across batches either.
// The window lives in memory, so a restart forgets it.
type dedup struct {
	ttl        time.Duration
	maxEntries int
	seeds      [2]maphash.Seed

	mu    sync.Mutex
	epoch time.Time // the first instant seen; times are offsets from it
	begun bool      // epoch is set
	last  int64     // the latest offset seen, in nanoseconds

	ring []dedupEntry // commit order; ring[head] is the oldest
	head int
	n    int // entries in ring and index

	// index finds a key's ring position by linear probing. A slot is
	// empty (0) or holds the top 32 bits of the key's hi half above its
	// ring position + 1. A key's home slot is hi >> shift, which the top
	// bits of the slot also give, so a deletion can shift slots back
	// without reading the ring.
	index []uint64
	shift uint

	scratch []int32 // dedupFilterAt's index of the request's kept keys
	warmed  uint64  // the sum of warm's loads, so they are not optimized away

	dropped, committed, expired, evicted atomic.Uint64
}

// dedupKey identifies an event: the hash of its source and id. The zero
// key stands for an event without id, which is never a repeat.
type dedupKey struct{ hi, lo uint64 }

type dedupEntry struct {
	key dedupKey
	at  int64 // commit instant, nanoseconds after epoch
}

// dedupStats is a snapshot of a dedup's counters.
type dedupStats struct {
	Dropped   uint64 // events dropped as repeats, of a committed id or of one earlier in the same request
	Committed uint64 // ids recorded
	Expired   uint64 // ids forgotten after the TTL
	Evicted   uint64 // ids forgotten before the TTL to stay within MaxEntries
	Entries   int    // ids held now
}

const (
	// maxDedupEntries bounds MaxEntries (11 GB of window): ring positions
	// fit in the 32 bits of an index slot, and sizes in a 32-bit int.
	maxDedupEntries = 1 << 28
	// maxScratch is the largest scratch index, in slots, dedupFilterAt keeps
	// between calls: clearing it costs its size.
	maxScratch = 1 << 14
)

// newDedup returns an empty window that remembers an id for ttl after its
// commit (default 10 minutes) and holds at most maxEntries ids (default
// 1,000,000, at most 2^28). Zero or negative values take the defaults.
// It allocates nothing until the first commit.
func newDedup(ttl time.Duration, maxEntries int) *dedup {
	if ttl <= 0 {
		ttl = defaultDedupTTL
	}
	if maxEntries <= 0 {
		maxEntries = defaultDedupMaxEntries
	}
	return &dedup{
		ttl:        ttl,
		maxEntries: min(maxEntries, maxDedupEntries),
		seeds:      [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
	}
}

// key returns the key of the event with the given id from source (a
// source or tenant name; the same id from two sources are two events). An
// empty id gives the zero key: no id, never a repeat. A nil *dedup gives
// the zero key.
func (d *dedup) key(source string, id []byte) dedupKey {
	if d == nil || len(id) == 0 {
		return dedupKey{}
	}
	var stack [256]byte
	buf := binary.AppendUvarint(stack[:0], uint64(len(source))) // so ("a","bc") != ("ab","c")
	buf = append(buf, source...)
	buf = append(buf, id...)
	k := dedupKey{maphash.Bytes(d.seeds[0], buf), maphash.Bytes(d.seeds[1], buf)}
	if k == (dedupKey{}) {
		k.lo = 1 // the zero key means no id
	}
	return k
}

// dedupFilterAt drops the repeats among a request's events at instant
// now: events whose key was committed less than the TTL before now, and
// events whose key appears earlier in the same request (the first is
// kept). events[i] is the event of keys[i], of any type; events may be nil
// when the caller tracks only keys, else it must be as long as keys. It
// compacts both in place, keeping their order, zeroes the tails, and
// returns them with the number dropped. It records nothing: commit the
// kept keys once their events are durable. (A function, since methods
// cannot have type parameters.)
func dedupFilterAt[E any](d *dedup, now time.Time, keys []dedupKey, events []E) ([]dedupKey, []E, int) {
	if events != nil && len(events) != len(keys) {
		panic("ingest: dedupFilterAt: len(events) != len(keys)")
	}
	if d == nil {
		return keys, events, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expire(d.offset(now))
	d.warm(keys)
	// The scratch index holds positions + 1 in keys of the keys kept so
	// far, probed from lo: at most half full.
	size := 8
	for size < 2*len(keys) {
		size *= 2
	}
	if len(d.scratch) < size {
		d.scratch = make([]int32, size)
	}
	scratch := d.scratch[:size]
	mask := uint64(size - 1)
	w := 0
outer:
	for i, k := range keys {
		if k != (dedupKey{}) {
			if _, ok := d.find(k); ok {
				continue // committed before
			}
			j := k.lo & mask
			for ; scratch[j] != 0; j = (j + 1) & mask {
				if keys[scratch[j]-1] == k {
					continue outer // earlier in this request
				}
			}
			scratch[j] = int32(w + 1)
		}
		keys[w] = k
		if events != nil {
			events[w] = events[i]
		}
		w++
	}
	if size > maxScratch {
		d.scratch = nil
	} else {
		clear(scratch)
	}
	dropped := len(keys) - w
	if dropped > 0 {
		d.dropped.Add(uint64(dropped))
	}
	clear(keys[w:])
	if events != nil {
		clear(events[w:]) // no stale references to the body
		events = events[:w]
	}
	return keys[:w], events, dropped
}

// seenAt reports whether key was committed less than the TTL before now.
// It counts nothing; dedupFilterAt is the bulk form that does.
func (d *dedup) seenAt(now time.Time, key dedupKey) bool {
	if d == nil || key == (dedupKey{}) {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expire(d.offset(now))
	_, ok := d.find(key)
	return ok
}

// commitAt records keys at instant now, once their events are durable.
// Zero keys and keys already held are skipped; a held key keeps its first
// commit time.
func (d *dedup) commitAt(now time.Time, keys []dedupKey) {
	if d == nil || len(keys) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.offset(now)
	d.expire(t)
	d.warm(keys)
	if d.n+len(keys) > d.maxEntries {
		d.warmOldest(d.n + len(keys) - d.maxEntries)
	}
	added := 0
	for _, k := range keys {
		if k == (dedupKey{}) {
			continue
		}
		if _, ok := d.find(k); ok {
			continue
		}
		if d.n == d.maxEntries {
			d.pop()
			d.evicted.Add(1)
		}
		d.push(dedupEntry{k, t})
		added++
	}
	d.committed.Add(uint64(added))
}

// stats returns a snapshot of the counters.
func (d *dedup) stats() dedupStats {
	if d == nil {
		return dedupStats{}
	}
	d.mu.Lock()
	n := d.n
	d.mu.Unlock()
	return dedupStats{
		Dropped:   d.dropped.Load(),
		Committed: d.committed.Load(),
		Expired:   d.expired.Load(),
		Evicted:   d.evicted.Load(),
		Entries:   n,
	}
}

// offset turns now into nanoseconds after the epoch, never less than an
// offset seen before. The first instant seen becomes the epoch.
func (d *dedup) offset(now time.Time) int64 {
	if !d.begun {
		d.epoch, d.begun = now, true
	}
	if t := int64(now.Sub(d.epoch)); t > d.last {
		d.last = t
	}
	return d.last
}

// expire forgets the entries committed a TTL or more before t.
func (d *dedup) expire(t int64) {
	cutoff := t - int64(d.ttl)
	var n uint64
	for d.n > 0 && d.ring[d.head].at <= cutoff {
		d.pop()
		n++
	}
	if n > 0 {
		d.expired.Add(n)
	}
}

// pop forgets the oldest entry.
func (d *dedup) pop() {
	d.unindex(d.ring[d.head].key)
	d.ring[d.head] = dedupEntry{}
	d.head++
	if d.head == len(d.ring) {
		d.head = 0
	}
	d.n--
}

// push records e as the newest entry, growing the ring by doubling up to
// maxEntries. The caller makes room first when it holds maxEntries.
func (d *dedup) push(e dedupEntry) {
	if d.n == len(d.ring) {
		d.grow(min(max(2*len(d.ring), 1024), d.maxEntries))
	}
	pos := d.head + d.n
	if pos >= len(d.ring) {
		pos -= len(d.ring)
	}
	d.ring[pos] = e
	d.n++
	i := e.key.hi >> d.shift
	mask := uint64(len(d.index) - 1)
	for d.index[i] != 0 {
		i = (i + 1) & mask
	}
	d.index[i] = e.key.hi>>32<<32 | uint64(pos+1)
}

// grow moves the entries to a ring of capacity c, oldest first, and
// rebuilds the index for it.
func (d *dedup) grow(c int) {
	ring := make([]dedupEntry, c)
	m := copy(ring, d.ring[d.head:d.head+min(d.n, len(d.ring)-d.head)])
	copy(ring[m:d.n], d.ring)
	bits := uint(10)
	for 1<<bits < 2*c { // at most half full
		bits++
	}
	d.ring, d.head = ring, 0
	d.index, d.shift = make([]uint64, 1<<bits), 64-bits
	n := d.n
	d.n = 0
	for _, e := range ring[:n] {
		d.push(e)
	}
}

// warm loads the first index slot each key probes, in a loop of
// independent loads that the CPU overlaps: a request of 100 keys then waits
// for memory a few times instead of 100 times. find and unindex then hit
// the cache.
func (d *dedup) warm(keys []dedupKey) {
	if d.n == 0 {
		return
	}
	var sum uint64
	for _, k := range keys {
		sum += d.index[k.hi>>d.shift]
	}
	d.warmed += sum
}

// warmOldest is warm for the keys of the next n entries to be evicted.
func (d *dedup) warmOldest(n int) {
	var sum uint64
	for i, pos := 0, d.head; i < min(n, d.n); i++ {
		sum += d.index[d.ring[pos].key.hi>>d.shift]
		if pos++; pos == len(d.ring) {
			pos = 0
		}
	}
	d.warmed += sum
}

// find returns the index slot of k.
func (d *dedup) find(k dedupKey) (int, bool) {
	if d.n == 0 {
		return 0, false
	}
	mask := uint64(len(d.index) - 1)
	for i := k.hi >> d.shift; ; i = (i + 1) & mask {
		s := d.index[i]
		if s == 0 {
			return 0, false
		}
		if (s^k.hi)>>32 == 0 && d.ring[uint32(s)-1].key == k {
			return int(i), true
		}
	}
}

// unindex removes k, which is indexed, from the index, shifting back the
// slots after it that probed past its slot (Knuth's algorithm R), so no
// tombstones are needed.
func (d *dedup) unindex(k dedupKey) {
	i, ok := d.find(k)
	if !ok {
		panic("ingest: dedup index lost an entry")
	}
	mask := len(d.index) - 1
	for j := (i + 1) & mask; d.index[j] != 0; j = (j + 1) & mask {
		home := int(d.index[j] >> d.shift)
		// The entry at j stays if its home lies cyclically in (i, j].
		if i <= j && i < home && home <= j || i > j && (home > i || home <= j) {
			continue
		}
		d.index[i] = d.index[j]
		i = j
	}
	d.index[i] = 0
}
