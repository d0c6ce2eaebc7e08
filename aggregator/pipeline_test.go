package aggregator

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

// pipelineSpool opens a spool holding n events of class "c" and returns it
// with the events as NDJSON lines, by seq (index 0 unused). Event sizes
// vary from a few bytes to a few KiB of random letters, so that batches
// take the workers very different times to compress and finish out of
// order.
func pipelineSpool(t *testing.T, n int) (*spool.Spool, []string) {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), spool.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	r := rand.New(rand.NewPCG(1, 2))
	lines := []string{""}
	var evs [][]byte
	for i := 1; i <= n; i++ {
		pad := make([]byte, r.IntN(4096))
		for j := range pad {
			pad[j] = byte('a' + r.IntN(26))
		}
		ev := fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)
		lines = append(lines, ev)
		evs = append(evs, []byte(ev))
	}
	if _, err := sp.Append(context.Background(), "c", evs); err != nil {
		t.Fatal(err)
	}
	return sp, lines
}

// testLane is a lane of class "c" (batches of at most maxEvents) on sp,
// unshaped, whose pipeline has the given workers and sends with send,
// draining from the start: its shipper cuts everything at once and stops
// when nothing is left. run starts its shipper, workers and sequencer and
// waits for them.
func testLane(t *testing.T, sp *spool.Spool, maxEvents, workers int, send func(context.Context, *flight) bool) (l *lane, run func(context.Context)) {
	t.Helper()
	c := priority.Class{Name: "c", Batch: priority.Batch{MaxEvents: maxEvents}}
	bt, _ := testBatcher(t, sp, c, time.Now())
	bt.expire = false
	cfg, err := newLaneConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	drain := make(chan struct{})
	close(drain)
	l = &lane{
		name: "c", drv: testDriver(t, &fakeNode{}, true), bt: bt,
		wake: make(chan struct{}, 1), drain: drain, done: make(chan struct{}),
		retryMin: time.Millisecond, retryMax: 10 * time.Millisecond,
	}
	l.cfg.Store(cfg)
	l.pl = newPipeline(bt, send, workers, l.retryMin, l.retryMax)
	return l, func(ctx context.Context) {
		var wg sync.WaitGroup
		for range workers {
			enc, err := bt.newEncoders()
			if err != nil {
				t.Error(err)
				return
			}
			wg.Go(func() { l.pl.compressor(enc) })
		}
		wg.Go(func() { l.pl.sequence(ctx) })
		wg.Go(func() { l.pl.claimer(ctx) })
		l.ship(ctx)
		wg.Wait()
	}
}

// sent records what a test's send was handed, checking each body against
// the spooled events of its range.
type sent struct {
	t      *testing.T
	lines  []string
	dec    *zstd.Decoder
	mu     sync.Mutex
	ranges []spool.Range
}

func newSent(t *testing.T, lines []string) *sent {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	return &sent{t: t, lines: lines, dec: dec}
}

func (s *sent) record(f *flight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.dec.DecodeAll(*f.body, nil)
	if err != nil {
		s.t.Errorf("batch %d-%d: %v", f.First, f.Last, err)
		return
	}
	want := strings.Join(s.lines[f.First:f.Last+1], "\n") + "\n"
	if string(out) != want || f.Count != int(f.rng().Len()) {
		s.t.Errorf("batch %d-%d (%d events): body is not its range's events", f.First, f.Last, f.Count)
	}
	s.ranges = append(s.ranges, f.rng())
}

// inOrder checks that the ranges sent tile 1..n in ascending order.
func (s *sent) inOrder(n uint64) {
	s.t.Helper()
	next := uint64(1)
	for i, r := range s.ranges {
		if r.First != next {
			s.t.Fatalf("batch %d sent is %d-%d, want it to start at %d (sent: %v)", i, r.First, r.Last, next, s.ranges)
		}
		next = r.Last + 1
	}
	if next != n+1 {
		s.t.Fatalf("sent up to %d, want %d", next-1, n)
	}
}

// TestPipelineOrder: with four workers compressing batches of very
// different sizes, the sequencer hands them to send in the order their
// ranges were claimed, each with its own events, and never more than
// the pipeline's depth of batches are cut and not yet sent.
func TestPipelineOrder(t *testing.T) {
	const n, workers = 1200, 4
	sp, lines := pipelineSpool(t, n)
	s := newSent(t, lines)
	var l *lane
	l, run := testLane(t, sp, 7, workers, func(_ context.Context, f *flight) bool {
		if busy := l.pl.busy.Load(); busy > int64(l.pl.depth) {
			t.Errorf("%d batches cut and not sent, want at most %d", busy, l.pl.depth)
		}
		s.record(f)
		l.bt.putBody(f.body)
		return true
	})
	run(context.Background())
	s.inOrder(n)
	if len(s.ranges) < 100 {
		t.Fatalf("only %d batches", len(s.ranges))
	}
	if p := l.pl.peak.Load(); p > int64(l.pl.depth) {
		t.Errorf("peak %d batches in the pipeline, want at most %d", p, l.pl.depth)
	}
	claims := sp.Claims("c")
	if len(claims) != len(s.ranges) {
		t.Errorf("%d claims, %d batches sent: every batch is claimed before it is sent", len(claims), len(s.ranges))
	}
}

