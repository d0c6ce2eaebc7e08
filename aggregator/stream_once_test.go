package aggregator

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// TestOnceLate steps the decision whether an attempt is late, and the
// lower bound of the batch's first attempt it looks from, over fixed
// instants: W = 10m, so H = 9m40s.
func TestOnceLate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	o := Options{Stream: "S", Subject: "s", DuplicateWindow: 10 * time.Minute, AckTimeout: time.Second}
	g := newOnceGuard(context.Background(), &o, nil, "sp", "c", []spool.Range{{First: 1, Last: 10}}, func() time.Time { return now })
	claimed := &flight{batch: batch{Batch: wire.Batch{First: 1, Last: 10}}}
	fresh := &flight{batch: batch{Batch: wire.Batch{First: 11, Last: 20}}}
	for _, c := range []struct {
		name                  string
		f                     *flight
		at, oldest, firstSent time.Duration // after t0; oldest/firstSent < 0: unset
		wantLate              bool
		wantBound             time.Duration // after t0; < 0: zero
	}{
		{"claimed, young events", claimed, 10 * time.Minute, 5 * time.Minute, 10 * time.Minute, false, 0},
		{"claimed, events at the horizon", claimed, 10 * time.Minute, 20 * time.Second, 10 * time.Minute, false, 0},
		{"claimed, events past the horizon", claimed, 10 * time.Minute, 19 * time.Second, 10 * time.Minute, true, 19 * time.Second},
		{"claimed, no oldest", claimed, time.Minute, -1, time.Minute, true, -1},
		{"claimed, young events, sent here long ago", claimed, 20 * time.Minute, 19 * time.Minute, 10 * time.Minute, true, 19 * time.Minute},
		{"new, just sent", fresh, 10 * time.Minute, 0, 10 * time.Minute, false, 0},
		{"new, old events, sent now", fresh, 10 * time.Minute, 0, 10*time.Minute - time.Second, false, 0},
		{"new, at the horizon", fresh, 10 * time.Minute, 0, 20 * time.Second, false, 0},
		{"new, past the horizon", fresh, 10 * time.Minute, 0, 19 * time.Second, true, 19 * time.Second},
	} {
		now = t0.Add(c.at)
		c.f.Oldest, c.f.firstSent = time.Time{}, time.Time{}
		if c.oldest >= 0 {
			c.f.Oldest = t0.Add(c.oldest)
		}
		if c.firstSent >= 0 {
			c.f.firstSent = t0.Add(c.firstSent)
		}
		bound, late := g.late(c.f)
		want := time.Time{}
		if c.wantBound >= 0 && c.wantLate {
			want = t0.Add(c.wantBound)
		}
		if late != c.wantLate || (late && !bound.Equal(want)) {
			t.Errorf("%s: late %v bound %v, want %v %v", c.name, late, bound, c.wantLate, want)
		}
	}
}

