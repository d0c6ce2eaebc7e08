package ingest

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// errBusy is how a charge says the budget stayed spent for its whole wait:
// the request is answered 429 with Retry-After.
var errBusy = errors.New("ingest: memory budget for requests in flight is spent")

// budget is a count of bytes that requests in flight may hold: their
// bodies as received, decoded and rebuilt into events. A request charges
// what it is about to allocate before it allocates it, and gives it all
// back when it is answered. A charge that does not fit waits for releases
// at most wait, then fails with errBusy; nothing is held then for that
// charge (what the request held before stays held until it releases).
//
// It is not a semaphore.Weighted: requests charge in many small steps as
// their bytes arrive, and a FIFO head waiting for a large step would hold
// back every small one behind it; here every waiter retries on each
// release and whoever fits goes.
type budget struct {
	size int64
	wait time.Duration

	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed and replaced at each release
	stats budgetStats
}

// budgetStats are a budget's counters.
type budgetStats struct {
	Used, Size int64  // bytes held now, and the budget
	Peak       int64  // the most held at once since the start
	Waits      uint64 // charges that had to wait
	Refusals   uint64 // charges that waited in vain (errBusy)
}

func newBudget(size int64, wait time.Duration) *budget {
	return &budget{size: size, wait: wait, freed: make(chan struct{})}
}

// tryCharge takes n bytes if they fit, and returns the channel closed at
// the next release otherwise.
func (b *budget) tryCharge(n int64) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n <= b.size || n <= 0 {
		b.used += max(n, 0)
		b.stats.Peak = max(b.stats.Peak, b.used)
		return true, nil
	}
	return false, b.freed
}

// charge takes n bytes, waiting for releases up to b.wait (or ctx).
func (b *budget) charge(ctx context.Context, n int64) error {
	ok, freed := b.tryCharge(n)
	if ok {
		return nil
	}
	if n > b.size {
		b.count(false)
		return errBusy // could never fit
	}
	b.count(true)
	t := time.NewTimer(b.wait)
	defer t.Stop()
	for {
		select {
		case <-freed:
		case <-t.C:
			b.count(false)
			return errBusy
		case <-ctx.Done():
			b.count(false)
			return errBusy
		}
		if ok, freed = b.tryCharge(n); ok {
			return nil
		}
	}
}

func (b *budget) count(wait bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if wait {
		b.stats.Waits++
	} else {
		b.stats.Refusals++
	}
}

// waitRelease waits until some charge is released, ctx ends or wait
// passes, whichever comes first.
func (b *budget) waitRelease(ctx context.Context, wait time.Duration) {
	b.mu.Lock()
	freed := b.freed
	b.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-freed:
	case <-t.C:
	case <-ctx.Done():
	}
}

// release gives back n bytes and wakes the waiters.
func (b *budget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		b.mu.Unlock()
		panic("ingest: budget released more than was charged")
	}
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// Stats returns the budget's counters.
func (b *budget) Stats() budgetStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Used, s.Size = b.used, b.size
	return s
}

// meter is one request's account: what it charged to which budget, so
// that it gives all of it back once. Until the request is authorized it
// charges the pre-auth budget, after that the main one: requests without
// a valid key can spend only the smaller one, whatever they send. A nil
// *meter, or one with nil budgets, charges nothing (a decoder called
// without a handler, as in tests).
type meter struct {
	ctx        context.Context
	pre, main  *budget
	authorized bool
	held       [2]int64 // pre, main
}

// charge takes n more bytes for the request.
func (m *meter) charge(n int64) error {
	if m == nil || n <= 0 {
		return nil
	}
	i, b := 0, m.pre
	if m.authorized {
		i, b = 1, m.main
	}
	if b == nil {
		return nil
	}
	ctx := m.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := b.charge(ctx, n); err != nil {
		return err
	}
	m.held[i] += n
	return nil
}

// tryCharge takes n more bytes if they fit now, without waiting.
func (m *meter) tryCharge(n int64) bool {
	if n <= 0 {
		return true
	}
	i, b := 0, m.pre
	if m.authorized {
		i, b = 1, m.main
	}
	if ok, _ := b.tryCharge(n); !ok {
		return false
	}
	m.held[i] += n
	return true
}

// authorize sends the request's next charges to the main budget.
func (m *meter) authorize() {
	if m != nil {
		m.authorized = true
	}
}

// releaseAll gives back everything the request holds.
func (m *meter) releaseAll() {
	if m == nil {
		return
	}
	for i, b := range [2]*budget{m.pre, m.main} {
		if b != nil {
			b.release(m.held[i])
		}
		m.held[i] = 0
	}
}

// meteredBuf is a byte slice whose memory is charged to a meter before it
// is allocated: growth when it outgrows its array, and the bytes of a
// pooled array as they come into use. Growth doubles, so a buffer holds at
// most twice what was written to it, and all of it is charged.
type meteredBuf struct {
	b       []byte
	charged int64 // bytes of b's array charged to the current meter
}

// reserve makes room for n more bytes within limit (the most the buffer
// may ever hold), charging m first. It returns b's free room, at least n
// bytes (fewer only when limit allows fewer).
func (mb *meteredBuf) reserve(m *meter, n int, limit int64) ([]byte, error) {
	need := int64(len(mb.b)) + int64(n)
	if need > limit {
		need = limit
	}
	if need > int64(cap(mb.b)) {
		newCap := min(max(2*int64(cap(mb.b)), need, 4<<10), limit)
		if err := m.charge(newCap - mb.charged); err != nil {
			return nil, err
		}
		mb.charged = newCap
		nb := make([]byte, len(mb.b), newCap)
		copy(nb, mb.b)
		mb.b = nb
	} else if need > mb.charged {
		// A pooled array: its bytes count as they come into use.
		if err := m.charge(need - mb.charged); err != nil {
			return nil, err
		}
		mb.charged = need
	}
	return mb.b[len(mb.b):cap(mb.b)], nil
}

// readFrom appends r's bytes to the buffer until EOF, in steps of at most
// step bytes, each charged before it is read. It reads at most limit bytes
// in all (the buffer's length included) and returns errLimit if r has
// more.
func (mb *meteredBuf) readFrom(m *meter, r io.Reader, step int, limit int64, errLimit error) error {
	for {
		if int64(len(mb.b)) >= limit {
			// One more byte would pass the limit: is there one?
			var one [1]byte
			n, err := r.Read(one[:])
			if n > 0 {
				return errLimit
			}
			if err != nil {
				if errors.Is(err, errDecodedTooLarge) {
					return errLimit
				}
				if err == io.EOF {
					return nil
				}
				return err
			}
			continue
		}
		if mb.charged <= int64(len(mb.b)) { // no charged room left
			// Grow from 4 KiB by doubling up to step: a body that
			// trickles in (or never comes) holds a page, not a step.
			if _, err := mb.reserve(m, min(step, max(len(mb.b), 4<<10)), limit); err != nil {
				return err
			}
		}
		room := mb.b[len(mb.b):min(mb.charged, limit, int64(len(mb.b)+step))]
		n, err := r.Read(room)
		mb.b = mb.b[:len(mb.b)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// reset empties the buffer for the next request; charged becomes 0 as the
// next request has its own meter.
func (mb *meteredBuf) reset() {
	mb.b = mb.b[:0]
	mb.charged = 0
}
