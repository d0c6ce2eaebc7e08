package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/wire"
)

func TestNATSOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"sluice.>", "sluice.>", true},
		{"sluice.ingest", "sluice.>", true},
		{"sluice", "sluice.>", false}, // '>' needs at least one token
		{">", "sluice.>", true},
		{"*", "sluice.>", false},
		{"*.>", "sluice.>", true},
		{"*.ingest", "sluice.>", true},
		{"*.*.*", "sluice.>", true},
		{"events.>", "sluice.>", false},
		{"events.*", "events.a.b", false},
		{"events.*", "events.a", true},
		{"events.*.b", "events.a.*", true},
		{"events.*.b", "events.a.c", false},
		{"a.b", "a.b.c", false},
		{"a.b.>", "a.b", false},
		{"a.*", "*.b", true},
		{"sluicex.>", "sluice.>", false},
		{"a*.b", "a.b", false}, // '*' inside a token is a literal
	}
	for _, tt := range tests {
		if got := natsOverlap(tt.a, tt.b); got != tt.want {
			t.Errorf("natsOverlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := natsOverlap(tt.b, tt.a); got != tt.want {
			t.Errorf("natsOverlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestNATSParse(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		events   []string
		rejected []string
	}{
		{"one object", ` {"a":1} `, []string{`{"a":1}`}, nil},
		{"pretty object", "{\n  \"a\": [1,\n 2]\n}\n", []string{`{"a":[1,2]}`}, nil}, // compacted: an event is one line
		{"ndjson", "{\"a\":1}\n\n{\"b\":2}\r\n", []string{`{"a":1}`, `{"b":2}`}, nil},
		{"ndjson with a bad line", "{\"a\":1}\nnope\n{\"b\":2}", []string{`{"a":1}`, `{"b":2}`},
			[]string{"invalid JSON at byte 0: not an object: starts with 'n'"}},
		{"not json", "nope", nil, []string{"invalid JSON at byte 0: not an object: starts with 'n'"}},
		{"empty", " \n ", nil, []string{"empty message"}},
		{"too large", `{"a":"0123456789012345678901234567890123456789"}`, nil, []string{"event of 48 bytes, limit 40"}},
		{"pretty too large", "{\"a\":\n\"0123456789012345678901234567890123456789\"}", nil, []string{"event of 49 bytes, limit 40"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, rej := natsParse([]byte(tt.body), 40, nil)
			var got, gotRej []string
			for _, e := range evs {
				got = append(got, string(e))
			}
			for _, r := range rej {
				gotRej = append(gotRej, r.Error)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.events) || fmt.Sprint(gotRej) != fmt.Sprint(tt.rejected) {
				t.Errorf("got %q rejected %q, want %q rejected %q", got, gotRej, tt.events, tt.rejected)
			}
		})
	}
}

func TestNATSOptionsRefused(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	sink := &natsTestSink{}
	tests := []struct {
		name string
		opts NATSOptions
		want string
	}{
		{"no subscriptions", NATSOptions{}, "no subscriptions"},
		{"node's default upstream", NATSOptions{Subscriptions: []Subscription{{Subject: "sluice.ingest"}}}, `overlaps "sluice.>"`},
		{"full wildcard", NATSOptions{Subscriptions: []Subscription{{Subject: ">"}}}, `overlaps "sluice.>"`},
		{"wildcard first token", NATSOptions{Subscriptions: []Subscription{{Subject: "*.critical"}}}, `overlaps "sluice.>"`},
		{"custom upstream", NATSOptions{ExcludeSubjects: []string{"edge.up.>"}, Subscriptions: []Subscription{{Subject: "edge.*.x"}}}, `overlaps "edge.up.>"`},
		{"jetstream api", NATSOptions{ExcludeSubjects: []string{}, Subscriptions: []Subscription{{Subject: "$JS.API.>"}}}, "reserved"},
		{"inboxes", NATSOptions{Subscriptions: []Subscription{{Subject: "_INBOX.*"}}}, "reserved"},
		{"subscriptions overlap", NATSOptions{Subscriptions: []Subscription{{Subject: "events.*"}, {Subject: "events.a", Class: "critical"}}}, "ingested twice"},
		{"empty token", NATSOptions{Subscriptions: []Subscription{{Subject: "events..a"}}}, "empty token"},
		{"> not last", NATSOptions{Subscriptions: []Subscription{{Subject: "events.>.a"}}}, "not the last token"},
		{"white space", NATSOptions{Subscriptions: []Subscription{{Subject: "events a"}}}, "white space"},
		{"bad exclude", NATSOptions{ExcludeSubjects: []string{""}, Subscriptions: []Subscription{{Subject: "events"}}}, "exclude subject"},
		{"bad class", NATSOptions{Subscriptions: []Subscription{{Subject: "events", Class: "quarantine"}}}, "invalid class"},
		{"queue with stream", NATSOptions{Subscriptions: []Subscription{{Subject: "events", Stream: "IN", Queue: "q"}}}, "Queue is for core"},
		{"durable without stream", NATSOptions{Subscriptions: []Subscription{{Subject: "events", Durable: "d"}}}, "without Stream"},
		{"one consumer twice", NATSOptions{Subscriptions: []Subscription{{Subject: "in.a", Stream: "IN"}, {Subject: "in.b", Stream: "IN"}}}, "used twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := StartNATS(context.Background(), nc, natsTestPipeline(t, sink, Options{}), tt.opts)
			if !errors.Is(err, ErrInvalidNATSOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("StartNATS = %v, %v; want ErrInvalidNATSOptions saying %q", s, err, tt.want)
			}
		})
	}

	// A start that fails half way (the stream does not exist) leaves
	// nothing behind: no subscription, no goroutine.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(context.Background()); err != nil { // opens the connection's request inbox
		t.Fatal(err)
	}
	before := nc.NumSubscriptions()
	_, err = StartNATS(context.Background(), nc, natsTestPipeline(t, sink, Options{}), NATSOptions{Subscriptions: []Subscription{
		{Subject: "events.>"},
		{Subject: "missing.>", Stream: "MISSING"},
	}})
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("StartNATS on a missing stream = %v, want ErrStreamNotFound", err)
	}
	if n := nc.NumSubscriptions(); n != before {
		t.Errorf("%d subscriptions after a failed start, want %d", n, before)
	}
	natsTestNoLeak(t)
}

