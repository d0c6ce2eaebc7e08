package linkemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dur picks a test duration: short under -short.
func dur(full, short time.Duration) time.Duration {
	if testing.Short() {
		return short
	}
	return full
}

// timingEnv gates the checks of this package's tests that bound a time:
// rates within 5%, latency and jitter medians, the unshaped floor, how
// soon a transfer resumes. The emulator's schedule is exact, but a shared
// machine can starve a goroutine (the sink's as well as the link's) for
// tens of milliseconds, which no user-space emulator can hide, so these
// figures are checked only on request, on a quiet machine:
//
//	SLUICE_LINK_TIMING=1 go test -count=1 -v ./internal/linkemu
//
// Without it the tests still check what no timing excuses: every byte
// delivered intact and in order, never earlier than the latency, writes
// blocked by a full queue, schedule steps applied, outages holding data.
const timingEnv = "SLUICE_LINK_TIMING"

// timingChecked reports whether timingEnv asks for the timing checks.
func timingChecked() bool { return os.Getenv(timingEnv) != "" }

// measure runs a timing measurement, which returns an error when a figure
// is outside its bound. With timingEnv set, it runs it up to three times
// and fails the test only if every attempt fails; without, it runs it once
// and logs the figure it would have refused. Checks that no timing
// excuses (data intact, never early) call t.Error directly either way.
func measure(t *testing.T, fn func(t *testing.T) error) {
	t.Helper()
	if !timingChecked() {
		if err := fn(t); err != nil {
			t.Logf("not checked (set %s=1 on a quiet machine): %v", timingEnv, err)
		}
		return
	}
	var err error
	for i := range 3 {
		if err = fn(t); err == nil {
			return
		}
		t.Logf("attempt %d: %v", i+1, err)
	}
	t.Error(err)
}

// newLink starts a Link to upstream and closes it at cleanup.
func newLink(t testing.TB, upstream string, s Settings, mod ...func(*Options)) *Link {
	t.Helper()
	o := Options{Upstream: upstream, Settings: s, Seed: 42}
	for _, m := range mod {
		m(&o)
	}
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// server is a loopback TCP server running handle on each connection; Close
// closes everything and waits for its goroutines.
type server struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startServer(t testing.TB, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *server) Addr() string { return s.ln.Addr().String() }

func (s *server) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// startEcho starts a server echoing every byte back.
func startEcho(t testing.TB) *server {
	return startServer(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// pattern is the byte at offset i of every test stream.
func pattern(i int64) byte { return byte(i % 251) }

// patternBuf holds the pattern from offset 0 for one period plus 64 KiB, so
// patternAt(off, n) is a slice, not a loop.
var patternBuf = func() []byte {
	b := make([]byte, 251+64<<10)
	for i := range b {
		b[i] = pattern(int64(i))
	}
	return b
}()

// patternAt is the n ≤ 64 KiB pattern bytes from offset off.
func patternAt(off int64, n int) []byte {
	s := int(off % 251)
	return patternBuf[s : s+n]
}

// sink receives streams, checks each against pattern and records when
// every byte arrived.
type sink struct {
	*server
	mu      sync.Mutex
	times   []time.Time // times[i]: when the total reached totals[i]
	totals  []int64
	total   int64
	perConn []int64 // bytes per connection, in accept order
	errs    []error
	eofs    int
}

func startSink(t testing.TB) *sink {
	k := &sink{}
	k.server = startServer(t, func(c net.Conn) {
		k.mu.Lock()
		idx := len(k.perConn)
		k.perConn = append(k.perConn, 0)
		k.mu.Unlock()
		buf := make([]byte, 64<<10)
		var off int64
		for {
			n, err := c.Read(buf)
			now := time.Now()
			if !bytes.Equal(buf[:n], patternAt(off, n)) {
				for i, b := range buf[:n] {
					if want := pattern(off + int64(i)); b != want {
						k.fail(fmt.Errorf("conn %d: byte %d is %d, want %d", idx, off+int64(i), b, want))
						return
					}
				}
			}
			off += int64(n)
			k.mu.Lock()
			if n > 0 {
				k.total += int64(n)
				k.perConn[idx] += int64(n)
				k.times = append(k.times, now)
				k.totals = append(k.totals, k.total)
			}
			if errors.Is(err, io.EOF) {
				k.eofs++
			}
			k.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	return k
}

func (k *sink) fail(err error) {
	k.mu.Lock()
	k.errs = append(k.errs, err)
	k.mu.Unlock()
}

func (k *sink) check(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, err := range k.errs {
		t.Error(err)
	}
}

// first is when the first byte arrived (zero if none).
func (k *sink) first() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.times) == 0 {
		return time.Time{}
	}
	return k.times[0]
}

// bytesAt is the total received by t.
func (k *sink) bytesAt(t time.Time) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	i := sort.Search(len(k.times), func(i int) bool { return k.times[i].After(t) })
	if i == 0 {
		return 0
	}
	return k.totals[i-1]
}

// firstAfter is when the first byte after t arrived (zero if none).
func (k *sink) firstAfter(t time.Time) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	i := sort.Search(len(k.times), func(i int) bool { return k.times[i].After(t) })
	if i == len(k.times) {
		return time.Time{}
	}
	return k.times[i]
}

// rate is the bit rate received in [from, to].
func (k *sink) rate(from, to time.Time) float64 {
	return float64(k.bytesAt(to)-k.bytesAt(from)) * 8 / to.Sub(from).Seconds()
}

func (k *sink) totalBytes() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.total
}

func (k *sink) waitEOFs(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		k.mu.Lock()
		e := k.eofs
		k.mu.Unlock()
		if e >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("sink: fewer than %d streams ended within %v", n, timeout)
}

// pump writes the pattern to c until ctx ends, then half-closes c. It
// returns the bytes written, and keeps progress (if not nil) up to date.
func pump(ctx context.Context, c net.Conn, progress *atomic.Int64) int64 {
	var off int64
	go func() {
		<-ctx.Done()
		// Unblock a Write stuck on a full link.
		_ = c.SetWriteDeadline(time.Now())
	}()
	for ctx.Err() == nil {
		n, err := c.Write(patternAt(off, 32<<10))
		off += int64(n)
		if progress != nil {
			progress.Store(off)
		}
		if err != nil {
			break
		}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	return off
}

// within reports whether got is within frac of want.
func within(got, want, frac float64) bool {
	return got >= want*(1-frac) && got <= want*(1+frac)
}

// ping writes msg on c and reads it back, returning the round trip.
func ping(t testing.TB, c net.Conn, msg []byte) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if string(back) != string(msg) {
		t.Fatalf("echo %q, want %q", back, msg)
	}
	return time.Since(start)
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
