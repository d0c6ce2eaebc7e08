package ingest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/internal/validated"
	"github.com/sluicehq/sluice/priority"
)

// pipeTestEvent is one event the node shipped to its upstream stream.
type pipeTestEvent struct {
	class string
	body  string
}

// pipeTestShipped drains node into its stream and returns the events
// there by id; it fails the test on a duplicate.
func pipeTestShipped(t *testing.T, nc *nats.Conn, node *aggregator.Node) map[string]pipeTestEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]pipeTestEvent)
	natsTestEachEvent(t, nc, func(class, id string, ev []byte) {
		out[id] = pipeTestEvent{class: class, body: string(ev)}
	})
	return out
}

func pipeTestPost(t *testing.T, url, body string) {
	t.Helper()
	res, err := http.Post(url+"/v1/events", "application/x-ndjson", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/events: %s", res.Status)
	}
}

// TestPipelineNATSStampedLikeHTTP: the same event sent by HTTP and by NATS
// (core and JetStream, one object on one line or pretty-printed, with or
// without members of the stamped names) reaches the upstream stream with
// the same bytes but for its id.
func TestPipelineNATSStampedLikeHTTP(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	node := natsTestNode(t, nc)
	at := time.Date(2026, 12, 7, 20, 1, 2, 345e6, time.UTC)
	p := natsTestPipeline(t, node, Options{Node: "edge-7", Now: func() time.Time { return at }})
	web := httptest.NewServer(p.Handler())
	defer web.Close()
	src := natsTestStartP(t, nc, p, NATSOptions{Subscriptions: []Subscription{{Subject: "events.>"}, {Subject: "in.>", Stream: "IN"}}})

	pipeTestPost(t, web.URL, `{"id":"h1","a":1}`+"\n"+`{"id":"h2","receivedAt":"forged","sluiceNode":"x","a":1}`)
	pub := natsTestConnect(t, srv.ClientURL())
	pub.Publish("events.x", []byte(`{"id":"c1","a":1}`))
	pub.Publish("events.x", []byte("{\n  \"id\": \"c2\",\n  \"a\": 1\n}\n"))
	pub.Publish("events.x", []byte(`{"id":"c3","receivedAt":"forged","sluiceNode":"x","a":1}`))
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), "in.x", []byte(`{"id":"j1","a":1}`)); err != nil {
		t.Fatal(err)
	}
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == 4 }, "NATS events ingested")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := pipeTestShipped(t, nc, node)
	const want = `{"receivedAt":"2026-12-07T20:01:02.345Z","sluiceNode":"edge-7","id":"ID","a":1}`
	for _, id := range []string{"h1", "h2", "c1", "c2", "c3", "j1"} {
		if ev := got[id]; ev.body != strings.Replace(want, "ID", id, 1) || ev.class != "ingest" {
			t.Errorf("event %s shipped as %q in class %q, want %q in ingest", id, ev.body, ev.class, strings.Replace(want, "ID", id, 1))
		}
	}
}