// TestNATSCoreToStream sends core NATS messages through a real node and
// reads them back from its upstream stream: each valid event arrives once,
// in the class its subscription or the router gave it.
func TestNATSCoreToStream(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	node := natsTestNode(t, nc)
	router, err := priority.NewRouter(priority.Defaults(0), []priority.Rule{
		{Source: "nats:events.>", Field: "type", Equals: []string{"alert"}, Class: priority.ClassCritical},
	}, priority.ClassIngest)
	if err != nil {
		t.Fatal(err)
	}
	src := natsTestStartP(t, nc, natsTestPipeline(t, node, Options{Router: router}), NATSOptions{
		Subscriptions: []Subscription{{Subject: "events.>"}, {Subject: "audit.*", Class: priority.ClassBackfill}},
		MaxBatch:      64,
	})
	pub := natsTestConnect(t, srv.ClientURL())
	for subj, body := range map[string]string{
		"events.a":   `{"id":"e1","type":"page"}`,
		"events.b.c": "{\"id\":\"e2\"}\n{\"id\":\"e3\",\"type\":\"alert\"}\nnot json\n",
		"events.d":   "{\n  \"id\": \"e4\"\n}\n",
		"events.e":   "garbage",
		"audit.x":    `{"id":"a1","type":"alert"}`,
		"other":      `{"id":"o1"}`,
	} {
		if err := pub.Publish(subj, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	const n = 300
	for i := range n {
		pub.Publish("events.n", fmt.Appendf(nil, `{"id":"n%d"}`, i))
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == n+5 }, "events ingested")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := src.Stats()
	if want := (NATSCounts{Messages: n + 5, Events: n + 5, Rejected: 2}); st.Total != want {
		t.Errorf("stats %+v, want %+v", st.Total, want)
	}
	if st.Subscriptions[1].Subject != "audit.*" || st.Subscriptions[1].Events != 1 {
		t.Errorf("subscription stats %+v", st.Subscriptions)
	}
	natsTestNoLeak(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil { // drains the spool to the stream
		t.Fatal(err)
	}
	classes := natsTestStream(t, nc)
	if len(classes) != n+5 {
		t.Errorf("stream holds %d distinct events, want %d", len(classes), n+5)
	}
	for id, want := range map[string]string{"e1": "ingest", "e2": "ingest", "e3": "critical", "e4": "ingest", "a1": "backfill", "n0": "ingest", "n299": "ingest"} {
		if classes[id] != want {
			t.Errorf("event %s in class %q, want %q", id, classes[id], want)
		}
	}
}

// TestNATSJetStreamAcks ingests a JetStream backlog in batches and
// acknowledges every message once it is durable.
func TestNATSJetStreamAcks(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	node := natsTestNode(t, nc)
	const n = 300
	for i := range n {
		if _, err := js.PublishAsync("in.x", fmt.Appendf(nil, `{"id":"j%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	sink := &natsTestCounting{Sink: node}
	src := natsTestStart(t, nc, sink, NATSOptions{
		Subscriptions: []Subscription{{Subject: "in.>", Stream: "IN"}},
		MaxBatch:      100,
	})
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == n }, "events ingested")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	natsTestNoLeak(t)
	info := natsTestConsumer(t, js, "IN", DefaultNATSDurable)
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: %d ack pending, %d pending, %d redelivered; want 0, 0, 0", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
	if calls := sink.calls.Load(); calls > n/10 {
		t.Errorf("%d Ingest calls for %d events: not batched", calls, n)
	}
	if st := src.Stats().Total; st != (NATSCounts{Messages: n, Events: n}) {
		t.Errorf("stats %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := natsTestStream(t, nc); len(got) != n {
		t.Errorf("stream holds %d distinct events, want %d", len(got), n)
	}
}

// TestNATSJetStreamRedelivers: messages the Sink refuses are not
// acknowledged; JetStream redelivers them and each event reaches the Sink
// exactly once.
func TestNATSJetStreamRedelivers(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	for _, refusal := range []error{
		fmt.Errorf("spool: %w", aggregator.ErrFull),
		aggregator.ErrClosed,
		errors.New("disk on fire"),
	} {
		t.Run(refusal.Error(), func(t *testing.T) {
			durable := strings.NewReplacer(" ", "-", ":", "").Replace(refusal.Error())
			var calls atomic.Int32
			sink := &natsTestSink{fail: func(string, [][]byte) error {
				if calls.Add(1) <= 3 {
					return refusal
				}
				return nil
			}}
			src := natsTestStart(t, nc, sink, NATSOptions{
				Subscriptions: []Subscription{{Subject: "in." + durable, Stream: "IN", Durable: durable}},
				NakDelay:      50 * time.Millisecond,
				MaxBatch:      4,
			})
			const n = 20
			for i := range n {
				if _, err := js.Publish(context.Background(), "in."+durable, fmt.Appendf(nil, `{"id":"r%d"}`, i)); err != nil {
					t.Fatal(err)
				}
			}
			natsTestEventually(t, func() bool { return sink.count() == n }, "events ingested")
			if err := src.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			natsTestNoLeak(t)
			for i := range n {
				if c := sink.seen(fmt.Sprintf("r%d", i)); c != 1 {
					t.Errorf("event r%d ingested %d times", i, c)
				}
			}
			st := src.Stats().Total
			if st.Redelivered < 1 || st.Events != n || st.Refused != 0 {
				t.Errorf("stats %+v: want redeliveries, %d events, nothing refused", st, n)
			}
			info := natsTestConsumer(t, js, "IN", durable)
			if info.NumAckPending != 0 || info.NumPending != 0 {
				t.Errorf("consumer: %d ack pending, %d pending", info.NumAckPending, info.NumPending)
			}
		})
	}
}

// TestNATSJetStreamPoison: messages without a valid event are terminated
// and counted, never redelivered; the good events beside them are kept,
// also when the Sink is the one that finds an event invalid.
func TestNATSJetStreamPoison(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	var logs natsTestLog
	sink := &natsTestSink{fail: func(_ string, evs [][]byte) error {
		for i, ev := range evs {
			if bytes.Contains(ev, []byte(`"bad"`)) {
				return fmt.Errorf("event %d: %w: test says so", i, aggregator.ErrInvalidEvent)
			}
		}
		return nil
	}}
	for _, body := range []string{
		`{"id":"g1"}`,
		`not json`,
		"{\"id\":\"g2\"}\nbad line\n{\"id\":\"g3\"}",
		`{"id":"big","pad":"0123456789012345678901234567890123456789012345678901234567890123456789"}`,
		``,
		`{"id":"s1","bad":true}`,
		"{\"id\":\"g4\"}\n{\"id\":\"s2\",\"bad\":true}",
		`{"id":"g5"}`,
	} {
		if _, err := js.Publish(context.Background(), "in.p", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	src := natsTestStartP(t, nc, natsTestPipeline(t, sink, Options{MaxEventBytes: 64}), NATSOptions{
		Subscriptions: []Subscription{{Subject: "in.>", Stream: "IN"}},
		NakDelay:      50 * time.Millisecond,
		Logger:        logs.logger(),
	})
	natsTestEventually(t, func() bool { return src.Stats().Total.Messages == 8 }, "messages received")
	time.Sleep(200 * time.Millisecond) // would a terminated message come back?
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	natsTestNoLeak(t)
	if got := slices.Sorted(slices.Values(sink.ids())); fmt.Sprint(got) != "[g1 g2 g3 g4 g5]" {
		t.Errorf("sink holds %v, want [g1 g2 g3 g4 g5]", got)
	}
	// Rejected: not json, bad line, big, empty, s1, s2. Terminated: the
	// messages with nothing valid: not json, big, empty, s1.
	if st := src.Stats().Total; st != (NATSCounts{Messages: 8, Events: 5, Rejected: 6, Terminated: 4}) {
		t.Errorf("stats %+v", st)
	}
	info := natsTestConsumer(t, js, "IN", DefaultNATSDurable)
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: %d ack pending, %d pending, %d redelivered; want 0, 0, 0", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
	if n := logs.count("rejected invalid events"); n != 1 {
		t.Errorf("%d log lines about invalid events, want 1 (rate limited):\n%s", n, logs.String())
	}
}

// TestNATSShutdownInFlight: Shutdown waits for the Sink call in flight and
// settles its messages; a core subscription is drained of what NATS
// already delivered.
func TestNATSShutdownInFlight(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	for _, jetStream := range []bool{false, true} {
		t.Run(fmt.Sprintf("jetstream=%v", jetStream), func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			sink := &natsTestSink{fail: func(string, [][]byte) error {
				once.Do(func() {
					close(entered)
					<-release
				})
				return nil
			}}
			sub := Subscription{Subject: "core.>"}
			if jetStream {
				sub = Subscription{Subject: "in.f", Stream: "IN", Durable: "inflight"}
			}
			src := natsTestStart(t, nc, sink, NATSOptions{Subscriptions: []Subscription{sub}})
			const n = 20
			for i := range n {
				body := fmt.Appendf(nil, `{"id":"f%d"}`, i)
				var err error
				if jetStream {
					_, err = js.Publish(context.Background(), "in.f", body)
				} else {
					err = nc.Publish("core.f", body)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			nc.Flush() // the same connection: every core message is delivered before the PONG
			<-entered
			done := make(chan error, 1)
			go func() { done <- src.Shutdown(context.Background()) }()
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned %v with an Ingest in flight", err)
			case <-time.After(100 * time.Millisecond):
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			natsTestNoLeak(t)
			st := src.Stats().Total
			if jetStream {
				info := natsTestConsumer(t, js, "IN", "inflight")
				if info.NumAckPending != 0 || st.Events+info.NumPending != n || st.Events == 0 {
					t.Errorf("%d events ingested, consumer: %d ack pending, %d pending; want none lost", st.Events, info.NumAckPending, info.NumPending)
				}
			} else if st.Events != n || sink.count() != n {
				t.Errorf("%d events ingested (%d in the sink), want all %d delivered before Shutdown", st.Events, sink.count(), n)
			}
		})
	}
}

// TestNATSShutdownDeadline: when Shutdown's deadline wins, the Sink call
// in flight is cancelled and its JetStream messages come back to the next
// source on the same consumer.
func TestNATSShutdownDeadline(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	entered := make(chan struct{})
	var once sync.Once
	stuck := &natsTestSink{}
	stuck.ctxFail = func(ctx context.Context) error {
		once.Do(func() { close(entered) })
		<-ctx.Done()
		return ctx.Err()
	}
	opts := NATSOptions{Subscriptions: []Subscription{{Subject: "in.>", Stream: "IN"}}, NakDelay: 50 * time.Millisecond}
	src := natsTestStart(t, nc, stuck, opts)
	const n = 10
	for i := range n {
		if _, err := js.Publish(context.Background(), "in.d", fmt.Appendf(nil, `{"id":"d%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := src.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if err := src.Shutdown(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Shutdown = %v, want the first result", err)
	}
	natsTestNoLeak(t)

	sink := &natsTestSink{}
	src = natsTestStart(t, nc, sink, opts)
	natsTestEventually(t, func() bool { return sink.count() == n }, "events redelivered")
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	natsTestNoLeak(t)
}

// TestNATSCoreRefused: a core subscription cannot hand refused events
// back, so it counts them and says so once, not once per batch.
func TestNATSCoreRefused(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	var logs natsTestLog
	var full atomic.Bool
	full.Store(true)
	sink := &natsTestSink{fail: func(string, [][]byte) error {
		if full.Load() {
			return fmt.Errorf("spool: %w", aggregator.ErrFull)
		}
		return nil
	}}
	src := natsTestStart(t, nc, sink, NATSOptions{
		Subscriptions: []Subscription{{Subject: "core.>", Queue: "edge"}},
		Logger:        logs.logger(),
	})
	for round := range 5 {
		for i := range 10 {
			nc.Publish("core.x", fmt.Appendf(nil, `{"id":"c%d-%d"}`, round, i))
		}
		nc.Flush()
		natsTestEventually(t, func() bool { return src.Stats().Total.Messages == uint64(10*(round+1)) }, "messages received")
	}
	natsTestEventually(t, func() bool { return src.Stats().Total.Refused == 50 }, "events refused")
	full.Store(false)
	nc.Publish("core.x", []byte(`{"id":"ok"}`))
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == 1 }, "event ingested")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	natsTestNoLeak(t)
	if st := src.Stats().Total; st != (NATSCounts{Messages: 51, Events: 1, Refused: 50}) {
		t.Errorf("stats %+v", st)
	}
	if n := logs.count("sink refusing events"); n != 1 {
		t.Errorf("%d warnings about refusals, want 1:\n%s", n, logs.String())
	}
	if n := logs.count("sink accepting again"); n != 1 || !strings.Contains(logs.String(), "events_lost=50") {
		t.Errorf("want one recovery line with events_lost=50:\n%s", logs.String())
	}
}

// TestNATSSlowConsumer: a core subscription holds at most PendingMsgs
// messages while the Sink is busy; NATS drops the rest and they are
// counted.
func TestNATSSlowConsumer(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sink := &natsTestSink{fail: func(string, [][]byte) error {
		once.Do(func() {
			close(entered)
			<-release
		})
		return nil
	}}
	var logs natsTestLog
	src := natsTestStart(t, nc, sink, NATSOptions{
		Subscriptions: []Subscription{{Subject: "core.>"}},
		PendingMsgs:   5,
		Logger:        logs.logger(),
	})
	nc.Publish("core.x", []byte(`{"id":"first"}`))
	<-entered
	const n = 50
	for i := range n {
		nc.Publish("core.x", fmt.Appendf(nil, `{"id":"s%d"}`, i))
	}
	nc.Flush()
	close(release)
	natsTestEventually(t, func() bool {
		st := src.Stats().Total
		return st.Messages+st.SlowConsumer == n+1
	}, "every message ingested or counted as dropped")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	natsTestNoLeak(t)
	st := src.Stats().Total
	if st.SlowConsumer < n-10 || st.Events != st.Messages {
		t.Errorf("stats %+v: want most of %d dropped by the pending limit of 5", st, n)
	}
	if logs.count("slow consumer") != 1 {
		t.Errorf("want one slow-consumer warning:\n%s", logs.String())
	}
}

// --- helpers ---

func natsTestConnect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// natsTestStart starts a source that the test's cleanup closes, so that a
// failing test leaves no goroutine to the next.
func natsTestStart(t testing.TB, nc *nats.Conn, sink Sink, opts NATSOptions) *NATSSource {
	t.Helper()
	return natsTestStartP(t, nc, natsTestPipeline(t, sink, Options{}), opts)
}

// natsTestPipeline is a pipeline into sink, stamped with node "test-node".
func natsTestPipeline(t testing.TB, sink Sink, opts Options) *Pipeline {
	t.Helper()
	if opts.Node == "" {
		opts.Node = "test-node"
	}
	p, err := NewPipeline(sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// natsTestStartP is natsTestStart on a pipeline of the test's.
func natsTestStartP(t testing.TB, nc *nats.Conn, p *Pipeline, opts NATSOptions) *NATSSource {
	t.Helper()
	s, err := StartNATS(context.Background(), nc, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// natsTestNode is a real node with its spool under t.TempDir().
func natsTestNode(t testing.TB, nc *nats.Conn) *aggregator.Node {
	t.Helper()
	n, err := aggregator.New(aggregator.Options{
		Node:       "test",
		Dir:        t.TempDir(),
		Conn:       nc,
		AckTimeout: time.Second,
		RetryMax:   200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// natsTestStreamIn creates the stream IN on in.> for JetStream sources.
func natsTestStreamIn(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "IN", Subjects: []string{"in.>"}}); err != nil {
		t.Fatal(err)
	}
	return js
}

func natsTestConsumer(t testing.TB, js jetstream.JetStream, stream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// natsTestStream decodes the node's upstream stream and returns the class
// of each event id; it fails the test on a duplicate.
func natsTestStream(t testing.TB, nc *nats.Conn) map[string]string {
	t.Helper()
	classes := make(map[string]string)
	natsTestEachEvent(t, nc, func(class, id string, _ []byte) { classes[id] = class })
	return classes
}

// natsTestEachEvent decodes the node's upstream stream and calls f with
// each event's class, id and body, in stream order; it fails the test on
// an id seen twice.
func natsTestEachEvent(t testing.TB, nc *nats.Conn, f func(class, id string, ev []byte)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "SLUICE")
	if err != nil {
		t.Fatal(err)
	}
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.NewStreamDictionaries(js, "SLUICE")))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	seen := make(map[string]bool)
	for seq := uint64(1); seq <= stream.CachedInfo().State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := dec.Decode(nats.Header(msg.Header), msg.Data)
		if err != nil {
			t.Fatalf("decode seq %d: %v", seq, err)
		}
		for _, ev := range b.Events {
			var e struct{ ID string }
			if err := json.Unmarshal(ev, &e); err != nil {
				t.Fatalf("event %q: %v", ev, err)
			}
			if seen[e.ID] {
				t.Errorf("event %s twice in the stream", e.ID)
			}
			seen[e.ID] = true
			f(b.Class, e.ID, ev)
		}
	}
}

// natsTestHangGuard bounds the waits for a state: far above what the
// slowest honest run needs (under -race on two loaded cores), so that it
// only turns a hang into a failure; how fast a state comes is not checked.
const natsTestHangGuard = 2 * time.Minute

func natsTestEventually(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(natsTestHangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %v waiting for %s", natsTestHangGuard, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// natsTestNoLeak waits for the goroutines a source runs or causes (its
// loops, jetstream fetches, subscription drains) to end.
func natsTestNoLeak(t testing.TB) {
	t.Helper()
	suspects := []string{"ingest.(*natsSub)", "ingest.(*NATSSource)", "jetstream.(*pullConsumer).fetch", "nats.(*Conn).checkDrained"}
	deadline := time.Now().Add(natsTestHangGuard)
	buf := make([]byte, 1<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		var leaked []string
		for g := range strings.SplitSeq(stacks, "\n\n") {
			for _, s := range suspects {
				if strings.Contains(g, s) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %d goroutines left after %v:\n%s", len(leaked), natsTestHangGuard, strings.Join(leaked, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// natsTestSink records the events of successful calls. fail (or ctxFail)
// decides each call's error.
type natsTestSink struct {
	fail    func(class string, events [][]byte) error
	ctxFail func(ctx context.Context) error

	mu     sync.Mutex
	events []string
	counts map[string]int
}

func (s *natsTestSink) Ingest(ctx context.Context, class string, events ...[]byte) error {
	if s.ctxFail != nil {
		if err := s.ctxFail(ctx); err != nil {
			return err
		}
	}
	if s.fail != nil {
		if err := s.fail(class, events); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts == nil {
		s.counts = make(map[string]int)
	}
	for _, ev := range events {
		var e struct{ ID string }
		if err := json.Unmarshal(ev, &e); err != nil {
			return fmt.Errorf("%w: %v", aggregator.ErrInvalidEvent, err)
		}
		s.events = append(s.events, e.ID)
		s.counts[e.ID]++
	}
	return nil
}

func (s *natsTestSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

func (s *natsTestSink) seen(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[id]
}

func (s *natsTestSink) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events...)
}

// natsTestCounting counts the calls to its Sink.
type natsTestCounting struct {
	Sink
	calls atomic.Int64
}

func (c *natsTestCounting) Ingest(ctx context.Context, class string, events ...[]byte) error {
	c.calls.Add(1)
	return c.Sink.Ingest(ctx, class, events...)
}

// natsTestLog collects log lines.
type natsTestLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *natsTestLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *natsTestLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *natsTestLog) count(s string) int { return strings.Count(l.String(), s) }

func (l *natsTestLog) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }
