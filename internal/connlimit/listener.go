package connlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Listener is a net.Listener that bounds the connections open at once, in
// total and per client address. Build it with New, pass it to
// http.Server.Serve (or ServeTLS) and set http.Server.ConnState to its
// ConnState method. It is safe for concurrent use.
type Listener struct {
	inner net.Listener
	opts  Options
	log   *slog.Logger
	// The package's constants; tests change them.
	backoffMin, backoffMax time.Duration
	maxRefusing            int

	closed atomic.Bool
	done   chan struct{} // closed by Close

	mu    sync.Mutex
	open  int                    // admitted and not yet closed
	nidle int                    // of open, in idle
	idle  queue                  // idle conns, oldest first
	ips   map[netip.Addr]*client // with Options.PerIP: clients with an open conn
	// Refused conns being answered, each by its own goroutine in wg.
	refusing map[net.Conn]struct{}
	wg       sync.WaitGroup

	accepted, refused, refusedPerIP, evicted, acceptErrors atomic.Int64
}

// client is one address's share of the connections.
type client struct {
	open int
	idle queue // this client's idle conns, oldest first
}

// New wraps inner, which the Listener then owns: Close closes it. It returns
// an error wrapping ErrInvalidOptions for a nil inner or negative options.
func New(inner net.Listener, opts Options) (*Listener, error) {
	if inner == nil {
		return nil, fmt.Errorf("%w: nil listener", ErrInvalidOptions)
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	return &Listener{
		inner:       inner,
		opts:        opts,
		log:         opts.Logger,
		backoffMin:  backoffMin,
		backoffMax:  backoffMax,
		maxRefusing: maxRefusing,
		done:        make(chan struct{}),
		idle:        queue{i: globalQ},
		ips:         make(map[netip.Addr]*client),
		refusing:    make(map[net.Conn]struct{}),
	}, nil
}

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close closes the inner listener: pending and later Accept calls return
// net.ErrClosed at once, also while backing off. Refused connections still
// being answered are closed, and Close waits for their goroutines.
// Connections already accepted stay open and keep their slots until they
// are closed (by http.Server.Shutdown or Close, for one). Later calls
// return nil.
func (l *Listener) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	close(l.done)
	err := l.inner.Close()
	l.mu.Lock()
	for nc := range l.refusing {
		_ = nc.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

// Accept waits for and returns the next admitted connection. Connections
// over a limit are refused here (see Options.RejectHTTP) and never returned;
// temporary accept errors are waited out here, never returned. It returns
// net.ErrClosed after Close, and any other error of the inner listener as
// is.
func (l *Listener) Accept() (net.Conn, error) {
	var bo backoff
	for {
		if l.closed.Load() {
			bo.end(l)
			return nil, net.ErrClosed
		}
		nc, err := l.inner.Accept()
		if err != nil {
			if l.closed.Load() {
				bo.end(l)
				return nil, net.ErrClosed
			}
			if !temporary(err) {
				bo.end(l)
				return nil, err
			}
			l.acceptErrors.Add(1)
			if !bo.wait(l, err) {
				return nil, net.ErrClosed
			}
			continue
		}
		bo.end(l)
		if c := l.admit(nc); c != nil {
			return c, nil
		}
	}
}

// resourceErrnos are the accept errors that mean "try again later": out of
// descriptors or kernel memory, interrupted, or (per accept(2) on Linux) a
// network error pending on the new connection. net/http retries only those
// its Temporary method names (EINTR, EMFILE, ENFILE, EAGAIN, ECONNRESET,
// ECONNABORTED) and stops serving on ENOBUFS or ENOMEM.
var resourceErrnos = []error{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.EINTR, syscall.EAGAIN, syscall.ECONNABORTED, syscall.ECONNRESET,
	syscall.EPROTO, syscall.EPERM, syscall.ENETDOWN, syscall.ENETUNREACH,
	syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.ENOPROTOOPT, syscall.EOPNOTSUPP,
}

// temporary reports whether Accept should back off and retry after err.
func temporary(err error) bool {
	for _, e := range resourceErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false // the caller's own deadline
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// backoff is one episode of consecutive accept errors, local to one Accept
// call.
type backoff struct {
	n      int
	delay  time.Duration
	start  time.Time
	last   error
	logged bool
}

// wait sleeps after the episode's latest error, err, and reports false if
// the listener was closed meanwhile. The episode is logged once: when the
// delay reaches its cap, or at its end if it ends before.
func (b *backoff) wait(l *Listener, err error) bool {
	if b.n == 0 {
		b.start, b.delay = time.Now(), l.backoffMin
	} else {
		b.delay = min(2*b.delay, l.backoffMax)
	}
	b.n++
	b.last = err
	if b.delay >= l.backoffMax && !b.logged {
		b.log(l, true)
	}
	t := time.NewTimer(b.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		b.end(l)
		return false
	}
}

// end closes the episode, logging it if that has not been done.
func (b *backoff) end(l *Listener) {
	if b.n > 0 && !b.logged {
		b.log(l, false)
	}
	*b = backoff{}
}

func (b *backoff) log(l *Listener, ongoing bool) {
	b.logged = true
	l.log.Warn("connlimit: accept errors, backing off", "errors", b.n, "err", b.last.Error(),
		"for", time.Since(b.start).Round(time.Millisecond), "ongoing", ongoing)
}

// admit counts nc in, evicting an idle conn if that is what makes room, or
// refuses it and returns nil.
func (l *Listener) admit(nc net.Conn) *conn {
	if l.closed.Load() {
		_ = nc.Close() // Accept returns net.ErrClosed next
		return nil
	}
	l.accepted.Add(1)
	var key netip.Addr
	keyed := false
	if l.opts.PerIP > 0 {
		key, keyed = clientKey(nc.RemoteAddr())
	}
	l.mu.Lock()
	var cl *client
	if keyed {
		cl = l.ips[key]
	}
	var victim *conn
	switch {
	case cl != nil && cl.open >= l.opts.PerIP:
		// Over its own cap, a client gives up its oldest idle conn or is
		// refused; it never takes another client's slot.
		if victim = l.evictable(&cl.idle); victim == nil {
			l.mu.Unlock()
			l.refuse(nc, true)
			return nil
		}
	case l.open >= l.opts.Max:
		if victim = l.evictable(&l.idle); victim == nil {
			l.mu.Unlock()
			l.refuse(nc, false)
			return nil
		}
	}
	if victim != nil {
		l.releaseLocked(victim)
		if keyed {
			cl = l.ips[key] // the victim may have been its last
		}
	}
	if keyed && cl == nil {
		cl = &client{idle: queue{i: clientQ}}
		l.ips[key] = cl
	}
	c := &conn{Conn: nc, l: l, key: key, cl: cl}
	l.open++
	if cl != nil {
		cl.open++
	}
	l.mu.Unlock()
	if victim != nil {
		l.evicted.Add(1)
		_ = victim.Close()
	}
	return c
}

// evictable returns the oldest conn of q if it has been idle long enough.
func (l *Listener) evictable(q *queue) *conn {
	c := q.head
	if c == nil || time.Since(c.idleSince) < l.opts.EvictAfter {
		return nil
	}
	return c
}

// The fixed refusals, the same whatever the request.
var (
	reject503 = rejection("503 Service Unavailable", `{"error":"too many connections, retry later"}`)
	reject429 = rejection("429 Too Many Requests", `{"error":"too many connections from this address, retry later"}`)
)

func rejection(status, body string) []byte {
	body += "\n"
	return []byte("HTTP/1.1 " + status + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Retry-After: 1\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// refuse answers nc (with RejectHTTP) and closes it, in a goroutine of
// its own if it has to wait.
func (l *Listener) refuse(nc net.Conn, perIP bool) {
	l.refused.Add(1)
	resp := reject503
	if perIP {
		l.refusedPerIP.Add(1)
		resp = reject429
	}
	if !l.opts.RejectHTTP {
		drain(nc)
		_ = nc.Close()
		return
	}
	l.mu.Lock()
	if !l.closed.Load() && len(l.refusing) < l.maxRefusing {
		l.refusing[nc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.answer(nc, resp)
		return
	}
	l.mu.Unlock()
	// Too many waiting already: answer now, unasked.
	_ = nc.SetWriteDeadline(time.Now().Add(rejectWriteTimeout))
	_, _ = nc.Write(resp)
	drain(nc)
	_ = nc.Close()
}

// answer waits for the client's request to start, answers it with resp and
// closes nc gracefully (see refuseWait).
func (l *Listener) answer(nc net.Conn, resp []byte) {
	defer func() {
		_ = nc.Close()
		l.mu.Lock()
		delete(l.refusing, nc)
		l.mu.Unlock()
		l.wg.Done()
	}()
	var buf [4096]byte
	_ = nc.SetReadDeadline(time.Now().Add(refuseWait))
	if n, err := nc.Read(buf[:]); n == 0 && !errors.Is(err, os.ErrDeadlineExceeded) {
		return // the client left, or Close closed nc
	}
	_ = nc.SetWriteDeadline(time.Now().Add(rejectWriteTimeout))
	if _, err := nc.Write(resp); err != nil {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = nc.SetReadDeadline(time.Now().Add(refuseLinger))
	for {
		if _, err := nc.Read(buf[:]); err != nil {
			return // EOF: the client closed after reading the answer
		}
	}
}

// clientKey is the per-client key of a peer address: the IPv4 address, or
// the /64 of an IPv6 one (one host usually owns a whole /64).
func clientKey(a net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		ip = ta.AddrPort().Addr()
	} else if a != nil {
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return netip.Addr{}, false
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip, true
}

// ConnState tracks which connections are idle; set it as
// http.Server.ConnState (call it from your own hook if you have one). It
// recognises the Listener's conns also inside a *tls.Conn or any wrapper
// with a NetConn method, and ignores other conns. Without it no connection
// is ever idle, so none is evicted: at the limit new ones are refused.
func (l *Listener) ConnState(nc net.Conn, s http.ConnState) {
	c := l.find(nc)
	if c == nil {
		return
	}
	if s == http.StateClosed {
		_ = c.Close() // normally done already; frees the slot if a wrapper did not
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.released {
		return
	}
	if s != http.StateIdle {
		l.unidleLocked(c) // New, Active, Hijacked
		return
	}
	if !c.idle {
		c.idle, c.idleSince = true, time.Now()
		l.nidle++
		l.idle.push(c)
		if c.cl != nil {
			c.cl.idle.push(c)
		}
	}
}

// find returns the Listener's conn under nc, or nil.
func (l *Listener) find(nc net.Conn) *conn {
	for range 8 {
		switch c := nc.(type) {
		case *conn:
			if c.l == l {
				return c
			}
			return nil
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// releaseLocked gives c's slot back, once.
func (l *Listener) releaseLocked(c *conn) {
	if c.released {
		return
	}
	c.released = true
	l.unidleLocked(c)
	l.open--
	if c.cl != nil {
		if c.cl.open--; c.cl.open == 0 {
			delete(l.ips, c.key)
		}
	}
}

func (l *Listener) unidleLocked(c *conn) {
	if !c.idle {
		return
	}
	c.idle = false
	l.nidle--
	l.idle.remove(c)
	if c.cl != nil {
		c.cl.idle.remove(c)
	}
}
