package aggregator

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/shaper"
	"github.com/sluicehq/sluice/spool"
)

// expirySpool opens a spool with class "c" holding three events appended
// before two newer ones, and returns it with the instant that makes the
// first three older than maxAge and the other two not.
func expirySpool(t *testing.T, maxAge time.Duration) (*spool.Spool, time.Time) {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), spool.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	ctx := context.Background()
	if _, err := sp.Append(ctx, "c", [][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`), []byte(`{"n":3}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Append(ctx, "c", [][]byte{[]byte(`{"n":4}`), []byte(`{"n":5}`)}); err != nil {
		t.Fatal(err)
	}
	var times []int64
	if _, err := sp.Read("c", 1, 0, 0, func(e spool.Entry) error { times = append(times, e.Time); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(times) != 5 || times[3] <= times[2] {
		t.Fatalf("spool holds events appended at %v, want 3 then 2 later", times)
	}
	// Events appended before now-maxAge are old: the newer group's time.
	return sp, time.Unix(0, times[3]).Add(maxAge)
}

func testBatcher(t *testing.T, sp *spool.Spool, c priority.Class, now time.Time) (*batcher, *laneStats) {
	t.Helper()
	cfg, err := newLaneConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	var p atomic.Pointer[laneConfig]
	p.Store(cfg)
	stats := new(laneStats)
	bt, err := newBatcher(sp, c.Name, "edge", testPolicy(&c, &p), &p, stats,
		true, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bt.close)
	if claims := bt.resume(); len(claims) != 0 {
		t.Fatalf("fresh spool: claims %v", claims)
	}
	return bt, stats
}

// ndjson compresses b, if it is not yet, and decompresses its body.
func ndjson(t *testing.T, bt *batcher, b *batch) string {
	t.Helper()
	if b.body == nil {
		if err := bt.compressOwn(b); err != nil {
			t.Fatal(err)
		}
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(*b.body, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestBatcherDemote: at an instant where the first three events are past
// the max age, the newer two are cut first and the old three are set
// aside, then cut into a batch of their own labelled stale, the cursor
// past all five; neither is claimed until claimAll claims both in one
// commit.
func TestBatcherDemote(t *testing.T) {
	const maxAge = time.Minute
	sp, now := expirySpool(t, maxAge)
	bt, _ := testBatcher(t, sp, priority.Class{Name: "c", MaxAge: maxAge}, now)

	var b batch
	ok, err := bt.next(&b, false, priority.Action{}, 0)
	if err != nil || !ok {
		t.Fatalf("newer batch: ok %v err %v", ok, err)
	}
	if b.First != 4 || b.Last != 5 || b.Count != 2 || b.stale != 0 {
		t.Errorf("newer batch: range %d-%d, %d events, stale %v; want 4-5, 2, 0", b.First, b.Last, b.Count, b.stale)
	}
	if got := ndjson(t, bt, &b); got != "{\"n\":4}\n{\"n\":5}\n" {
		t.Errorf("newer batch body %q", got)
	}
	if !bt.hasStale() || bt.unsent() != 0 {
		t.Fatalf("after the newer batch: stale %v (want [1-3]), unsent %d", bt.stale, bt.unsent())
	}
	bt.putBody(b.body)

	ok, err = bt.next(&b, true, priority.Action{}, 0)
	if err != nil || !ok {
		t.Fatalf("stale batch: ok %v err %v", ok, err)
	}
	if b.First != 1 || b.Last != 3 || b.Count != 3 || b.stale != maxAge {
		t.Errorf("stale batch: range %d-%d, %d events, stale %v; want 1-3, 3, %v", b.First, b.Last, b.Count, b.stale, maxAge)
	}
	if bt.hasStale() {
		t.Errorf("set-aside ranges left: %v", bt.stale)
	}
	if len(sp.Claims("c")) != 0 {
		t.Errorf("claims %v before claimAll, want none: the pipeline's claimer claims", sp.Claims("c"))
	}
	if !bt.claimAll(context.Background(), time.Millisecond, time.Millisecond, []spool.Range{{First: 4, Last: 5}, {First: 1, Last: 3}}) {
		t.Fatal("claimAll failed")
	}
	claims := sp.Claims("c")
	if len(claims) != 2 || claims[0] != (spool.Range{First: 1, Last: 3}) || claims[1] != (spool.Range{First: 4, Last: 5}) {
		t.Errorf("claims %v, want [1-3 4-5]", claims)
	}
}

// TestBatcherDrop: with ExpireDrop the old events are left out and
// counted, the batch covers all five seqs; later, with every event past
// the max age, nothing is cut and the range is acknowledged.
func TestBatcherDrop(t *testing.T) {
	const maxAge = time.Minute
	sp, now := expirySpool(t, maxAge)
	c := priority.Class{Name: "c", MaxAge: maxAge, Expire: priority.ExpireDrop}
	bt, stats := testBatcher(t, sp, c, now)
	var b batch
	ok, err := bt.next(&b, false, priority.Action{}, 0)
	if err != nil || !ok {
		t.Fatalf("ok %v err %v", ok, err)
	}
	if b.First != 1 || b.Last != 5 || b.Count != 2 || b.stale != 0 || bt.hasStale() {
		t.Errorf("range %d-%d, %d events, stale %v, set aside %v; want 1-5, 2, 0, none", b.First, b.Last, b.Count, b.stale, bt.stale)
	}
	if got := stats.expired.Load(); got != 3 {
		t.Errorf("expired %d, want 3", got)
	}

	sp2, now2 := expirySpool(t, maxAge)
	bt2, stats2 := testBatcher(t, sp2, c, now2.Add(time.Hour))
	ok, err = bt2.next(&b, false, priority.Action{}, 0)
	if err != nil || ok {
		t.Fatalf("all expired: ok %v err %v, want nothing cut", ok, err)
	}
	if got := sp2.Acked("c"); got != 5 || stats2.expired.Load() != 5 {
		t.Errorf("all expired: acked to %d, expired %d; want 5, 5", got, stats2.expired.Load())
	}
}

// TestBatcherExact: a claimed range is cut again as the batch it was,
// whatever the clock says now.
func TestBatcherExact(t *testing.T) {
	const maxAge = time.Minute
	sp, now := expirySpool(t, maxAge)
	bt, _ := testBatcher(t, sp, priority.Class{Name: "c", MaxAge: maxAge}, now)
	var b batch
	ok, err := bt.cutExact(&b, spool.Range{First: 2, Last: 4}, priority.Action{}, 0)
	if err != nil || !ok {
		t.Fatalf("ok %v err %v", ok, err)
	}
	if b.First != 2 || b.Last != 4 || b.Count != 3 || b.stale != maxAge {
		t.Errorf("range %d-%d, %d events, stale %v; want 2-4, 3, %v", b.First, b.Last, b.Count, b.stale, maxAge)
	}
	if !bytes.Contains([]byte(ndjson(t, bt, &b)), []byte(`{"n":4}`)) {
		t.Errorf("body %q lacks event 4", ndjson(t, bt, &b))
	}
}

// testPolicy is the compression policy of class c (config cfg) with no
// link estimate, as unshaped: the class's lowest level, batches of its
// MaxBytes.
func testPolicy(c *priority.Class, cfg *atomic.Pointer[laneConfig]) *compressPolicy {
	return newCompressPolicy(c, 1, func() (int64, bool, bool) { return 0, false, false },
		func() int { return cfg.Load().maxBytes }, func() float64 { return 1 }, time.Now, slog.New(slog.DiscardHandler))
}

// TestCompressionLevelHold: after a change the policy keeps its level for
// levelHold, whatever the link says meanwhile, and then follows it again.
func TestCompressionLevelHold(t *testing.T) {
	c := priority.Defaults(0)[1] // ingest: auto, fastest..better
	var target int64
	now := time.Unix(0, 0)
	p := newCompressPolicy(&c, 1, func() (int64, bool, bool) { return target, true, true },
		func() int { return 512 << 10 }, func() float64 { return 0.1 }, func() time.Time { return now },
		slog.New(slog.DiscardHandler))
	for _, step := range []struct {
		at     time.Duration
		target int64
		want   shaper.CompressLevel
	}{
		{0, 1e6, shaper.CompressBetter},                       // a slow link: the densest level
		{100 * time.Millisecond, 1e12, shaper.CompressBetter}, // the cores bound now, but the level is held
		{levelHold - time.Nanosecond, 1e12, shaper.CompressBetter},
		{levelHold, 1e12, shaper.CompressFastest}, // held long enough: it follows
		{levelHold + time.Millisecond, 1e6, shaper.CompressFastest},
		{2 * levelHold, 1e6, shaper.CompressBetter},
	} {
		now, target = time.Unix(0, 0).Add(step.at), step.target
		p.batchBytes()
		if got := p.current(); got != step.want {
			t.Errorf("at %v, target %d B/s: level %v, want %v", step.at, step.target, got, step.want)
		}
	}
}
