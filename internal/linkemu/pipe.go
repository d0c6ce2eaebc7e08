package linkemu

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// direction names one half of the link.
type direction int

const (
	upstream   direction = iota // client → server
	downstream                  // server → client
)

func (d direction) String() string {
	if d == upstream {
		return "upstream"
	}
	return "downstream"
}

const (
	// minChunk is the smallest unit the bottleneck serializes (about one
	// Ethernet frame), so that a chunk at 1 Mbit/s is 12 ms, not 130.
	minChunk = 1500
	// chunkTime is the transmission time a shaped chunk aims for.
	chunkTime = 2 * time.Millisecond
	// readSize is the read buffer of an unlimited direction.
	readSize = 64 << 10
	// serializeSlack is how far ahead of the clock the bottleneck releases
	// chunks, so one wake-up serves several small chunks. Departure times
	// are still exact; only the queue empties up to this much early.
	serializeSlack = time.Millisecond
	// catchUp is how far into the past a backlogged bottleneck may
	// schedule after waking late, so scheduler lag on a busy machine does
	// not cost capacity (the receiver sees the gap, then a burst making it
	// up). Longer stalls do cost capacity.
	catchUp = 20 * time.Millisecond
	// maxBatch bounds the chunks one writev delivers.
	maxBatch = 64
)

// chunkSize is how many bytes the link reads as one chunk at rate r.
func chunkSize(r Rate, maxChunk int) int {
	return min(max(r.bytesIn(chunkTime), minChunk), maxChunk)
}

// chunk is bytes read from one connection, travelling the link.
type chunk struct {
	f       *flow
	b       []byte
	eof     bool      // the sender closed its write side after b
	stamped time.Time // when it entered the link (queue or propagation)
	depart  time.Time // when its last bit left the bottleneck
	arrival time.Time // when it becomes visible at the far side
}

// dir is one direction of the link: its bottleneck (a FIFO of chunks
// shared by all connections, drained by serialize at the shaped rate), its
// jitter generator and its counters.
type dir struct {
	l *Link
	d direction

	mu         sync.Mutex
	q          []*chunk // waiting for the bottleneck, FIFO
	qBytes     int
	freeAt     time.Time     // when the bottleneck finishes what it has sent
	backlogged bool          // the queue was not empty at the last pass
	space      chan struct{} // closed (and replaced) when queue space frees
	wake       chan struct{} // cap 1: the queue became non-empty

	rngMu sync.Mutex
	rng   *rand.Rand

	delivered, dropped, inflight atomic.Int64
}

func newDir(l *Link, d direction, seed uint64) *dir {
	return &dir{
		l:     l,
		d:     d,
		space: make(chan struct{}),
		wake:  make(chan struct{}, 1),
		rng:   rand.New(rand.NewPCG(seed, uint64(d)+1)),
	}
}

// jitter draws an extra delay uniform in [0, j].
func (d *dir) jitter(j time.Duration) time.Duration {
	if j <= 0 {
		return 0
	}
	d.rngMu.Lock()
	defer d.rngMu.Unlock()
	return time.Duration(d.rng.Int64N(int64(j) + 1))
}

// enqueue puts c into the bottleneck queue once it has room (an empty
// queue always takes one chunk), or returns false if c's connection dies.
func (d *dir) enqueue(c *chunk) bool {
	n := len(c.b)
	for {
		st := d.l.st.Load()
		limit := st.s.shape(d.d).queueLimit()
		d.mu.Lock()
		if len(d.q) == 0 || d.qBytes+n <= limit {
			c.stamped = time.Now()
			d.q = append(d.q, c)
			d.qBytes += n
			d.mu.Unlock()
			signal(d.wake)
			return true
		}
		space := d.space
		d.mu.Unlock()
		select {
		case <-space:
		case <-st.changed:
		case <-c.f.c.done:
			return false
		}
	}
}

// purge drops the queued chunks of a dead connection.
func (d *dir) purge(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	kept := d.q[:0]
	for _, ch := range d.q {
		if ch.f.c == c {
			d.qBytes -= len(ch.b)
			continue
		}
		kept = append(kept, ch)
	}
	clear(d.q[len(kept):])
	d.q = kept
	d.freeSpace()
}