// TestPipelineReloadReachesNATS: one Reconfigure changes the routing and
// the stamp of the NATS door, as of the HTTP one.
func TestPipelineReloadReachesNATS(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	node := natsTestNode(t, nc)
	p := natsTestPipeline(t, node, Options{})
	web := httptest.NewServer(p.Handler())
	defer web.Close()
	src := natsTestStartP(t, nc, p, NATSOptions{Subscriptions: []Subscription{{Subject: "events.>"}}})
	pub := natsTestConnect(t, srv.ClientURL())
	send := func(id string, n uint64) {
		t.Helper()
		pub.Publish("events.a", fmt.Appendf(nil, `{"id":"n%s","type":"alert"}`, id))
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		pipeTestPost(t, web.URL, fmt.Sprintf(`{"id":"h%s","type":"alert"}`, id))
		natsTestEventually(t, func() bool { return src.Stats().Total.Events == n }, "event "+id)
	}
	send("1", 1)

	rt, err := priority.NewRouter(priority.Defaults(0), []priority.Rule{
		{Field: "type", Equals: []string{"alert"}, Class: priority.ClassCritical},
	}, priority.ClassBackfill)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reconfigure(Options{Router: rt, DefaultClass: priority.ClassBackfill, NoStamp: true}); err != nil {
		t.Fatal(err)
	}
	send("2", 2)
	pub.Publish("events.a", []byte(`{"id":"n3"}`))
	pub.Flush()
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == 3 }, "event n3")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := pipeTestShipped(t, nc, node)
	for id, want := range map[string]pipeTestEvent{
		"n1": {"ingest", "stamped"}, "h1": {"ingest", "stamped"},
		"n2": {"critical", `{"id":"n2","type":"alert"}`}, "h2": {"critical", `{"id":"h2","type":"alert"}`},
		"n3": {"backfill", `{"id":"n3"}`},
	} {
		ev := got[id]
		stamped := strings.HasPrefix(ev.body, `{"receivedAt":`)
		if ev.class != want.class || (want.body == "stamped") != stamped || (!stamped && ev.body != want.body) {
			t.Errorf("event %s: %q in class %q, want %s in %q", id, ev.body, ev.class, want.body, want.class)
		}
	}
}

// pipeTestHold spends the whole of p's budget for authorized traffic
// until the returned function gives it back.
func pipeTestHold(t *testing.T, p *Pipeline) func() {
	t.Helper()
	m := &meter{ctx: context.Background(), main: p.budget, authorized: true}
	if err := m.charge(p.budget.size); err != nil {
		t.Fatal(err)
	}
	return m.releaseAll
}

// TestPipelineNATSBudgetJetStream: with the memory budget spent, a
// JetStream source fetches nothing (no message is delivered to it, so
// none is held in memory and none acknowledged); once the budget is back,
// every message is ingested once and acknowledged after it is durable.
func TestPipelineNATSBudgetJetStream(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	node := natsTestNode(t, nc)
	p := natsTestPipeline(t, node, Options{MaxInflightBytes: 4 << 20, BudgetWait: 10 * time.Millisecond})
	const n = 200
	for i := range n {
		if _, err := js.PublishAsync("in.x", fmt.Appendf(nil, `{"id":"j%d","pad":"%0200d"}`, i, i)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	release := pipeTestHold(t, p)
	defer release() // idempotent; before the cleanups that stop the source
	src := natsTestStartP(t, nc, p, NATSOptions{
		Subscriptions: []Subscription{{Subject: "in.>", Stream: "IN"}},
		MaxBatch:      50, MaxBatchBytes: 16 << 10,
	})
	natsTestEventually(t, func() bool { return src.Stats().Total.Busy >= 3 }, "the source waiting for the budget")
	info := natsTestConsumer(t, js, "IN", DefaultNATSDurable)
	if info.Delivered.Consumer != 0 || info.NumAckPending != 0 || info.NumPending != n {
		t.Fatalf("budget spent: %d delivered, %d ack pending, %d pending; want 0, 0, %d", info.Delivered.Consumer, info.NumAckPending, info.NumPending, n)
	}
	if st := src.Stats().Total; st.Messages != 0 || st.Events != 0 {
		t.Fatalf("budget spent: %+v, want nothing taken", st)
	}
	release()
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == n }, "events ingested")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	info = natsTestConsumer(t, js, "IN", DefaultNATSDurable)
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: %d ack pending, %d pending, %d redelivered; want 0, 0, 0", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
	b := p.Budget()
	if b.AuthorizedBytes != 0 || b.AuthorizedPeak > b.AuthorizedSize || b.AuthorizedPeak <= int64(src.fetchBytes) {
		t.Errorf("budget %+v: want all given back, the fetches charged beside the held budget never past its size", b)
	}
	if got := pipeTestShipped(t, nc, node); len(got) != n {
		t.Errorf("stream holds %d distinct events, want %d", len(got), n)
	}
}