// TestPipelineBounded: while the first batch waits in send, the shipper
// cuts (and the claimer claims) exactly the pipeline's depth of batches
// and then waits for room; it reads no further. Once send goes on, the
// rest follows in order.
func TestPipelineBounded(t *testing.T) {
	const n, workers = 300, 3
	sp, lines := pipelineSpool(t, n)
	s := newSent(t, lines)
	gate := make(chan struct{})
	var l *lane
	l, run := testLane(t, sp, 5, workers, func(_ context.Context, f *flight) bool {
		<-gate
		s.record(f)
		l.bt.putBody(f.body)
		return true
	})
	done := make(chan struct{})
	go func() { defer close(done); run(context.Background()) }()

	// Wait until the shipper has had to wait for a slot.
	deadline := time.Now().Add(time.Minute)
	for l.pl.blocked.Load() == 0 {
		if time.Now().After(deadline) {
			close(gate)
			t.Fatal("the shipper never waited for room in the pipeline")
		}
		time.Sleep(time.Millisecond)
	}
	// The claimer claims what the shipper cut without holding it up.
	depth := l.pl.depth
	if depth != 2*(workers+1) {
		t.Errorf("depth %d with %d workers, want %d", depth, workers, 2*(workers+1))
	}
	for len(sp.Claims("c")) < depth && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if claims := sp.Claims("c"); len(claims) != depth {
		t.Errorf("with send held: %d batches claimed, want %d (one in send, the rest compressed or compressing)", len(claims), depth)
	}
	if got := l.bt.cursor; got != uint64(depth*5+1) {
		t.Errorf("with send held: cursor at %d, want %d", got, depth*5+1)
	}
	close(gate)
	<-done
	s.inOrder(n)
	if p := l.pl.peak.Load(); p != int64(depth) {
		t.Errorf("peak %d batches in the pipeline, want %d", p, depth)
	}
}

// TestPipelineStopLosesNothing: a send refused mid-stream (a deferred
// class while the node drains, or a hard stop) stops the pipeline with
// batches cut and compressing behind it; they and the refused one stay
// claimed, unacknowledged, and a batcher resuming the spool gets them back
// range for range, then the unread events: nothing is lost, nothing sent
// twice.
func TestPipelineStopLosesNothing(t *testing.T) {
	const n, workers = 400, 2
	sp, lines := pipelineSpool(t, n)
	s := newSent(t, lines)
	calls := 0
	var l *lane
	l, run := testLane(t, sp, 10, workers, func(_ context.Context, f *flight) bool {
		calls++
		if calls == 4 {
			return false
		}
		s.record(f)
		l.bt.putBody(f.body)
		sp.Ack("c", f.rng()) // as the publisher does on JetStream's ack
		return true
	})
	run(context.Background())
	if len(s.ranges) != 3 || calls != 4 {
		t.Fatalf("sent %d batches in %d calls, want 3 in 4", len(s.ranges), calls)
	}

	// A restart: the claimed ranges come back first, then the rest.
	bt, _ := testBatcher2(t, sp)
	claims := bt.resume()
	if len(claims) == 0 || claims[0].First != s.ranges[2].Last+1 {
		t.Fatalf("claims after the stop %v, want them to start after the sent %v", claims, s.ranges)
	}
	next := claims[0].First
	for _, c := range claims {
		if c.First != next {
			t.Fatalf("claims %v leave a gap at %d", claims, next)
		}
		next = c.Last + 1
	}
	if bt.cursor != next || bt.unsent() != n+1-next {
		t.Errorf("cursor %d, unsent %d; want %d, %d", bt.cursor, bt.unsent(), next, n+1-next)
	}
	if got, max := len(claims), 2*(workers+1); got > max {
		t.Errorf("%d claimed batches not sent, want at most %d", got, max)
	}
}

// testBatcher2 is a batcher of class "c" on sp that has not resumed.
func testBatcher2(t *testing.T, sp *spool.Spool) (*batcher, *laneStats) {
	t.Helper()
	cfg, err := newLaneConfig(priority.Class{Name: "c"})
	if err != nil {
		t.Fatal(err)
	}
	var p atomic.Pointer[laneConfig]
	p.Store(cfg)
	stats := new(laneStats)
	bt, err := newBatcher(sp, "c", "edge", testPolicy(&priority.Class{Name: "c"}, &p), &p, stats,
		false, time.Now, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bt.close)
	return bt, stats
}