// freeSpace wakes readers waiting for queue room. Call with d.mu held.
func (d *dir) freeSpace() {
	close(d.space)
	d.space = make(chan struct{})
}

// serialize is the bottleneck: it releases queued chunks one after the
// other, each departing len*8/bps after the previous one (or after now, if
// the link was idle), and hands them to their connection's writer with
// arrival = departure + latency + jitter.
func (d *dir) serialize() {
	defer d.l.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []*chunk
	for {
		st := d.l.st.Load()
		d.mu.Lock()
		if len(d.q) == 0 {
			d.backlogged = false
			d.mu.Unlock()
			select {
			case <-d.wake:
			case <-d.l.closing:
				return
			}
			continue
		}
		if st.s.Outage != OutageNone {
			d.backlogged = false // after the outage the link restarts from then
			d.mu.Unlock()
			select {
			case <-st.changed:
			case <-d.l.closing:
				return
			}
			continue
		}
		sh := st.s.shape(d.d)
		now := time.Now()
		floor := now
		if d.backlogged {
			floor = now.Add(-catchUp)
		}
		if d.freeAt.Before(floor) {
			d.freeAt = floor
		}
		horizon := now.Add(serializeSlack)
		batch = batch[:0]
		popped := 0
		for len(d.q) > 0 && !d.freeAt.After(horizon) {
			c := d.q[0]
			d.q[0] = nil
			d.q = d.q[1:]
			d.qBytes -= len(c.b)
			popped++
			if c.f.c.dead.Load() {
				continue
			}
			d.freeAt = d.freeAt.Add(sh.Bandwidth.serialization(len(c.b)))
			c.depart = d.freeAt
			batch = append(batch, c)
		}
		if popped > 0 {
			d.freeSpace()
		}
		d.backlogged = len(d.q) > 0
		wait := d.freeAt.Sub(horizon)
		d.mu.Unlock()

		for i, c := range batch {
			c.f.deliver(c, c.depart, sh, true)
			batch[i] = nil
		}
		if d.backlogged && wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-st.changed:
				timer.Stop()
			case <-d.l.closing:
				timer.Stop()
				return
			}
		}
	}
}

// conn is one proxied connection: two flows and their four goroutines.
type conn struct {
	l              *Link
	client, server *net.TCPConn
	flows          [2]*flow

	done chan struct{} // closed by abort
	dead atomic.Bool
	once sync.Once
	live atomic.Int32 // goroutines still running
}

func newConn(l *Link, client, server *net.TCPConn) *conn {
	c := &conn{l: l, client: client, server: server, done: make(chan struct{})}
	c.flows[upstream] = newFlow(c, l.dirs[upstream], client, server)
	c.flows[downstream] = newFlow(c, l.dirs[downstream], server, client)
	return c
}

func (c *conn) start() {
	c.live.Store(4)
	c.l.wg.Add(4)
	for _, f := range c.flows {
		go f.read()
		go f.write()
	}
}

// exit is deferred by each of the connection's goroutines; the last one
// out closes the sockets and accounts for undelivered bytes.
func (c *conn) exit() {
	defer c.l.wg.Done()
	if c.live.Add(-1) > 0 {
		return
	}
	c.abort(false)
	for _, f := range c.flows {
		f.mu.Lock()
		lost := int64(f.inflight)
		f.inflight = 0
		f.mu.Unlock()
		f.d.dropped.Add(lost)
		f.d.inflight.Add(-lost)
		if lost > 0 {
			c.l.log.Debug("linkemu: conn dropped bytes", "dir", f.d.d, "bytes", lost)
		}
	}
	c.l.forget(c)
	c.l.log.Debug("linkemu: conn closed", "client", c.client.RemoteAddr())
}

