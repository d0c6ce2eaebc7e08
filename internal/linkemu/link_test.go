package linkemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewValidates(t *testing.T) {
	for name, o := range map[string]Options{
		"no upstream":    {},
		"negative rate":  {Upstream: "127.0.0.1:1", Settings: Symmetric(Shape{Bandwidth: -1})},
		"negative delay": {Upstream: "127.0.0.1:1", Settings: Settings{Downstream: Shape{Latency: -time.Second}}},
		"bad outage":     {Upstream: "127.0.0.1:1", Settings: Settings{Outage: 7}},
		"bad mode":       {Upstream: "127.0.0.1:1", OutageMode: -1},
		"negative win":   {Upstream: "127.0.0.1:1", Window: -1},
	} {
		if _, err := New(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: New = %v, want ErrInvalidOptions", name, err)
		}
	}
	l := newLink(t, "127.0.0.1:1", Settings{})
	if err := l.Set(Symmetric(Shape{Jitter: -1})); !errors.Is(err, ErrInvalidSettings) {
		t.Errorf("Set = %v, want ErrInvalidSettings", err)
	}
	bad := Schedule{{At: time.Second}, {At: 0}}
	if err := l.Run(context.Background(), bad); !errors.Is(err, ErrInvalidSettings) {
		t.Errorf("Run = %v, want ErrInvalidSettings", err)
	}
}

func TestSettingsString(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{}, "both unshaped"},
		{Symmetric(Shape{Bandwidth: 20 * Mbit, Latency: 20 * time.Millisecond}), "both 20Mbit/s +20ms q=250000B"},
		{Settings{Upstream: Shape{Bandwidth: 1500 * Kbit, QueueBytes: 1000}, Outage: OutageReset}, "up 1.5Mbit/s q=1000B | down unshaped | outage reset"},
		{Settings{Downstream: Shape{Latency: time.Millisecond, Jitter: 2 * time.Millisecond}}, "up unshaped | down unlimited +1ms ~2ms"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%#v: %q, want %q", tc.s, got, tc.want)
		}
	}
}

// TestThroughput moves data through the bottleneck at several rates, with
// latency and with several connections, and checks it arrives intact on
// every connection. The rate over 1 s windows (±5%, and that latency and
// several connections do not change it) is checked under timingEnv.
func TestThroughput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rate    Rate
		latency time.Duration
		conns   int
	}{
		{"1Mbit", 1 * Mbit, 0, 1},
		{"10Mbit", 10 * Mbit, 0, 1},
		{"50Mbit", 50 * Mbit, 0, 1},
		{"100Mbit", 100 * Mbit, 0, 1},
		{"10Mbit+50ms", 10 * Mbit, 50 * time.Millisecond, 1},
		{"10Mbit/3conns", 10 * Mbit, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			measure(t, func(t *testing.T) error {
				k := startSink(t)
				l := newLink(t, k.Addr(), Settings{Upstream: Shape{Bandwidth: tc.rate, Latency: tc.latency}})
				window := dur(time.Second, 500*time.Millisecond)
				skip := 200*time.Millisecond + tc.latency
				ctx, cancel := context.WithTimeout(context.Background(), skip+2*window+200*time.Millisecond)
				defer cancel()
				var wg sync.WaitGroup
				for range tc.conns {
					c := dial(t, l.Addr())
					wg.Go(func() { pump(ctx, c, nil) })
				}
				wg.Wait()
				defer k.check(t)
				t0 := k.first()
				if t0.IsZero() {
					t.Fatal("nothing received")
				}
				from := t0.Add(skip - tc.latency)
				want := float64(tc.rate)
				var rates []float64
				for i := range 2 {
					a := from.Add(time.Duration(i) * window)
					rates = append(rates, k.rate(a, a.Add(window)))
				}
				total := k.rate(from, from.Add(2*window))
				t.Logf("%s: windows of %v: %.3f %.3f Mbit/s, over %v %.3f Mbit/s (%+.2f%%)",
					tc.name, window, rates[0]/1e6, rates[1]/1e6, 2*window, total/1e6, 100*(total/want-1))
				if tc.conns > 1 {
					k.mu.Lock()
					per := append([]int64(nil), k.perConn...)
					k.mu.Unlock()
					t.Logf("bytes per connection: %v", per)
					if slices.Contains(per, 0) {
						t.Errorf("a connection got nothing through: %v", per)
					}
				}
				for _, r := range rates {
					if !within(r, want, 0.05) {
						return fmt.Errorf("rate %.3f Mbit/s over %v, want %v ±5%%", r/1e6, window, tc.rate)
					}
				}
				return nil
			})
		})
	}
}

