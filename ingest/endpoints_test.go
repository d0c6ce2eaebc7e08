package ingest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/priority"
)

var fixedNow = time.Date(2026, 11, 26, 1, 2, 3, 456_000_000, time.UTC)

type exchange struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, h http.Handler, method, target string, header http.Header, body string) exchange {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return exchange{rec.Code, rec.Header(), rec.Body.String()}
}

func newHandler(t *testing.T, sink ingest.Sink, opts ingest.Options) *ingest.Handler {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return fixedNow }
	}
	if opts.Node == "" {
		opts.Node = "edge-1"
	}
	h, err := ingest.NewHandler(sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func basic(user string) http.Header {
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))}}
}

// Every accepted event carries the time its request arrived and the node,
// first; members of those names the client sent are replaced.
func TestStamp(t *testing.T) {
	sink := &recordingSink{}
	h := newHandler(t, sink, ingest.Options{})
	body := `{"a":1}` + "\n" + `{}` + "\n" + `{ "receivedAt":"client","b":2,"sluiceNode":"x"}` + "\n" + `{"k\u0065y":"v","receiv\u0065dAt":1}`
	if x := do(t, h, "POST", "/v1/events", nil, body); x.status != 200 {
		t.Fatalf("status %d: %s", x.status, x.body)
	}
	stamp := `"receivedAt":"2026-11-26T01:02:03.456Z","sluiceNode":"edge-1"`
	want := []string{
		`{` + stamp + `,"a":1}`,
		`{` + stamp + `}`,
		`{` + stamp + `,"b":2}`,
		`{` + stamp + `,"k\u0065y":"v"}`,
	}
	got := sink.calls[0].events
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stamped:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, ev := range got {
		if !json.Valid([]byte(ev)) {
			t.Errorf("invalid JSON after stamping: %s", ev)
		}
	}
}

