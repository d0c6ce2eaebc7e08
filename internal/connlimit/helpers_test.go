package connlimit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// patience bounds every wait in these tests. It is a guard against hanging,
// never a measurement: nothing asserts how long anything took.
const patience = 20 * time.Second

// eventually polls cond until it holds, failing the test after patience.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// check verifies the Listener's bookkeeping: the idle queues hold exactly
// the idle, unreleased conns, oldest first, and the per-client counts add
// up to Open (every conn in these tests has a TCP peer).
func (l *Listener) check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open < 0 || l.open > l.opts.Max {
		return fmt.Errorf("open %d outside [0, %d]", l.open, l.opts.Max)
	}
	walk := func(q *queue, cl *client) (int, error) {
		n := 0
		for c := q.head; c != nil; c = c.links[q.i].next {
			n++
			if !c.idle || c.released {
				return n, fmt.Errorf("queue %d holds a conn with idle=%v released=%v", q.i, c.idle, c.released)
			}
			if cl != nil && c.cl != cl {
				return n, fmt.Errorf("client queue holds another client's conn")
			}
			if next := c.links[q.i].next; next != nil && next.idleSince.Before(c.idleSince) {
				return n, fmt.Errorf("queue %d out of order", q.i)
			}
		}
		return n, nil
	}
	n, err := walk(&l.idle, nil)
	if err != nil {
		return err
	}
	if n != l.nidle || l.nidle > l.open {
		return fmt.Errorf("idle queue has %d conns, nidle %d, open %d", n, l.nidle, l.open)
	}
	if l.opts.PerIP == 0 {
		if len(l.ips) != 0 {
			return fmt.Errorf("%d clients tracked without PerIP", len(l.ips))
		}
		return nil
	}
	sum, idle := 0, 0
	for k, cl := range l.ips {
		if cl.open <= 0 || cl.open > l.opts.PerIP {
			return fmt.Errorf("client %v has %d open, cap %d", k, cl.open, l.opts.PerIP)
		}
		sum += cl.open
		m, err := walk(&cl.idle, cl)
		if err != nil {
			return err
		}
		idle += m
	}
	if sum != l.open || idle != l.nidle {
		return fmt.Errorf("clients hold %d open, %d idle; listener %d, %d", sum, idle, l.open, l.nidle)
	}
	return nil
}

// blocker is a handler: "/block" waits until release is closed (an
// active connection), anything else answers 200 "ok".
type blocker struct {
	entered chan struct{}
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (b *blocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/block" {
		b.entered <- struct{}{}
		<-b.release
	}
	_, _ = io.WriteString(w, "ok")
}

// serve starts an http.Server on a wrapped 127.0.0.1 listener. At cleanup
// it closes the server, waits for every slot to be freed and checks the
// bookkeeping.
func serve(t *testing.T, opts Options, h http.Handler) (*Listener, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(inner, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnState: l.ConnState, ReadHeaderTimeout: patience}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		eventually(t, "every slot freed", func() bool { return l.Stats().Open == 0 })
		if err := l.check(); err != nil {
			t.Error(err)
		}
		if s := l.Stats(); s.Idle != 0 {
			t.Errorf("idle %d after close", s.Idle)
		}
	})
	return l, inner.Addr().String()
}

// dial opens a raw connection to addr from the loopback address from
// ("" for the default), closed at cleanup.
func dial(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: patience}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(patience))
	return c
}

// reply is a response with its body read.
type reply struct {
	*http.Response
	body string
}

// get sends GET / on c and returns the reply.
func get(t *testing.T, c net.Conn, br *bufio.Reader) reply {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: sluice\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return read(t, br)
}

// read reads a reply from br.
func read(t *testing.T, br *bufio.Reader) reply {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp, string(body)}
}

// wantRefusal checks a refusal: the status, Retry-After: 1, Connection:
// close and a JSON body with an error.
func wantRefusal(t *testing.T, resp reply, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d", resp.StatusCode, status)
	}
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if !resp.Close {
		t.Error("no Connection: close")
	}
	var msg struct{ Error string }
	if err := json.Unmarshal([]byte(resp.body), &msg); err != nil || msg.Error == "" {
		t.Errorf("body %q: %v", resp.body, err)
	}
}

// wantOK checks a 200 "ok".
func wantOK(t *testing.T, resp reply) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.body != "ok" {
		t.Fatalf("got %d %q, want 200 ok", resp.StatusCode, resp.body)
	}
}

// wantEOF reads c to its end and wants a clean close (FIN), not a reset.
func wantEOF(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read %d bytes, %v; want a clean EOF", n, err)
	}
}

// recorder is a slog.Handler that keeps the records it gets.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

// records returns the records so far, each as a map of its attributes.
func (r *recorder) records() []map[string]slog.Value {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]slog.Value
	for _, rec := range r.recs {
		m := map[string]slog.Value{"msg": slog.StringValue(rec.Message)}
		rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value; return true })
		out = append(out, m)
	}
	return out
}

// fakeListener returns the errors in errs (forever with repeat), then the
// conns sent on conns, then net.ErrClosed after Close.
type fakeListener struct {
	mu     sync.Mutex
	errs   []error
	repeat bool
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newFake(repeat bool, errs ...error) *fakeListener {
	return &fakeListener{errs: errs, repeat: repeat, conns: make(chan net.Conn, 1), closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case <-f.closed:
		return nil, net.ErrClosed
	default:
	}
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		if !f.repeat {
			f.errs = f.errs[1:]
		}
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// fakeConn is a connection that does nothing, from a fixed peer.
type fakeConn struct {
	net.Conn // nil: only the methods below are called
	peer     net.Addr
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.peer }
func (c *fakeConn) Close() error         { return nil }