// TestLatency measures a ping-pong through 40 ms each way: never faster
// than 80 ms; the median's upper bound is checked under timingEnv.
func TestLatency(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Symmetric(Shape{Latency: 40 * time.Millisecond}))
	c := dial(t, l.Addr())
	measure(t, func(t *testing.T) error {
		rtts := make([]time.Duration, 8)
		for i := range rtts {
			rtts[i] = ping(t, c, []byte(fmt.Sprintf("ping %d", i)))
		}
		slices.Sort(rtts)
		lo, med, hi := rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1]
		t.Logf("RTT with 40ms each way: min %v median %v max %v", lo, med, hi)
		if lo < 80*time.Millisecond {
			t.Errorf("RTT %v < 80ms", lo) // never excused: the link delivered early
		}
		// The median, not the maximum: a loaded machine delays the
		// reader, not the link.
		if med >= 90*time.Millisecond {
			return fmt.Errorf("RTT median %v, want < 90ms", med)
		}
		return nil
	})
}

// TestJitter checks that jitter adds bounded, varying delay and never
// reorders bytes.
func TestJitter(t *testing.T) {
	const (
		lat    = 10 * time.Millisecond
		jitter = 20 * time.Millisecond
		n      = 200
	)
	e := startEcho(t)
	l := newLink(t, e.Addr(), Settings{Upstream: Shape{Latency: lat, Jitter: jitter}})
	measure(t, func(t *testing.T) error {
		c := dial(t, l.Addr())
		sent := make([]time.Time, n)
		var mu sync.Mutex
		go func() {
			var msg [8]byte
			for i := range n {
				binary.BigEndian.PutUint64(msg[:], uint64(i))
				mu.Lock()
				sent[i] = time.Now()
				mu.Unlock()
				if _, err := c.Write(msg[:]); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var msg [8]byte
		delays := make([]time.Duration, 0, n)
		for i := range n {
			if _, err := io.ReadFull(c, msg[:]); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			if got := binary.BigEndian.Uint64(msg[:]); got != uint64(i) {
				t.Fatalf("message %d arrived as #%d: reordered", got, i)
			}
			mu.Lock()
			delays = append(delays, now.Sub(sent[i]))
			mu.Unlock()
		}
		slices.Sort(delays)
		lo, p95, hi := delays[0], delays[n*95/100], delays[n-1]
		t.Logf("one-way 10ms + jitter 20ms, %d messages 1ms apart: delay min %v p50 %v p95 %v max %v",
			n, lo, delays[n/2], p95, hi)
		if lo < lat {
			t.Errorf("min delay %v < latency %v", lo, lat) // never excused
		}
		if hi-lo < jitter/2 {
			t.Errorf("delay spread %v, want ≥ %v: jitter not applied", hi-lo, jitter/2)
		}
		// The link's bound is latency+jitter; the reader's own scheduling
		// adds to every sample on a loaded machine (CI runs every package
		// at once under -race: p95 reached 42 ms), so the median is
		// checked, with 5 ms for the scheduler. A link that added too
		// much delay still fails it; one that delivered early fails above.
		if med := delays[n/2]; med > lat+jitter+5*time.Millisecond {
			return fmt.Errorf("delay median %v, want ≤ latency+jitter %v (+5ms)", med, lat+jitter)
		}
		return nil
	})
}

// TestScheduleStepChange runs 20 → 5 → 20 Mbit/s with Run under traffic
// and checks the data arrives intact and the last step holds after Run;
// each phase's rate, measured from 100 ms after each step, is checked
// under timingEnv. TestScheduleSteps checks the steps themselves.
func TestScheduleStepChange(t *testing.T) {
	measure(t, func(t *testing.T) error {
		k := startSink(t)
		l := newLink(t, k.Addr(), Settings{Upstream: Shape{Bandwidth: 20 * Mbit}})
		phase := dur(time.Second, 600*time.Millisecond)
		settle := 100 * time.Millisecond
		sc := Schedule{
			{At: phase, Settings: Settings{Upstream: Shape{Bandwidth: 5 * Mbit}}},
			{At: 2 * phase, Settings: Settings{Upstream: Shape{Bandwidth: 20 * Mbit}}},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*phase+100*time.Millisecond)
		defer cancel()
		c := dial(t, l.Addr())
		start := time.Now()
		runErr := make(chan error, 1)
		go func() { runErr <- l.Run(ctx, sc) }()
		pump(ctx, c, nil)
		if err := <-runErr; err != nil {
			t.Fatal(err)
		}
		defer k.check(t)
		if got := l.Settings().Upstream.Bandwidth; got != 20*Mbit {
			t.Errorf("after Run, bandwidth %v, want 20Mbit/s", got)
		}
		var errs []error
		for i, w := range []Rate{20 * Mbit, 5 * Mbit, 20 * Mbit} {
			from := start.Add(time.Duration(i)*phase + settle)
			to := start.Add(time.Duration(i+1)*phase - 20*time.Millisecond)
			r := k.rate(from, to)
			t.Logf("phase %d (%v): %.3f Mbit/s over [+%v, +%v] (%+.2f%%)", i, w, r/1e6,
				from.Sub(start), to.Sub(start), 100*(r/float64(w)-1))
			if !within(r, float64(w), 0.05) {
				errs = append(errs, fmt.Errorf("phase %d: %.3f Mbit/s, want %v ±5%%", i, r/1e6, w))
			}
		}
		// The first 90 ms after the drop to 5 Mbit/s already run at 5.
		r := k.rate(start.Add(phase+10*time.Millisecond), start.Add(phase+settle))
		t.Logf("first 90ms after 20→5: %.3f Mbit/s", r/1e6)
		if r > 1.2*float64(5*Mbit) {
			errs = append(errs, fmt.Errorf("rate right after 20→5 is %.3f Mbit/s: change not yet effective", r/1e6))
		}
		return errors.Join(errs...)
	})
}

// TestScheduleSteps checks, without timing a transfer, that Run applies
// each step in order, none before its At, and leaves the last one in force.
func TestScheduleSteps(t *testing.T) {
	var mu sync.Mutex
	var applied []string
	h := &recordHandler{record: func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "settings" {
				mu.Lock()
				applied = append(applied, a.Value.String())
				mu.Unlock()
			}
			return true
		})
	}}
	l := newLink(t, "127.0.0.1:1", Settings{}, func(o *Options) { o.Logger = slog.New(h) })
	steps := []Settings{
		{Upstream: Shape{Bandwidth: 20 * Mbit}},
		{Upstream: Shape{Bandwidth: 5 * Mbit}},
		{Upstream: Shape{Bandwidth: 20 * Mbit}, Downstream: Shape{Latency: time.Millisecond}},
	}
	sc := Schedule{{At: 0, Settings: steps[0]}, {At: 20 * time.Millisecond, Settings: steps[1]}, {At: 40 * time.Millisecond, Settings: steps[2]}}
	start := time.Now()
	if err := l.Run(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 40*time.Millisecond {
		t.Errorf("Run returned after %v, before its last step's At", el) // never excused: early
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{Settings{}.String()} // New's
	for _, st := range steps {
		want = append(want, st.String())
	}
	if !slices.Equal(applied, want) {
		t.Errorf("applied %q, want %q", applied, want)
	}
	if got := l.Settings(); got != steps[2] {
		t.Errorf("after Run: %v, want %v", got, steps[2])
	}
}

// recordHandler is a slog.Handler that passes every record to record.
type recordHandler struct{ record func(slog.Record) }

func (h *recordHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error { h.record(r); return nil }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h *recordHandler) WithGroup(string) slog.Handler                 { return h }

func TestRunCancelAndClose(t *testing.T) {
	l, err := New(Options{Upstream: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	sc := Schedule{{At: 0, Settings: Symmetric(Shape{Latency: time.Millisecond})}, {At: time.Hour}}
	if err := l.Run(ctx, sc); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v, want deadline exceeded", err)
	}
	if got := l.Settings().Upstream.Latency; got != time.Millisecond {
		t.Errorf("first step not applied: latency %v", got)
	}
	go func() { time.Sleep(20 * time.Millisecond); l.Close() }()
	if err := l.Run(context.Background(), sc); !errors.Is(err, ErrClosed) {
		t.Errorf("Run on closing link = %v, want ErrClosed", err)
	}
	if err := l.Set(Settings{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
	if err := l.SetDown(true); !errors.Is(err, ErrClosed) {
		t.Errorf("SetDown after Close = %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestOutageBlackhole stalls a transfer and checks it resumes with every
// byte, in order.
func TestOutageBlackhole(t *testing.T) {
	const lat = 5 * time.Millisecond
	measure(t, func(t *testing.T) error {
		k := startSink(t)
		l := newLink(t, k.Addr(), Symmetric(Shape{Bandwidth: 10 * Mbit, Latency: lat}))
		c := dial(t, l.Addr())
		_ = c.(*net.TCPConn).SetWriteBuffer(16 << 10) // so the drain after is short
		ctx, cancel := context.WithCancel(context.Background())
		written := make(chan int64, 1)
		go func() { written <- pump(ctx, c, nil) }()

		time.Sleep(300 * time.Millisecond)
		if err := l.SetDown(true); err != nil {
			t.Fatal(err)
		}
		downAt := time.Now()
		if s := l.Stats(); s.Settings.Outage != OutageBlackhole {
			t.Fatalf("outage %v, want blackhole", s.Settings.Outage)
		}
		time.Sleep(dur(500*time.Millisecond, 300*time.Millisecond))
		if s := l.Stats(); s.Upstream.InFlight == 0 || s.Conns != 1 {
			t.Errorf("during the outage: in flight %d, conns %d; want held bytes and the connection open", s.Upstream.InFlight, s.Conns)
		}
		atUp := k.totalBytes()
		if err := l.SetDown(false); err != nil {
			t.Fatal(err)
		}
		upAt := time.Now()
		time.Sleep(300 * time.Millisecond)
		cancel()
		w := <-written
		k.waitEOFs(t, 1, 20*time.Second)
		defer k.check(t)

		// No loss, whatever the timing.
		if got := k.totalBytes(); got != w || got <= atUp {
			t.Errorf("received %d bytes, wrote %d (at recovery %d): data lost", got, w, atUp)
		}
		if s := l.Stats(); s.Upstream.Dropped != 0 || s.Upstream.Bytes != w {
			t.Errorf("stats: dropped %d, forwarded %d; want 0 and %d", s.Upstream.Dropped, s.Upstream.Bytes, w)
		}
		during := k.bytesAt(upAt) - k.bytesAt(downAt.Add(2*time.Millisecond))
		resumed := k.firstAfter(upAt)
		t.Logf("bytes delivered before the outage %d, during %d; resumed %v after recovery; %d bytes written, %d received",
			k.bytesAt(downAt), during, resumed.Sub(upAt), w, k.totalBytes())
		if during != 0 {
			return fmt.Errorf("%d bytes delivered during a blackhole", during)
		}
		if resumed.IsZero() || resumed.Sub(upAt) < lat || resumed.Sub(upAt) > 100*time.Millisecond {
			return fmt.Errorf("first byte %v after recovery, want in [%v, 100ms]", resumed.Sub(upAt), lat)
		}
		return nil
	})
}

// TestOutageReset checks that a reset outage closes connections, refuses
// new ones, and that the link accepts again afterwards.
func TestOutageReset(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Symmetric(Shape{Latency: time.Millisecond}), func(o *Options) {
		o.OutageMode = OutageReset
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	c1 := dial(t, l.Addr())
	ping(t, c1, []byte("before"))
	if err := l.SetDown(true); err != nil {
		t.Fatal(err)
	}
	_ = c1.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("open connection during reset outage: read err %v, want reset or EOF", err)
	} else {
		t.Logf("open connection: %v", err)
	}
	c2, err := net.Dial("tcp", l.Addr())
	if err == nil {
		_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c2.Read(make([]byte, 1))
		c2.Close()
		if err == nil || isTimeout(err) {
			t.Errorf("new connection during reset outage: read err %v, want reset or EOF", err)
		}
	}
	t.Logf("new connection: %v", err)
	// The link forgets a reset connection on its own goroutine: give the
	// counters a moment under load.
	s := l.Stats()
	for deadline := time.Now().Add(10 * time.Second); (s.Resets != 1 || s.Refused != 1 || s.Conns != 0) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		s = l.Stats()
	}
	if s.Resets != 1 || s.Refused != 1 || s.Conns != 0 {
		t.Errorf("stats: resets %d refused %d conns %d, want 1 1 0", s.Resets, s.Refused, s.Conns)
	}
	if err := l.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c3 := dial(t, l.Addr())
	ping(t, c3, []byte("after"))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestQueueBackpressure checks that a full bottleneck queue stops reading,
// so the sender's writes advance only at the link rate.
func TestQueueBackpressure(t *testing.T) {
	const rate, queue, window = 2 * Mbit, 32 << 10, 256 << 10
	k := startSink(t)
	l := newLink(t, k.Addr(), Settings{Upstream: Shape{Bandwidth: rate, QueueBytes: queue}},
		func(o *Options) { o.Window = window })
	c := dial(t, l.Addr())
	// Keep the sender's own kernel buffer small, so its writes show the
	// link's backpressure promptly.
	_ = c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	var written atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pump(ctx, c, &written) }()
	var maxQueued, maxInFlight int64
	sample := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			s := l.Stats()
			maxQueued = max(maxQueued, s.Upstream.Queued)
			maxInFlight = max(maxInFlight, s.Upstream.InFlight)
		}
	}
	sample(500 * time.Millisecond) // buffers fill
	w0, r0 := written.Load(), k.totalBytes()
	from := time.Now()
	sample(time.Second)
	w1, r1 := written.Load(), k.totalBytes()
	// On a busy machine the sampling second runs long; the link's rate
	// bounds the writes per second actually elapsed, however long that is.
	elapsed := time.Since(from)
	cancel()
	<-done
	t.Logf("over 1s at %v: sender wrote %d B, sink got %d B; max queued %d B (limit %d), max in flight %d B (window %d)",
		rate, w1-w0, r1-r0, maxQueued, queue, maxInFlight, window)
	if maxQueued > queue+minChunk {
		t.Errorf("queued %d B, limit %d", maxQueued, queue)
	}
	if maxInFlight > window {
		t.Errorf("in flight %d B, window %d", maxInFlight, window)
	}
	if perSec := float64(rate) / 8; float64(w1-w0) > 1.5*perSec*elapsed.Seconds() {
		t.Errorf("sender wrote %d B in %v through a %v link: writes not blocked", w1-w0, elapsed, rate)
	}
	k.check(t)
}

// TestUnshapedFastPath moves data through an unshaped link and checks it
// is intact, and fast (over 100 MB/s without the race detector) under
// timingEnv.
func TestUnshapedFastPath(t *testing.T) {
	k := startSink(t)
	l := newLink(t, k.Addr(), Settings{})
	c := dial(t, l.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), dur(500*time.Millisecond, 200*time.Millisecond))
	defer cancel()
	start := time.Now()
	w := pump(ctx, c, nil)
	k.waitEOFs(t, 1, 20*time.Second)
	el := time.Since(start)
	t.Logf("unshaped: %d MB in %v = %.0f MB/s (race detector: %v)", w>>20, el.Round(time.Millisecond), float64(w)/el.Seconds()/1e6, raceEnabled)
	if k.totalBytes() != w {
		t.Errorf("received %d, wrote %d", k.totalBytes(), w)
	}
	if timingChecked() && !raceEnabled && float64(w)/el.Seconds() < 100e6 {
		t.Errorf("unshaped throughput %.0f MB/s, want > 100", float64(w)/el.Seconds()/1e6)
	}
	k.check(t)
}

// TestCloseNoLeak closes a link with busy, delayed connections and checks
// every goroutine is gone.
func TestCloseNoLeak(t *testing.T) {
	e := startEcho(t)
	before := runtime.NumGoroutine()
	l, err := New(Options{Upstream: e.Addr(), Settings: Symmetric(Shape{Bandwidth: 10 * Mbit, Latency: 20 * time.Millisecond, Jitter: 5 * time.Millisecond})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		c, err := net.Dial("tcp", l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() { defer wg.Done(); pump(ctx, c, nil) }()
		go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, c); c.Close() }()
	}
	for deadline := time.Now().Add(10 * time.Second); l.Stats().Conns != 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := l.Stats().Conns; n != 3 {
		t.Errorf("conns %d, want 3", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	if _, err := net.Dial("tcp", l.Addr()); err == nil {
		t.Error("dial after Close succeeded")
	}
	if n := l.Stats().Conns; n != 0 {
		t.Errorf("conns after Close %d", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf)
	}
}

// TestHalfClose checks that a sender's close travels through the link
// after its data.
func TestHalfClose(t *testing.T) {
	e := startEcho(t)
	l := newLink(t, e.Addr(), Symmetric(Shape{Bandwidth: 5 * Mbit, Latency: 10 * time.Millisecond}))
	c := dial(t, l.Addr())
	msg := bytes.Repeat([]byte("sluice "), 10000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(msg))
	}
	deadline := time.Now().Add(10 * time.Second) // a guard, not a measurement
	for l.Stats().Conns != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s := l.Stats()
	if s.Conns != 0 || s.Upstream.Bytes != int64(len(msg)) || s.Downstream.Bytes != int64(len(msg)) || s.Upstream.InFlight != 0 {
		t.Errorf("stats after close: %+v", s)
	}
}

func TestDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	l := newLink(t, addr, Settings{})
	// The reset may beat the connect's return on loopback.
	if c, err := net.Dial("tcp", l.Addr()); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("read = %v, want closed", err)
		}
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second) // a guard, not a measurement
	for l.Stats().DialErrors == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := l.Stats(); s.DialErrors != 1 {
		t.Errorf("dial errors %d, want 1", s.DialErrors)
	}
}

func BenchmarkUnshaped(b *testing.B) { benchmarkThrough(b, Settings{}) }

func BenchmarkLatencyOnly(b *testing.B) {
	benchmarkThrough(b, Symmetric(Shape{Latency: time.Millisecond}))
}

func BenchmarkShaped1Gbit(b *testing.B) {
	benchmarkThrough(b, Symmetric(Shape{Bandwidth: Gbit}))
}

func benchmarkThrough(b *testing.B, s Settings) {
	k := startServer(b, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	l := newLink(b, k.Addr(), s)
	c := dial(b, l.Addr())
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
