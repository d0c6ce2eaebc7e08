package ingest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/sluicehq/sluice/internal/jsonx"
	"github.com/sluicehq/sluice/priority"
)

// parseNDJSON is parseEvents for the bodies alone.
func parseNDJSON(body []byte, maxEvent int, events [][]byte, rejected []Rejection) ([][]byte, []Rejection) {
	var sc eventScan
	evs, rejected := parseEvents(body, maxEvent, &sc, nil, rejected)
	for _, ev := range evs {
		events = append(events, ev.Body)
	}
	return events, rejected
}

// natsParse is natsParseEvents for the bodies alone.
func natsParse(data []byte, maxEvent int, events [][]byte) ([][]byte, []Rejection) {
	var sc eventScan
	evs, rej := natsParseEvents(data, maxEvent, &sc, nil)
	for _, ev := range evs {
		events = append(events, ev.Body)
	}
	return events, rej
}

// TestEventSize keeps the memory charged per event (eventSize) true to
// the Event the decoders list.
func TestEventSize(t *testing.T) {
	if n := unsafe.Sizeof(Event{}); n != eventSize {
		t.Errorf("an Event is %d bytes, eventSize says %d", n, eventSize)
	}
}

// scanRules are routing rules over top-level and nested fields, with and
// without a source.
var scanRules = []priority.Rule{
	{Field: "event", Equals: []string{"Order Completed", "Fraud Signal"}, Class: "critical"},
	{Field: "type", Equals: []string{"identify"}, Source: sourceSegment, Class: "profile"},
	{Field: "context.import", Equals: []string{"true"}, Class: "backfill"},
	{Field: "properties.batchJob", Class: "backfill"},
	{Field: "e", Equals: []string{"pv"}, Class: "pages"},
	{Field: "n", Equals: []string{"7", "null", "[1,2]"}, Class: "odd"},
}

func scanRouter(t testing.TB) *priority.Router {
	t.Helper()
	r, err := priority.NewRouter(nil, scanRules, "ingest")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// walkCounter counts, through traceScan, the walks over each event's
// bytes: walks[string(b)] is how many times bytes equal to b were walked.
type walkCounter struct {
	mu    sync.Mutex
	walks map[string]int
	total int
}

func countWalks(t *testing.T) *walkCounter {
	c := &walkCounter{walks: make(map[string]int)}
	traceScan = func(b []byte) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.walks[string(b)]++
		c.total++
	}
	t.Cleanup(func() { traceScan = nil })
	return c
}

// scanSink keeps what it was given, by class.
type scanSink struct {
	mu     sync.Mutex
	stored map[string]string // stamped event -> class
}

func (s *scanSink) Ingest(_ context.Context, class string, events ...[]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		s.stored[string(e)] = class
	}
	return nil
}

// TestOneWalk proves that an event is walked once on its way from the
// HTTP door to the Sink: the validating pass finds what dedup, routing
// and the stamp need, and nothing reads the event again, whatever the
// format. Only an event that carries a stamp member is walked a second
// time, to be rebuilt without it.
func TestOneWalk(t *testing.T) {
	sink := &scanSink{stored: make(map[string]string)}
	now := time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)
	h, err := NewHandler(sink, Options{Node: "edge", Router: scanRouter(t), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	prefix := `{"receivedAt":"2026-12-07T20:00:00.000Z","sluiceNode":"edge"`
	type want struct{ event, class string }
	for _, tc := range []struct {
		name, path, body string
		events           []want // as received, each walked once
		forged           []want // walked twice
	}{
		{"ndjson", "/v1/events",
			"{\"event\":\"Order Completed\",\"n\":1}\n{\"type\":\"identify\"}\n{ \"context\" : {\"import\": true} , \"x\":\"a\\\"b\"}\n{\"n\": [1,2]}\n{\"receivedAt\":\"forged\",\"event\":\"x\"}\n",
			[]want{{`{"event":"Order Completed","n":1}`, "critical"}, {`{"type":"identify"}`, "ingest"},
				{`{ "context" : {"import": true} , "x":"a\"b"}`, "backfill"}, {`{"n": [1,2]}`, "odd"}},
			[]want{{`{"receivedAt":"forged","event":"x"}`, "ingest"}}},
		{"array", "/v1/events", `[{"n":7},{"properties":{"batchJob":{}}},{"sluiceNode":1}]`,
			[]want{{`{"n":7}`, "odd"}, {`{"properties":{"batchJob":{}}}`, "backfill"}},
			[]want{{`{"sluiceNode":1}`, "ingest"}}},
		{"segment batch", "/v1/batch", `{"writeKey":"k","batch":[{"type":"identify","messageId":"s1"},{"type":"track","event":"Fraud Signal","messageId":"s2"}]}`,
			[]want{{`{"type":"identify","messageId":"s1"}`, "profile"}, {`{"type":"track","event":"Fraud Signal","messageId":"s2"}`, "critical"}}, nil},
		{"segment call", "/v1/track", `{"type":"track","event":"Order Completed","messageId":"s3"}`,
			[]want{{`{"type":"track","event":"Order Completed","messageId":"s3"}`, "critical"}}, nil},
		{"snowplow", "/com.snowplowanalytics.snowplow/tp2", `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[{"e":"pv","eid":"p1"},{"e":"se","eid":"p2"}]}`,
			[]want{{`{"e":"pv","eid":"p1"}`, "pages"}, {`{"e":"se","eid":"p2"}`, "ingest"}}, nil},
		{"posthog", "/batch/", `{"api_key":"k","batch":[{"event":"Order Completed","uuid":"u1"},{"event":"$pageview","uuid":"u2","n":null}]}`,
			[]want{{`{"event":"Order Completed","uuid":"u1"}`, "critical"}, {`{"event":"$pageview","uuid":"u2","n":null}`, "odd"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := countWalks(t)
			clear(sink.stored)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body)))
			if w.Code != http.StatusOK {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			for _, e := range tc.events {
				if n := c.walks[e.event]; n != 1 {
					t.Errorf("%s walked %d times, want once", e.event, n)
				}
			}
			for _, e := range tc.forged {
				if n := c.walks[e.event]; n != 2 {
					t.Errorf("%s (forged stamp) walked %d times, want twice", e.event, n)
				}
			}
			if want := len(tc.events) + 2*len(tc.forged); c.total != want {
				t.Errorf("%d walks, want %d: %v", c.total, want, c.walks)
			}
			for i, e := range append(tc.events, tc.forged...) {
				stamped := string(appendPrefixed(nil, []byte(prefix[1:]), []byte(e.event)))
				if i >= len(tc.events) {
					stamped = string(appendRebuilt(nil, []byte(prefix[1:]), []byte(e.event)))
				}
				if class, ok := sink.stored[stamped]; !ok || class != e.class {
					t.Errorf("%s: stored %v as %q, want %q as %q; stored %q", e.event, ok, class, stamped, e.class, sink.stored)
				}
			}
		})
	}
}