func TestAuth(t *testing.T) {
	keys := []ingest.Key{
		{Key: "seg-key", Source: "web"},
		{Key: "ph-key", Source: "app", Class: "critical"},
		{Key: "pin-key", Source: "browser", Class: "backfill", PinClass: true},
	}
	segment := `{"batch":[{"type":"track","event":"x","messageId":"m1"}]}`
	tests := []struct {
		name      string
		method    string
		path      string
		header    http.Header
		body      string
		status    int
		wantClass string
		wantBody  string
	}{
		{name: "no key", path: "/v1/batch", body: segment, status: 401,
			wantBody: `{"error":"missing write key: send it as the user of Authorization: Basic, as Authorization: Bearer, or in X-Sluice-Key"}`},
		{name: "unknown key", path: "/v1/batch", header: basic("nope"), body: segment, status: 401,
			wantBody: `{"error":"unknown write key"}`},
		{name: "unknown key in body", path: "/v1/batch", body: `{"writeKey":"nope","batch":[{"type":"track"}]}`, status: 401,
			wantBody: `{"error":"unknown write key"}`},
		{name: "basic user", path: "/v1/batch", header: basic("seg-key"), body: segment, status: 200, wantClass: "ingest"},
		{name: "bearer", path: "/v1/events", header: http.Header{"Authorization": {"Bearer seg-key"}}, body: `{"a":1}`, status: 200, wantClass: "ingest"},
		{name: "X-Sluice-Key", path: "/v1/events", header: http.Header{"X-Sluice-Key": {"seg-key"}}, body: `{"a":1}`, status: 200, wantClass: "ingest"},
		{name: "segment writeKey in body", path: "/v1/batch", body: `{"writeKey":"seg-key","batch":[{"type":"track"}]}`, status: 200, wantClass: "ingest"},
		{name: "posthog api_key in body, key's class", path: "/batch/", body: `{"api_key":"ph-key","batch":[{"event":"e","uuid":"u1"}]}`, status: 200, wantClass: "critical"},
		{name: "malformed basic", path: "/v1/batch", header: http.Header{"Authorization": {"Basic !!!"}}, body: segment, status: 401,
			wantBody: `{"error":"malformed Authorization header: Basic credentials are not valid base64"}`},
		{name: "a key's class yields to the request's", path: "/v1/events?class=replication", header: http.Header{"X-Sluice-Key": {"ph-key"}}, body: `{"a":1}`, status: 200, wantClass: "replication"},
		{name: "pinned key", path: "/v1/events", header: http.Header{"X-Sluice-Key": {"pin-key"}}, body: `{"a":1}`, status: 200, wantClass: "backfill"},
		{name: "pinned key names its own class", path: "/v1/events?class=backfill", header: http.Header{"X-Sluice-Key": {"pin-key"}}, body: `{"a":1}`, status: 200, wantClass: "backfill"},
		{name: "pinned key asks for critical", path: "/v1/events?class=critical", header: http.Header{"X-Sluice-Key": {"pin-key"}}, body: `{"a":1}`, status: 403,
			wantBody: `{"error":"class \"critical\" refused: this write key sends only to its own class"}`},
		{name: "pinned key in the body asks for critical", path: "/v1/batch", header: http.Header{"X-Sluice-Class": {"critical"}}, body: `{"writeKey":"pin-key","batch":[{"type":"track"}]}`, status: 403},
		{name: "pixel without key", method: "GET", path: "/i?e=pv&eid=1", status: 401},
		{name: "healthz is open", method: "GET", path: "/healthz", status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &recordingSink{}
			h := newHandler(t, sink, ingest.Options{Keys: keys})
			x := do(t, h, cmpOr(tt.method, "POST"), tt.path, tt.header, tt.body)
			if x.status != tt.status {
				t.Fatalf("status %d, want %d: %s", x.status, tt.status, x.body)
			}
			if tt.status == 403 && len(sink.calls) != 0 {
				t.Errorf("a refused class reached the sink: %+v", sink.calls)
			}
			if tt.status == 401 {
				if got := x.header.Get("WWW-Authenticate"); got != `Basic realm="sluice"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
				if len(sink.calls) != 0 {
					t.Errorf("unauthorized request reached the sink")
				}
				if strings.Contains(x.body, "nope") || strings.Contains(x.body, "seg-key") {
					t.Errorf("a key appears in the answer: %s", x.body)
				}
			}
			if tt.wantBody != "" && strings.TrimSpace(x.body) != tt.wantBody {
				t.Errorf("body %s\nwant %s", x.body, tt.wantBody)
			}
			if tt.wantClass != "" {
				if len(sink.calls) != 1 || sink.calls[0].class != tt.wantClass {
					t.Errorf("calls %+v, want one to %s", sink.calls, tt.wantClass)
				}
				for _, ev := range sink.calls[0].events {
					if strings.Contains(ev, "-key") {
						t.Errorf("write key stored in an event: %s", ev)
					}
				}
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Routing: an explicit class wins, then the key's, then the rules (by field
// and by source endpoint), then the default.
func TestRouting(t *testing.T) {
	classes := priority.Defaults(0)
	rt, err := priority.NewRouter(classes, []priority.Rule{
		{Field: "event", Equals: []string{"Order Completed"}, Class: "critical"},
		{Source: "snowplow", Class: "backfill"},
	}, "ingest")
	if err != nil {
		t.Fatal(err)
	}
	sink := &recordingSink{}
	h := newHandler(t, sink, ingest.Options{Router: rt})
	do(t, h, "POST", "/v1/batch", nil, `{"batch":[{"type":"track","event":"Order Completed"},{"type":"page"},{"type":"track","event":"Order Completed"}]}`)
	do(t, h, "POST", "/v1/events?class=replication", nil, `{"event":"Order Completed"}`)
	do(t, h, "GET", "/i?e=pv&eid=e1&url=x", nil, "")
	got := map[string]int{}
	order := []string{}
	for _, c := range sink.calls {
		got[c.class] += len(c.events)
		order = append(order, c.class)
	}
	want := map[string]int{"critical": 2, "ingest": 1, "replication": 1, "backfill": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("class %s got %d events, want %d (calls %v)", k, got[k], v, order)
		}
	}
	if strings.Join(order, ",") != "critical,ingest,replication,backfill" {
		t.Errorf("sink calls in order %v: want one per class, in order of first appearance", order)
	}
}

// Client retries (same ids) are dropped before the sink, but only once the
// first copy was durable: a refused request can be retried whole.
func TestDedup(t *testing.T) {
	sink := &recordingSink{err: aggregator.ErrFull}
	h := newHandler(t, sink, ingest.Options{})
	batch := `{"batch":[{"type":"track","messageId":"a"},{"type":"track","messageId":"b"},{"type":"track","messageId":"a"},{"type":"track"}]}`
	if x := do(t, h, "POST", "/v1/batch", nil, batch); x.status != 429 || x.header.Get("Retry-After") != "1" {
		t.Fatalf("full: status %d Retry-After %q", x.status, x.header.Get("Retry-After"))
	}
	sink.err = nil
	x := do(t, h, "POST", "/v1/batch", nil, batch)
	if x.status != 200 || !strings.Contains(x.body, `"accepted":3,"duplicates":1`) {
		t.Fatalf("retry after 429: %d %s (want 3 accepted: a, b, the one without id; the second a a repeat)", x.status, x.body)
	}
	x = do(t, h, "POST", "/v1/batch", nil, batch)
	if x.status != 200 || !strings.Contains(x.body, `"accepted":1,"duplicates":3`) {
		t.Fatalf("second delivery: %d %s", x.status, x.body)
	}
	// The same ids from another SDK are other events.
	x = do(t, h, "POST", "/batch/", nil, `{"batch":[{"event":"e","uuid":"a"}]}`)
	if !strings.Contains(x.body, `"accepted":1`) {
		t.Errorf("posthog id a: %s", x.body)
	}
	// 5 repeats: one within each of the three batches, two more in the last.
	if s := h.Stats(); s.Duplicates != 5 || s.Accepted != 5 || s.DedupEntries != 3 {
		t.Errorf("stats %+v", s)
	}
}

// The SDK endpoints take their formats; Snowplow's pixel answers a GIF.
func TestEndpoints(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		header                   http.Header
		status                   int
		events                   int
		contentType              string
	}{
		{name: "events array", path: "/v1/events", body: `[{"a":1},{"b":2},3]`, status: 200, events: 2},
		{name: "segment track", path: "/v1/track", body: `{"event":"x","userId":"u"}`, status: 200, events: 1},
		{name: "segment identify wrong type", path: "/v1/identify", body: `{"type":"track"}`, status: 400},
		{name: "rudderstack gzip as form", path: "/v1/batch", body: string(gzipBytes(t, []byte(`{"batch":[{"type":"page"}]}`))),
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Content-Encoding": {"gzip"}}, status: 200, events: 1},
		{name: "snowplow tp2", path: "/com.snowplowanalytics.snowplow/tp2",
			body:   `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[{"e":"pv","eid":"1"},{"e":"pv","eid":"2"}]}`,
			status: 200, events: 2},
		{name: "snowplow pixel", method: "GET", path: "/i?e=pv&eid=3&url=https%3A%2F%2Fexample.com", status: 200, events: 1, contentType: "image/gif"},
		{name: "posthog capture", path: "/capture/", body: `{"api_key":"k","event":"e","properties":{}}`, status: 200, events: 1},
		{name: "posthog e without slash", path: "/e", body: `[{"event":"e"}]`, status: 200, events: 1},
		{name: "empty segment batch", path: "/v1/batch", body: `{"batch":[]}`, status: 200},
		{name: "wrong method", method: "GET", path: "/v1/batch", status: 405},
		{name: "not json", path: "/batch/", body: `hello`, status: 400},
		{name: "batch over MaxEvents", path: "/v1/events", body: strings.Repeat(`{"a":1}`+"\n", 4), status: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &recordingSink{}
			h := newHandler(t, sink, ingest.Options{MaxEvents: 3})
			x := do(t, h, cmpOr(tt.method, "POST"), tt.path, tt.header, tt.body)
			if x.status != tt.status {
				t.Fatalf("status %d, want %d: %s", x.status, tt.status, x.body)
			}
			if tt.status == 413 && !strings.Contains(x.body, "batch of 4 events exceeds the limit of 3 events") {
				t.Errorf("413 body %s", x.body)
			}
			n := 0
			for _, c := range sink.calls {
				n += len(c.events)
			}
			if n != tt.events {
				t.Errorf("%d events reached the sink, want %d", n, tt.events)
			}
			if tt.contentType != "" && x.header.Get("Content-Type") != tt.contentType {
				t.Errorf("Content-Type %q, want %q", x.header.Get("Content-Type"), tt.contentType)
			}
		})
	}
}

// A gzip bomb is refused after MaxDecodedBytes, not expanded.
func TestBombRefused(t *testing.T) {
	sink := &recordingSink{}
	h := newHandler(t, sink, ingest.Options{MaxDecodedBytes: 1 << 20})
	bomb := gzipBytes(t, bytes.Repeat([]byte(" "), 64<<20))
	req := httptest.NewRequest("POST", "/v1/events", bytes.NewReader(bomb))
	req.Header.Set("Content-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 413 || !strings.Contains(string(body), "1048576") {
		t.Errorf("bomb: %d %s", rec.Code, body)
	}
}

// A reload swaps keys and routes for the next request; an invalid one
// changes nothing.
func TestReconfigure(t *testing.T) {
	sink := &recordingSink{}
	h := newHandler(t, sink, ingest.Options{Keys: []ingest.Key{{Key: "old"}}})
	if x := do(t, h, "POST", "/v1/events", http.Header{"X-Sluice-Key": {"new"}}, `{"a":1}`); x.status != 401 {
		t.Fatalf("new key before the reload: %d", x.status)
	}
	rt, err := priority.NewRouter(nil, []priority.Rule{{Field: "a", Class: "critical"}}, "ingest")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Pipeline().Reconfigure(ingest.Options{Keys: []ingest.Key{{Key: "new"}}, Router: rt}); err != nil {
		t.Fatal(err)
	}
	if x := do(t, h, "POST", "/v1/events", http.Header{"X-Sluice-Key": {"new"}}, `{"a":1}`); x.status != 200 || sink.calls[0].class != "critical" {
		t.Fatalf("after the reload: %d %+v", x.status, sink.calls)
	}
	if x := do(t, h, "POST", "/v1/events", http.Header{"X-Sluice-Key": {"old"}}, `{"a":1}`); x.status != 401 {
		t.Errorf("old key after the reload: %d", x.status)
	}
	if err := h.Pipeline().Reconfigure(ingest.Options{Keys: []ingest.Key{{Key: "k"}, {Key: "k"}}}); !errors.Is(err, ingest.ErrInvalidOptions) {
		t.Errorf("duplicate keys: %v", err)
	}
	if x := do(t, h, "POST", "/v1/events", http.Header{"X-Sluice-Key": {"new"}}, `{"a":1}`); x.status != 200 {
		t.Errorf("a refused reload changed the keys: %d", x.status)
	}
}
