package linkemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCloseTimeout bounds how long Close waits for the link's goroutines.
const DefaultCloseTimeout = 10 * time.Second

// state is an immutable snapshot of the live settings. Set replaces it and
// closes the old one's changed channel, which wakes every waiter.
type state struct {
	s Settings
	// upAt is when the last outage ended (zero if there was none): bytes
	// held through an outage are delivered no earlier than upAt+Latency.
	upAt    time.Time
	changed chan struct{}
}

// Link is a running emulated link: a TCP proxy from its listen address to
// Options.Upstream. Its methods are safe for concurrent use.
type Link struct {
	opts Options
	log  *slog.Logger
	ln   net.Listener

	st   atomic.Pointer[state]
	dirs [2]*dir

	mu     sync.Mutex // serialises settings changes; guards conns, closed
	conns  map[*conn]struct{}
	closed bool

	closing   chan struct{} // closed by Shutdown
	dialCtx   context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // every goroutine the link starts
	closeOnce sync.Once
	done      chan struct{} // closed once wg is done after Shutdown

	accepted, refused, resets, dialErrors atomic.Int64
}

// New validates opts, listens, and starts forwarding. The caller must Close
// the Link.
func New(opts Options) (*Link, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen %s: %w", opts.Listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{
		opts:    opts,
		log:     opts.Logger,
		ln:      ln,
		conns:   make(map[*conn]struct{}),
		closing: make(chan struct{}),
		dialCtx: ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	l.st.Store(&state{s: opts.Settings, changed: make(chan struct{})})
	for d := range l.dirs {
		l.dirs[d] = newDir(l, direction(d), opts.Seed)
	}
	l.wg.Add(3)
	go l.acceptLoop()
	go l.dirs[upstream].serialize()
	go l.dirs[downstream].serialize()
	l.log.Info("linkemu: listening", "addr", l.Addr(), "upstream", opts.Upstream,
		"settings", opts.Settings.String())
	return l, nil
}

// Addr is the host:port clients connect to instead of Options.Upstream.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Settings returns the current settings.
func (l *Link) Settings() Settings { return l.st.Load().s }

// Set replaces the settings, live. Bytes already past the bottleneck keep
// the delay they were given; everything after uses s. Moving to
// OutageReset resets every open connection before Set returns.
func (l *Link) Set(s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return l.update(func(cur *Settings) { *cur = s })
}

// SetDown takes the link down (with Options.OutageMode) or brings it back
// up, keeping the shapes.
func (l *Link) SetDown(down bool) error {
	return l.update(func(cur *Settings) {
		cur.Outage = OutageNone
		if down {
			cur.Outage = l.opts.OutageMode
		}
	})
}

func (l *Link) update(change func(*Settings)) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	old := l.st.Load()
	ns := &state{s: old.s, upAt: old.upAt, changed: make(chan struct{})}
	change(&ns.s)
	if old.s.Outage != OutageNone && ns.s.Outage == OutageNone {
		ns.upAt = time.Now()
	}
	l.st.Store(ns)
	close(old.changed)
	var victims []*conn
	if ns.s.Outage == OutageReset {
		for c := range l.conns {
			victims = append(victims, c)
		}
	}
	l.mu.Unlock()

	for _, c := range victims {
		if c.abort(true) {
			l.resets.Add(1)
		}
	}
	if ns.s != old.s {
		l.log.Info("linkemu: settings", "settings", ns.s.String(), "reset_conns", len(victims))
	}
	return nil
}

// Run applies each step of sc at its At after Run was called, and returns
// nil once the last step is applied, ctx.Err() if ctx ends first, or
// ErrClosed if the link closes. Steps already due (At ≤ elapsed) are
// applied at once, in order. Run it in its own goroutine to script a bench.
func (l *Link) Run(ctx context.Context, sc Schedule) error {
	if err := sc.Validate(); err != nil {
		return err
	}
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for _, step := range sc {
		if d := time.Until(start.Add(step.At)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			case <-l.closing:
				return ErrClosed
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := l.Set(step.Settings); err != nil {
			return err
		}
	}
	return nil
}

// Shutdown stops accepting, closes every connection and waits for every
// goroutine of the link, or for ctx. Bytes not yet delivered are dropped.
// It is idempotent; Close is Shutdown with DefaultCloseTimeout.
func (l *Link) Shutdown(ctx context.Context) error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		conns := make([]*conn, 0, len(l.conns))
		for c := range l.conns {
			conns = append(conns, c)
		}
		l.mu.Unlock()
		close(l.closing)
		l.cancel()
		_ = l.ln.Close()
		for _, c := range conns {
			c.abort(false)
		}
		go func() {
			l.wg.Wait()
			close(l.done)
		}()
		l.log.Info("linkemu: closed", "addr", l.Addr())
	})
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("linkemu: shutdown: %w", ctx.Err())
	}
}

// Close is Shutdown with a DefaultCloseTimeout deadline.
func (l *Link) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCloseTimeout)
	defer cancel()
	return l.Shutdown(ctx)
}

func (l *Link) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closing:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Debug("linkemu: accept", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.closing:
				return
			}
			continue
		}
		backoff = 0
		l.accepted.Add(1)
		client := nc.(*net.TCPConn)
		if l.st.Load().s.Outage == OutageReset {
			l.refused.Add(1)
			resetClose(client)
			continue
		}
		l.wg.Add(1)
		go l.serve(client)
	}
}

// serve dials upstream for client and starts the connection's goroutines.
func (l *Link) serve(client *net.TCPConn) {
	defer l.wg.Done()
	d := net.Dialer{Timeout: l.opts.DialTimeout}
	nc, err := d.DialContext(l.dialCtx, "tcp", l.opts.Upstream)
	if err != nil {
		l.dialErrors.Add(1)
		l.log.Debug("linkemu: dial upstream", "upstream", l.opts.Upstream, "err", err)
		resetClose(client)
		return
	}
	server := nc.(*net.TCPConn)
	if rb := l.opts.ReadBuffer; rb > 0 {
		_ = client.SetReadBuffer(rb)
		_ = server.SetReadBuffer(rb)
	}
	c := newConn(l, client, server)

	l.mu.Lock()
	if l.closed || l.st.Load().s.Outage == OutageReset {
		closed := l.closed
		l.mu.Unlock()
		if !closed {
			l.refused.Add(1)
		}
		resetClose(client)
		resetClose(server)
		return
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	l.log.Debug("linkemu: conn open", "client", client.RemoteAddr())
	c.start()
}

// forget removes a finished connection.
func (l *Link) forget(c *conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// resetClose closes c with a TCP reset rather than a FIN.
func resetClose(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