// TestOneWalkNATS is TestOneWalk for the NATS door's path: the
// message's parse, then the pipeline.
func TestOneWalkNATS(t *testing.T) {
	sink := &scanSink{stored: make(map[string]string)}
	p, err := NewPipeline(sink, Options{Node: "edge", Router: scanRouter(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := countWalks(t)
	cfg := p.live.Load()
	const source = "nats:ev.>"
	sc := newEventScan(cfg.plan(source, ""))
	var evs []Event
	for _, msg := range []string{"\n {\"event\":\"Fraud Signal\"}\n{\"e\":\"pv\"}", `{"type":"identify"}`} {
		evs, _ = natsParseEvents([]byte(msg), cfg.maxEventBytes, &sc, evs)
	}
	bufs := p.getBufs()
	defer p.putBufs(bufs)
	if _, err := p.prepare(&pipeBatch{cfg: cfg, source: source, scope: source, events: evs}, bufs, &meter{ctx: context.Background(), main: p.budget}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{`{"event":"Fraud Signal"}`: "critical", `{"e":"pv"}`: "pages", `{"type":"identify"}`: "ingest"}
	for ev, class := range want {
		if n := c.walks[ev]; n != 1 {
			t.Errorf("%s walked %d times, want once", ev, n)
		}
		var got string
		for _, g := range bufs.order {
			for _, b := range g.bodies {
				if bytes.HasSuffix(b, []byte(ev[1:])) {
					got = g.class
				}
			}
		}
		if got != class {
			t.Errorf("%s: class %q, want %q", ev, got, class)
		}
	}
	if c.total != len(want) {
		t.Errorf("%d walks, want %d: %v", c.total, len(want), c.walks)
	}
}

// oldParseNDJSON is parseEvents as it was before the validating pass
// collected anything: validate, then compact; routing and stamping read
// the event again.
func oldParseNDJSON(body []byte, maxEvent int) ([][]byte, []Rejection) {
	var events [][]byte
	var rejected []Rejection
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if err := checkEvent(line, maxEvent); err != nil {
			rejected = append(rejected, Rejection{Line: n, Error: err.Error()})
			continue
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			line = jsonx.AppendCompact(line[:0], line)
		}
		events = append(events, line[:len(line):len(line)])
	}
	return events, rejected
}

// oldNATSParse is natsParseEvents as it was: is the message one object?
// If not, NDJSON.
func oldNATSParse(data []byte, maxEvent int) ([][]byte, []Rejection) {
	body := bytes.TrimSpace(data)
	if len(body) == 0 {
		return nil, []Rejection{{Line: 1, Error: "empty message"}}
	}
	if bytes.IndexByte(body, '\n') >= 0 && jsonx.Object(body) == nil {
		if len(body) > maxEvent {
			return nil, []Rejection{{Line: 1, Error: fmt.Sprintf("event of %d bytes, limit %d", len(body), maxEvent)}}
		}
		body = jsonx.AppendCompact(body[:0], body)
		return [][]byte{body}, nil
	}
	return oldParseNDJSON(data, maxEvent)
}

// checkOneScan compares, for one event its door scanned, the class and
// the stamped bytes the meta gives with what the separate passes give.
func checkOneScan(t *testing.T, r *priority.Router, source string, prefix []byte, ev Event) {
	t.Helper()
	if ev.meta&metaScanned == 0 || ev.meta&metaRouted == 0 {
		t.Fatalf("%s: not scanned and routed: meta %x", ev.Body, ev.meta)
	}
	if got, want := r.RuleClass(ev.meta.rule()), r.Route(source, ev.Body); got != want {
		t.Errorf("%s: routed by the scan to %q, by Route to %q", ev.Body, got, want)
	}
	got := appendStampedMeta(nil, prefix, ev.Body, ev.meta)
	old := appendStamped(nil, prefix, ev.Body)
	if bytes.Equal(got, old) {
		return
	}
	// appendStamped also rebuilds an event that only might have a stamp
	// member (an escape, or the name in a value), which drops the white
	// space between its members; one scanned without a stamp member is
	// copied as it is. Both must hold the same members.
	if ev.meta&metaForged != 0 {
		t.Fatalf("%s: stamped %s, want %s", ev.Body, got, old)
	}
	if !bytes.Equal(got, appendPrefixed(nil, prefix, ev.Body)) ||
		!bytes.Equal(jsonx.AppendCompact(nil, got), jsonx.AppendCompact(nil, old)) {
		t.Fatalf("%s: stamped %s, want %s (white space aside)", ev.Body, got, old)
	}
}

// FuzzOneScan checks the one validating pass that collects against the
// separate passes it replaced (validate; Router.Route; appendStamped's
// search): the same events and rejections, the same classes, the same
// stamped events; for NDJSON and for the Segment and PostHog decoders.
func FuzzOneScan(f *testing.F) {
	for _, s := range []string{
		"{\"event\":\"Order Completed\"}\n{\"type\":\"identify\"}\n",
		"{\"receivedAt\":1,\"a\":2,\"sluiceNode\":3}\n{\"rec\\u0065ivedAt\":1}\n",
		"{ \"context\" : {\"import\": true} , \"x\":\"a\\\"b\"}\r\n{\"n\" :\r[1, 2]}\n",
		"{\"A\":\"receivedAt\", \"b\": 1}\n{\"event\":\"x\",\"event\":\"Fraud Signal\"}\n",
		"{\"properties\":{\"batchJob\":null},\"e\":\"pv\"}\n{}\n{ }\nnope\n{\"a\":1}}\n",
		`{"writeKey":"k","batch":[{"type":"identify","messageId":"m","receivedAt":"x"},{"type":"track","writeKey":"k","context":{"import":"true"}}],"context":{"x":1}}`,
		`{"api_key":"k","batch":[{"event":"Order Completed","uuid":"u","sluiceNode":"n"},{"event":"x","api_key":"k"}]}`,
		"[{\"n\":7},{\"n\":\n7}]",
		"\n {\"e\":\"pv\"} \n\n{\"a\":\r1}\nx\n",
		"{\"a\":\n{\"b\":\r1}\n}",
		"{\"event\":\n\"Fraud Signal\"}\n",
		"nope\n{\"a\":1}",
	} {
		f.Add([]byte(s))
	}
	r := scanRouter(f)
	fields := r.Fields()
	prefix := (&pipeConfig{node: "edge"}).stampPrefix(nil, time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC))
	f.Fuzz(func(t *testing.T, body []byte) {
		const maxEvent = 1 << 10
		// NDJSON, as HTTP /v1/events and NATS parse it.
		oldBody, newBody := bytes.Clone(body), bytes.Clone(body)
		oldEvs, oldRej := oldParseNDJSON(oldBody, maxEvent)
		sc := newEventScan(scanPlan{router: r, fields: fields, source: sourceEvents})
		newEvs, newRej := parseEvents(newBody, maxEvent, &sc, nil, nil)
		if fmt.Sprint(oldRej) != fmt.Sprint(newRej) || len(oldEvs) != len(newEvs) {
			t.Fatalf("rejected %v and %d events, before %v and %d", newRej, len(newEvs), oldRej, len(oldEvs))
		}
		for i, ev := range newEvs {
			if !bytes.Equal(ev.Body, oldEvs[i]) {
				t.Fatalf("event %d: %s, before %s", i, ev.Body, oldEvs[i])
			}
			checkOneScan(t, r, sourceEvents, prefix, ev)
		}
		// A NATS message: one object, pretty-printed or not, or NDJSON.
		oldBody, newBody = bytes.Clone(body), bytes.Clone(body)
		oldEvs, oldRej = oldNATSParse(oldBody, maxEvent)
		newEvs, newRej = natsParseEvents(newBody, maxEvent, &sc, nil)
		if fmt.Sprint(oldRej) != fmt.Sprint(newRej) || len(oldEvs) != len(newEvs) {
			t.Fatalf("NATS: rejected %v and %d events, before %v and %d", newRej, len(newEvs), oldRej, len(oldEvs))
		}
		for i, ev := range newEvs {
			if !bytes.Equal(ev.Body, oldEvs[i]) {
				t.Fatalf("NATS: event %d: %s, before %s", i, ev.Body, oldEvs[i])
			}
			checkOneScan(t, r, sourceEvents, prefix, ev)
		}
		// The SDK decoders, whose events may also be rebuilt.
		lim := decodeLimits{maxEvent: maxEvent, maxEvents: 100}
		for _, tc := range []struct {
			source string
			decode func([]byte, decodeLimits) (Decoded, error)
		}{
			{sourceSegment, func(b []byte, lim decodeLimits) (Decoded, error) { return decodeSegment(b, "batch", lim) }},
			{sourceSegment, func(b []byte, lim decodeLimits) (Decoded, error) { return decodeSegment(b, "track", lim) }},
			{sourcePostHog, decodePostHog},
			{sourceEvents, decodeArray},
		} {
			plain, err1 := tc.decode(bytes.Clone(body), lim)
			lim.plan = scanPlan{router: r, fields: fields, source: tc.source}
			scanned, err2 := tc.decode(bytes.Clone(body), lim)
			lim.plan = scanPlan{}
			if fmt.Sprint(err1) != fmt.Sprint(err2) || fmt.Sprint(plain.Rejected) != fmt.Sprint(scanned.Rejected) || len(plain.Events) != len(scanned.Events) {
				t.Fatalf("%s: %v %v %d events, without a plan %v %v %d", tc.source, err2, scanned.Rejected, len(scanned.Events), err1, plain.Rejected, len(plain.Events))
			}
			for i, ev := range scanned.Events {
				if !bytes.Equal(ev.Body, plain.Events[i].Body) || !bytes.Equal(ev.ID, plain.Events[i].ID) {
					t.Fatalf("%s: event %d: %s %q, without a plan %s %q", tc.source, i, ev.Body, ev.ID, plain.Events[i].Body, plain.Events[i].ID)
				}
				checkOneScan(t, r, tc.source, prefix, ev)
			}
		}
	})
}