// TestPipelineClaimsGrouped: while a claim commits, the shipper goes on
// cutting (no batch is sent unclaimed), and the claimer claims every batch
// cut meanwhile in one commit: with the first claim held, the next claim
// carries all the batches cut behind it.
func TestPipelineClaimsGrouped(t *testing.T) {
	const n, workers = 200, 3
	sp, lines := pipelineSpool(t, n)
	s := newSent(t, lines)
	var l *lane
	l, run := testLane(t, sp, 5, workers, func(_ context.Context, f *flight) bool {
		if claims := sp.Claims("c"); !slices.Contains(claims, f.rng()) {
			t.Errorf("batch %d-%d sent before its claim (claims %v)", f.First, f.Last, claims)
		}
		s.record(f)
		l.bt.putBody(f.body)
		return true
	})
	gate := make(chan struct{})
	var mu sync.Mutex
	var calls [][]spool.Range
	claim := l.pl.claim
	l.pl.claim = func(ctx context.Context, rs []spool.Range) bool {
		mu.Lock()
		calls = append(calls, slices.Clone(rs))
		first := len(calls) == 1
		mu.Unlock()
		if first {
			<-gate
		}
		return claim(ctx, rs)
	}
	done := make(chan struct{})
	go func() { defer close(done); run(context.Background()) }()
	deadline := time.Now().Add(time.Minute)
	for l.pl.blocked.Load() == 0 {
		if time.Now().After(deadline) {
			close(gate)
			t.Fatal("the shipper never filled the pipeline while the first claim was held")
		}
		time.Sleep(time.Millisecond)
	}
	if len(s.ranges) != 0 {
		t.Errorf("%d batches sent while the first claim was held", len(s.ranges))
	}
	close(gate)
	<-done
	s.inOrder(n)
	mu.Lock()
	defer mu.Unlock()
	// While the first claim was held, the shipper filled every slot
	// (depth batches: those of the first claim and those cut behind it);
	// the second claim carries all of the latter. (The first may already
	// carry several, or all: the shipper may cut before the claimer first
	// runs. The second may carry more: once the first is durable its batch
	// is sent, a slot frees and the shipper may cut again before the
	// claimer collects.)
	depth := l.pl.depth
	if len(calls) < 2 || len(calls[0]) < depth && len(calls[0])+len(calls[1]) < depth {
		t.Fatalf("claims: %v; want the second to carry every batch cut while the first was held (%d in all)", calls, depth)
	}
	var all []spool.Range
	for _, c := range calls {
		all = append(all, c...)
	}
	if !slices.Equal(all, s.ranges) {
		t.Errorf("claimed %v, sent %v: want each batch claimed once, in order", all, s.ranges)
	}
}

// TestPipelineClaimFailsUnsent: a claim that cannot be made (ctx ended
// while the spool failed) stops the pipeline: that batch and every later
// one are neither sent nor claimed; after a restart the batcher finds the
// claims made, and cuts the rest anew from its cursor, so every event goes
// exactly once.
func TestPipelineClaimFailsUnsent(t *testing.T) {
	const n, workers = 300, 2
	sp, lines := pipelineSpool(t, n)
	s := newSent(t, lines)
	var l *lane
	l, run := testLane(t, sp, 10, workers, func(_ context.Context, f *flight) bool {
		s.record(f)
		l.bt.putBody(f.body)
		sp.Ack("c", f.rng())
		return true
	})
	var calls atomic.Int64
	claim := l.pl.claim
	l.pl.claim = func(ctx context.Context, rs []spool.Range) bool {
		if calls.Add(1) == 3 {
			return false
		}
		return claim(ctx, rs)
	}
	run(context.Background())
	if calls.Load() != 3 {
		t.Errorf("%d claims after the failed one, want none", calls.Load()-3)
	}
	if len(s.ranges) == 0 {
		t.Fatal("nothing sent before the failed claim")
	}
	sentLast := s.ranges[len(s.ranges)-1].Last

	// A restart: the claims made and not acknowledged come back, then
	// everything else, unclaimed, is cut anew.
	bt, _ := testBatcher2(t, sp)
	claims := bt.resume()
	from := sentLast + 1
	for _, c := range claims {
		if c.First != from {
			t.Fatalf("claims %v after the sent %v: want them to follow it without a gap", claims, s.ranges)
		}
		from = c.Last + 1
	}
	if bt.hasStale() || bt.cursor != from || bt.unsent() != n+1-from {
		t.Errorf("cursor %d, unsent %d, set aside %v; want %d, %d, none", bt.cursor, bt.unsent(), bt.stale, from, n+1-from)
	}
	for _, c := range claims {
		var b batch
		if ok, err := bt.cutExact(&b, c, priority.Action{}, 0); err != nil || !ok {
			t.Fatalf("cut claim %v: %v %v", c, ok, err)
		}
		bt.release(&b)
	}
	for bt.unsent() > 0 {
		var b batch
		ok, err := bt.next(&b, false, priority.Action{}, 0)
		if err != nil || !ok {
			t.Fatalf("cut after restart: %v %v", ok, err)
		}
		if b.First != from {
			t.Fatalf("cut %d-%d after restart, want it to start at %d", b.First, b.Last, from)
		}
		from = b.Last + 1
		bt.release(&b)
	}
	if from != n+1 {
		t.Fatalf("after restart, cut up to %d, want %d", from-1, n)
	}
}