// abort closes both sockets (with a reset if asked) and stops the
// connection's goroutines. It reports whether this call did it.
func (c *conn) abort(reset bool) bool {
	did := false
	c.once.Do(func() {
		did = true
		c.dead.Store(true)
		if reset {
			resetClose(c.client)
			resetClose(c.server)
		} else {
			_ = c.client.Close()
			_ = c.server.Close()
		}
		close(c.done)
		for _, f := range c.flows {
			f.d.purge(c)
		}
	})
	return did
}

// flow is one direction of one connection: a reader that turns bytes from
// src into chunks, and a writer that delivers them to dst on arrival.
type flow struct {
	c        *conn
	d        *dir
	src, dst *net.TCPConn
	scratch  []byte

	mu          sync.Mutex
	q           []*chunk // past the bottleneck, awaiting arrival; FIFO
	queued      int      // chunks in d.q
	pending     int      // chunks read and not yet written
	inflight    int      // bytes of those
	lastArrival time.Time
	wake        chan struct{} // cap 1: q became non-empty (writer)
	space       chan struct{} // cap 1: inflight went down (reader)
}

func newFlow(c *conn, d *dir, src, dst *net.TCPConn) *flow {
	return &flow{
		c: c, d: d, src: src, dst: dst,
		scratch: make([]byte, readSize),
		wake:    make(chan struct{}, 1),
		space:   make(chan struct{}, 1),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// read is the flow's reader goroutine.
func (f *flow) read() {
	defer f.c.exit()
	for {
		size := len(f.scratch)
		if r := f.c.l.st.Load().s.shape(f.d.d).Bandwidth; r > 0 {
			size = chunkSize(r, f.c.l.opts.MaxChunk)
		}
		n, err := f.src.Read(f.scratch[:size])
		if n > 0 && !f.forward(f.scratch[:n]) {
			return
		}
		if err != nil {
			if f.c.dead.Load() {
				return
			}
			if errors.Is(err, io.EOF) {
				f.send(&chunk{f: f, eof: true})
				return
			}
			// A reset (or worse) on one side resets the other too.
			f.c.l.log.Debug("linkemu: read", "dir", f.d.d, "err", err)
			f.c.abort(true)
			return
		}
	}
}

// forward sends b through the link, blocking while the link is down, the
// flow's window is full or the bottleneck queue is full. It reports false
// once the connection is dead.
func (f *flow) forward(b []byte) bool {
	for len(b) > 0 {
		st, ok := f.waitUp()
		if !ok {
			return false
		}
		sh := st.s.shape(f.d.d)
		if sh.IsZero() {
			// Fast path: nothing of ours in the link, so write directly,
			// like io.Copy. Only this goroutine creates chunks, so the
			// writer stays idle meanwhile.
			f.mu.Lock()
			idle := f.pending == 0
			f.mu.Unlock()
			if idle {
				if _, err := f.dst.Write(b); err != nil {
					if !f.c.dead.Load() {
						f.c.l.log.Debug("linkemu: write", "dir", f.d.d, "err", err)
						f.c.abort(true)
					}
					return false
				}
				f.d.delivered.Add(int64(len(b)))
				return true
			}
		}
		n := len(b)
		if sh.Bandwidth > 0 {
			n = min(n, chunkSize(sh.Bandwidth, f.c.l.opts.MaxChunk))
		}
		c := &chunk{f: f, b: append([]byte(nil), b[:n]...)}
		if !f.send(c) {
			return false
		}
		b = b[n:]
	}
	return true
}

// waitUp waits until the link is not in an outage.
func (f *flow) waitUp() (*state, bool) {
	for {
		st := f.c.l.st.Load()
		if st.s.Outage == OutageNone {
			return st, true
		}
		select {
		case <-st.changed:
		case <-f.c.done:
			return nil, false
		}
	}
}

// send reserves window for c and routes it: through the bottleneck queue
// if the direction has a bandwidth (or earlier chunks of this flow are
// still queued, to keep order), else straight into propagation.
func (f *flow) send(c *chunk) bool {
	n := len(c.b)
	for {
		f.mu.Lock()
		if f.inflight == 0 || f.inflight+n <= f.c.l.opts.Window {
			f.inflight += n
			f.pending++
			f.mu.Unlock()
			break
		}
		f.mu.Unlock()
		select {
		case <-f.space:
		case <-f.c.done:
			return false
		}
	}
	f.d.inflight.Add(int64(n))
	if c.eof {
		// A close travels like data, but waits for the link to be up.
		if _, ok := f.waitUp(); !ok {
			return false
		}
	}
	sh := f.c.l.st.Load().s.shape(f.d.d)
	f.mu.Lock()
	direct := sh.Bandwidth == 0 && f.queued == 0
	if !direct {
		f.queued++
	}
	f.mu.Unlock()
	if !direct {
		return f.d.enqueue(c)
	}
	c.stamped = time.Now()
	f.deliver(c, c.stamped, sh, false)
	return true
}

// deliver puts c, which left the bottleneck at depart, into propagation.
// Arrival times of a flow never decrease, so jitter never reorders.
func (f *flow) deliver(c *chunk, depart time.Time, sh Shape, fromQueue bool) {
	arr := depart.Add(sh.Latency + f.d.jitter(sh.Jitter))
	f.mu.Lock()
	if arr.Before(f.lastArrival) {
		arr = f.lastArrival
	}
	f.lastArrival = arr
	c.arrival = arr
	f.q = append(f.q, c)
	if fromQueue {
		f.queued--
	}
	f.mu.Unlock()
	signal(f.wake)
}

// due is when c may be written: its arrival, but for a chunk that entered
// the link before the last outage ended, no earlier than one latency after
// recovery (as a retransmission would be).
func (f *flow) due(c *chunk, st *state) time.Time {
	if !st.upAt.IsZero() && c.stamped.Before(st.upAt) {
		if t := st.upAt.Add(st.s.shape(f.d.d).Latency); c.arrival.Before(t) {
			return t
		}
	}
	return c.arrival
}

// write is the flow's writer goroutine: it sleeps until the head chunk's
// arrival and writes every chunk due by then in one writev.
func (f *flow) write() {
	defer f.c.exit()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []*chunk
	var bufs net.Buffers
	for {
		f.mu.Lock()
		if len(f.q) == 0 {
			f.mu.Unlock()
			select {
			case <-f.wake:
				continue
			case <-f.c.done:
				return
			}
		}
		head := f.q[0]
		f.mu.Unlock()

		st := f.c.l.st.Load()
		if st.s.Outage != OutageNone {
			select {
			case <-st.changed:
				continue
			case <-f.c.done:
				return
			}
		}
		now := time.Now()
		if due := f.due(head, st); now.Before(due) {
			timer.Reset(due.Sub(now))
			select {
			case <-timer.C:
			case <-st.changed:
				timer.Stop()
			case <-f.c.done:
				timer.Stop()
				return
			}
			continue
		}

		f.mu.Lock()
		k := 0
		for k < len(f.q) && k < maxBatch && !f.due(f.q[k], st).After(now) {
			k++
		}
		batch = append(batch[:0], f.q[:k]...)
		clear(f.q[:k])
		f.q = f.q[k:]
		f.mu.Unlock()

		bufs = bufs[:0]
		bytes, eof := 0, false
		for _, c := range batch {
			if len(c.b) > 0 {
				bufs = append(bufs, c.b)
				bytes += len(c.b)
			}
			eof = eof || c.eof
		}
		if bytes > 0 {
			out := bufs // WriteTo consumes its receiver
			if _, err := out.WriteTo(f.dst); err != nil {
				if !f.c.dead.Load() {
					f.c.l.log.Debug("linkemu: write", "dir", f.d.d, "err", err)
					f.c.abort(true)
				}
				return
			}
		}
		clear(bufs)
		clear(batch)
		f.mu.Lock()
		f.pending -= k
		f.inflight -= bytes
		f.mu.Unlock()
		f.d.inflight.Add(-int64(bytes))
		f.d.delivered.Add(int64(bytes))
		signal(f.space)
		if eof {
			_ = f.dst.CloseWrite()
			return
		}
	}
}