// TestPipelineNATSBudgetStamps: a JetStream batch fetched within the
// budget whose stamped copies do not fit is handed back for redelivery,
// not held and not acknowledged; once the budget is back every event is
// stored once.
func TestPipelineNATSBudgetStamps(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	node := natsTestNode(t, nc)
	p := natsTestPipeline(t, node, Options{MaxInflightBytes: 4 << 20, BudgetWait: 10 * time.Millisecond})
	const n = 50
	for i := range n {
		if _, err := js.PublishAsync("in.x", fmt.Appendf(nil, `{"id":"s%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	// Leave exactly one fetch's reservation free: the fetch goes, its
	// stamps do not fit.
	fetch := int64(max(16<<10, int(nc.MaxPayload())+natsMsgOverhead))
	m := &meter{ctx: context.Background(), main: p.budget, authorized: true}
	if err := m.charge(p.budget.size - fetch); err != nil {
		t.Fatal(err)
	}
	defer m.releaseAll()
	src := natsTestStartP(t, nc, p, NATSOptions{
		Subscriptions: []Subscription{{Subject: "in.>", Stream: "IN"}},
		MaxBatchBytes: 16 << 10,
		NakDelay:      20 * time.Millisecond,
	})
	if int64(src.fetchBytes) != fetch {
		t.Fatalf("fetch reserves %d, test assumed %d", src.fetchBytes, fetch)
	}
	natsTestEventually(t, func() bool { return src.Stats().Total.Redelivered > 0 }, "a batch handed back")
	if st := src.Stats().Total; st.Events != 0 {
		t.Fatalf("budget spent: %+v, want no event stored", st)
	}
	m.releaseAll()
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == n }, "events ingested")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	info := natsTestConsumer(t, js, "IN", DefaultNATSDurable)
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer: %d ack pending, %d pending; want 0, 0", info.NumAckPending, info.NumPending)
	}
	if got := pipeTestShipped(t, nc, node); len(got) != n {
		t.Errorf("stream holds %d distinct events, want %d", len(got), n)
	}
}

// TestPipelineNATSBudgetCore: with the memory budget spent, a core source
// takes no more messages: they wait within the subscription's pending
// limit, beyond which the NATS client drops and counts them. Nothing is
// lost uncounted, and what was pending is ingested once the budget is back.
func TestPipelineNATSBudgetCore(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	node := natsTestNode(t, nc)
	p := natsTestPipeline(t, node, Options{MaxInflightBytes: 4 << 20, BudgetWait: 10 * time.Millisecond})
	release := pipeTestHold(t, p)
	defer release() // idempotent; before the cleanups that stop the source
	src := natsTestStartP(t, nc, p, NATSOptions{
		Subscriptions: []Subscription{{Subject: "core.>"}},
		PendingMsgs:   20,
	})
	pub := natsTestConnect(t, srv.ClientURL())
	const n = 100
	for i := range n {
		pub.Publish("core.x", fmt.Appendf(nil, `{"id":"c%d"}`, i))
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	natsTestEventually(t, func() bool { st := src.Stats().Total; return st.SlowConsumer > 0 && st.Busy > 0 }, "the client dropping beyond the pending limit")
	if st := src.Stats().Total; st.Events != 0 || st.Busy == 0 {
		t.Fatalf("budget spent: %+v, want no event ingested and the source waiting", st)
	}
	release()
	natsTestEventually(t, func() bool {
		st := src.Stats().Total
		return st.Events+st.SlowConsumer == n
	}, "every message ingested or counted as dropped")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := src.Stats().Total
	if st.Events < 20 || st.Refused != 0 {
		t.Errorf("stats %+v: want the pending messages (20) ingested, none refused", st)
	}
	if got := pipeTestShipped(t, nc, node); uint64(len(got)) != st.Events {
		t.Errorf("stream holds %d distinct events, want %d", len(got), st.Events)
	}
}

// TestPipelineNATSBadMessageCostsOnlyItself: a message that is not JSON,
// too large, empty, or with a bad line among good ones, costs only its bad
// part: the good events of the same fetch and of the same message reach
// the stream once, the hopeless messages are terminated and the rest
// acknowledged.
func TestPipelineNATSBadMessageCostsOnlyItself(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	js := natsTestStreamIn(t, nc)
	node := natsTestNode(t, nc)
	for _, body := range []string{
		`{"id":"g1"}`,
		`not json`,
		"{\"id\":\"g2\"}\n{broken\n{\"id\":\"g3\"}",
		`{"id":"big","pad":"` + strings.Repeat("x", 200) + `"}`,
		``,
		"{\n\"id\": \"g4\"\n}",
		`{"id":"g5"}` + "\n" + `[1,2]`,
		"\xff\xfe",
	} {
		if _, err := js.Publish(context.Background(), "in.p", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	p := natsTestPipeline(t, node, Options{MaxEventBytes: 128})
	src := natsTestStartP(t, nc, p, NATSOptions{Subscriptions: []Subscription{{Subject: "in.>", Stream: "IN"}}})
	natsTestEventually(t, func() bool { return src.Stats().Total.Messages == 8 }, "messages received")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := src.Stats().Total; st != (NATSCounts{Messages: 8, Events: 5, Rejected: 6, Terminated: 4}) {
		t.Errorf("stats %+v", st)
	}
	// Shutdown flushed the acks to the server; the consumer applies them
	// on its own queue, a moment later.
	natsTestEventually(t, func() bool {
		info := natsTestConsumer(t, js, "IN", DefaultNATSDurable)
		return info.NumAckPending == 0
	}, "acks applied")
	info := natsTestConsumer(t, js, "IN", DefaultNATSDurable)
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: %d ack pending, %d pending, %d redelivered; want 0, 0, 0", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
	got := pipeTestShipped(t, nc, node)
	if len(got) != 5 {
		t.Errorf("stream holds %v, want g1-g5", got)
	}
	for _, id := range []string{"g1", "g2", "g3", "g4", "g5"} {
		if _, ok := got[id]; !ok {
			t.Errorf("event %s lost beside a bad one", id)
		}
	}
}

// validOnlySink is a Sink whose Ingest, the validating path, fails the
// test: the pipeline validated the events already and must say so.
type validOnlySink struct {
	t     *testing.T
	calls atomic.Int32
}

func (s *validOnlySink) Ingest(context.Context, string, ...[]byte) error {
	s.t.Error("Ingest called: the events were validated twice")
	return nil
}

func (s *validOnlySink) IngestValid(_ context.Context, _ string, evs validated.Events) error {
	for _, ev := range evs.Bodies() {
		if strings.ContainsAny(string(ev), "\r\n") {
			s.t.Errorf("vouched for an event of more than one line: %q", ev)
		}
	}
	s.calls.Add(1)
	return nil
}

// TestPipelineValidatesOnce: both doors hand a validSink only events they
// validated, through IngestValid.
func TestPipelineValidatesOnce(t *testing.T) {
	srv := natstest.Start(t)
	nc := natsTestConnect(t, srv.ClientURL())
	sink := &validOnlySink{t: t}
	p := natsTestPipeline(t, sink, Options{})
	web := httptest.NewServer(p.Handler())
	defer web.Close()
	src := natsTestStartP(t, nc, p, NATSOptions{Subscriptions: []Subscription{{Subject: "events.>"}}})
	pipeTestPost(t, web.URL, `{"a":1}`)
	nc.Publish("events.a", []byte("{\"a\":\n1}"))
	nc.Flush()
	natsTestEventually(t, func() bool { return src.Stats().Total.Events == 1 }, "NATS event")
	if err := src.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := sink.calls.Load(); n != 2 {
		t.Errorf("%d IngestValid calls, want 2", n)
	}
}