// TestOnceRead reads a subject shared with other spools and classes and
// picks out the guard's own ids; a conditional publish against a stale
// last sequence is refused and recognized as such.
func TestOnceRead(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	o := Options{Stream: "S", Subject: "s", DuplicateWindow: time.Second, AckTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	g := newOnceGuard(ctx, &o, js, "sp", "c", nil, time.Now)
	g.mu.Lock()
	defer g.mu.Unlock()
	if last, err := g.read(ctx, time.Time{}); err != nil || last != 0 {
		t.Fatalf("empty subject: %d %v", last, err)
	}
	pub := func(subj, id string) uint64 {
		t.Helper()
		m := nats.NewMsg(subj)
		m.Header.Set(wire.HdrMsgID, id)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	a := pub("s.c", wire.MsgID("sp", "c", 1, 5))
	pub("s.c", wire.MsgID("other", "c", 1, 5))
	pub("s.d", wire.MsgID("sp", "d", 1, 5))
	for i := range 300 { // more than one fetch
		pub("s.c", wire.MsgID("other", "c", uint64(10+i), uint64(10+i)))
	}
	b := pub("s.c", wire.MsgID("sp", "c", 6, 9))
	last, err := g.read(ctx, time.Time{})
	if err != nil || last != b {
		t.Fatalf("read: last %d %v, want %d", last, err, b)
	}
	if len(g.ids) != 2 || g.ids[wire.MsgID("sp", "c", 1, 5)] != a || g.ids[wire.MsgID("sp", "c", 6, 9)] != b {
		t.Fatalf("ids %v", g.ids)
	}
	// Read on from where it stopped.
	c := pub("s.c", wire.MsgID("sp", "c", 10, 12))
	if last, err := g.read(ctx, time.Time{}); err != nil || last != c || g.ids[wire.MsgID("sp", "c", 10, 12)] != c {
		t.Fatalf("read on: %d %v %v", last, err, g.ids)
	}
	// Stale: the subject moved on since b.
	m := nats.NewMsg("s.c")
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "1")
	if _, err := js.PublishMsg(ctx, m); !wrongLastSequence(err) {
		t.Fatalf("conditional publish against a stale sequence: %v", err)
	}
}

// TestOncePublishLate: a late attempt stores a batch the stream lacks,
// once; the same batch's next late attempt, past the stream's 1 s
// duplicate window (its ack lost, say), finds it and stores nothing.
func TestOncePublishLate(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Duplicates: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Stream: "S", Subject: "s", DuplicateWindow: time.Second, AckTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	g := newOnceGuard(ctx, &o, js, "sp", "c", nil, time.Now)
	f := &flight{batch: batch{Batch: wire.Batch{Spool: "sp", Class: "c", First: 1, Last: 3, Count: 3}}}
	f.msg = &nats.Msg{Subject: "s.c", Header: f.Header(), Data: []byte("body")}
	sent := time.Now()
	ack, err := g.publishLate(f, sent)
	if err != nil || ack.Duplicate || ack.Sequence != 1 {
		t.Fatalf("first: %+v %v", ack, err)
	}
	if f.msg.Header.Get(jetstream.ExpectedLastSubjSeqHeader) != "" {
		t.Fatal("the condition stayed on the message")
	}
	time.Sleep(2 * time.Second)                             // past the window
	g = newOnceGuard(ctx, &o, js, "sp", "c", nil, time.Now) // a fresh read, as after a restart
	ack, err = g.publishLate(f, sent)
	if err != nil || !ack.Duplicate || ack.Sequence != 1 {
		t.Fatalf("again: %+v %v", ack, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages, want 1", info.State.Msgs)
	}
	// The control: sent plainly, past the window, it is stored again.
	if ack, err := js.PublishMsg(ctx, f.msg); err != nil || ack.Duplicate {
		t.Fatalf("plain: %+v %v: the window had not passed", ack, err)
	}
}

// BenchmarkOnceRead measures a late attempt's read of a class subject
// holding 10000 batches of other spools (headers of 200 bytes, bodies of
// 4 KiB, not read), from scratch: the worst case of the lookup's first
// read after an outage.
func BenchmarkOnceRead(b *testing.B) {
	srv := natstest.Start(b)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<14))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		b.Fatal(err)
	}
	const n = 10000
	body := make([]byte, 4096)
	for i := range n {
		bt := wire.Batch{Node: "other", Spool: "otherspool", Class: "c", First: uint64(i + 1), Last: uint64(i + 1), Count: 1}
		m := &nats.Msg{Subject: "s.c", Header: bt.Header(), Data: body}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	o := Options{Stream: "S", Subject: "s", DuplicateWindow: time.Minute, AckTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		g := newOnceGuard(ctx, &o, js, "sp", "c", nil, time.Now)
		g.mu.Lock()
		last, err := g.read(ctx, time.Time{})
		g.mu.Unlock()
		if err != nil || last != n {
			b.Fatalf("read: %d %v", last, err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
