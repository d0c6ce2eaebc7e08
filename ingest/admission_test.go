package ingest_test

// Admission control (issue 12): what a request may cost before and after
// its key passed, charged before it is spent.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ingest"
)

// A bare carriage return between tokens is white space to JSON; every
// door stores the event as one line without it.
func TestCarriageReturnEveryPath(t *testing.T) {
	const want = `{"a":1,"b":"x\ry"}`
	ev := "{\"a\":1,\r\"b\":\"x\\ry\"}"
	for _, tc := range []struct{ path, body string }{
		{"/v1/events", ev + "\n"},
		{"/v1/events", "[" + ev + "]"},
		{"/v1/track", ev},
		{"/v1/batch", `{"batch":[` + strings.Replace(ev, `"a":1`, `"type":"track"`, 1) + `]}`},
		{"/batch/", `{"batch":[` + strings.Replace(ev, `"a":1`, `"event":"e"`, 1) + `]}`},
	} {
		sink := &recordingSink{}
		h := newHandler(t, sink, ingest.Options{NoStamp: true})
		x := do(t, h, "POST", tc.path, nil, tc.body)
		if x.status != 200 || len(sink.calls) != 1 || len(sink.calls[0].events) != 1 {
			t.Fatalf("%s: status %d %s, calls %q", tc.path, x.status, x.body, sink.calls)
		}
		got := sink.calls[0].events[0]
		if strings.ContainsAny(got, "\r\n") {
			t.Errorf("%s: stored %q, with a raw line break", tc.path, got)
		}
		if tc.path == "/v1/events" && got != want {
			t.Errorf("%s: stored %q, want %q", tc.path, got, want)
		}
	}
}

// gzipped returns s gzipped.
func gzipped(t testing.TB, s string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	io.WriteString(zw, s)
	zw.Close()
	return b.String()
}

// amplified is a Segment batch of n tiny messages whose batch-level
// context, ctxBytes long, is copied into each: a few hundred bytes of
// gzip that expand to n × ctxBytes.
func amplified(n, ctxBytes int, writeKey string) string {
	var b strings.Builder
	b.WriteString(`{`)
	if writeKey != "" {
		fmt.Fprintf(&b, `"writeKey":%q,`, writeKey)
	}
	fmt.Fprintf(&b, `"context":{"pad":%q},"batch":[`, strings.Repeat("c", ctxBytes))
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"track"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

// The amplification of issue 12: 10,000 messages sharing a 7 KiB context
// took RSS to 1.3 GB before the 401 and stored 68 MiB with a key. Without
// a key nothing is built; with one, the batch stops at its stored bound
// with a 413 that names it and nothing internal; both before any copy of
// the context is made, so the budget's peak stays near the body's size.
func TestAmplificationBounded(t *testing.T) {
	keys := []ingest.Key{{Key: "seg-key", Source: "web"}}
	gz := http.Header{"Content-Encoding": {"gzip"}}
	for _, tc := range []struct {
		name   string
		header http.Header
		key    string // in the envelope
		status int
		want   string
	}{
		{"no key anywhere", gz, "", 401, `{"error":"missing write key: send it in a header, or in the body's envelope or its first event"}`},
		{"wrong key in the envelope", gz, "nope", 401, `{"error":"unknown write key"}`},
		{"valid key in a header", http.Header{"Content-Encoding": {"gzip"}, "X-Sluice-Key": {"seg-key"}}, "", 413, ""},
		{"valid key in the envelope", gz, "seg-key", 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain := amplified(10_000, 7<<10, tc.key)
			decoded := len(plain)
			body := gzipped(t, plain)
			if len(body) > 1000 {
				t.Fatalf("the attack body is %d bytes of gzip; want under 1 KB", len(body))
			}
			sink := &recordingSink{}
			h := newHandler(t, sink, ingest.Options{Keys: keys})
			x := do(t, h, "POST", "/v1/batch", tc.header, body)
			if x.status != tc.status {
				t.Fatalf("status %d, want %d: %s", x.status, tc.status, x.body)
			}
			if tc.want != "" && strings.TrimSpace(x.body) != tc.want {
				t.Errorf("body %s, want %s", x.body, tc.want)
			}
			if tc.status == 413 {
				limit := int64(ingest.DefaultMaxExpansion * float64(decoded))
				want := fmt.Sprintf("events would be stored larger than %d bytes, the limit for a body of %d bytes", limit, decoded)
				if !strings.Contains(x.body, want) || strings.Contains(x.body, "spool") {
					t.Errorf("413 body %s, want it to contain %q and nothing internal", x.body, want)
				}
			}
			if len(sink.calls) != 0 {
				t.Errorf("an amplified batch reached the sink: %d calls", len(sink.calls))
			}
			st := h.Stats()
			// Charged: the decoded body (its buffer at most twice its
			// size), the rebuilt events up to the stored bound (8 × the
			// body), the list of 10,000 events and a credit step; never
			// the 70 MB the context would make.
			bound := int64(2*decoded) + int64(ingest.DefaultMaxExpansion*float64(decoded)) + 10_000*48 + 64<<10
			if peak := st.AuthorizedPeak + st.PreAuthPeak; peak > bound {
				t.Errorf("budget peak %d bytes for a body of %d decoded bytes, more than %d", peak, decoded, bound)
			}
			if st.AuthorizedBytes != 0 || st.PreAuthBytes != 0 {
				t.Errorf("budget not given back: %+v", st)
			}
			if tc.status == 401 && st.AuthorizedPeak != 0 {
				t.Errorf("an unauthorized request charged the main budget: %+v", st)
			}
		})
	}
	// A legitimate batch-level context still works.
	sink := &recordingSink{}
	h := newHandler(t, sink, ingest.Options{Keys: keys, NoStamp: true})
	x := do(t, h, "POST", "/v1/batch", http.Header{"X-Sluice-Key": {"seg-key"}}, amplified(3, 40, ""))
	if x.status != 200 || len(sink.calls) != 1 || len(sink.calls[0].events) != 3 || !strings.Contains(sink.calls[0].events[2], `"context":{"pad":"`) {
		t.Fatalf("batch-level context: %d %s %q", x.status, x.body, sink.calls)
	}
}

// slowBody opens a connection to srv and sends the headers of a POST
// with a Content-Length of declared bytes, then the first sent bytes of
// its body, and holds it open. The caller closes the connection.
func slowBody(t *testing.T, addr string, header string, declared, sent int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/events HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n", header, declared)
	c.Write(bytes.Repeat([]byte(" "), sent))
	return c
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
	}
}

// Bodies that never end hold only the bytes that came, and only up to the
// budget: a Content-Length reserves nothing, and once the budget is spent
// a new request waits briefly and gets 429 with Retry-After, not memory.
// When the slow bodies go, the next request is served.
func TestBudgetSlowBodies(t *testing.T) {
	sink := &recordingSink{}
	const budget = 2 << 20 // 1.5 MiB for authorized requests
	h := newHandler(t, sink, ingest.Options{MaxInflightBytes: budget, MaxBodyBytes: 256 << 10, BudgetWait: 20 * time.Millisecond})
	srv := httptest.NewServer(h)
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	// 300 connections that declare 4 MiB and send one byte each: each
	// holds one read step, not its Content-Length (the old code reserved
	// min(Content-Length, 4 MiB) each, 1.2 GB in all).
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	h2 := newHandler(t, sink, ingest.Options{MaxInflightBytes: 256 << 20})
	srv2 := httptest.NewServer(h2)
	defer srv2.Close()
	for range 300 {
		conns = append(conns, slowBody(t, srv2.Listener.Addr().String(), "", 4<<20, 1))
	}
	waitFor(t, "300 bodies charged", func() bool { return h2.Stats().AuthorizedBytes >= 300 }) // at least a byte each
	if held := h2.Stats().AuthorizedBytes; held > 300*(4<<10) {
		t.Errorf("300 one-byte bodies hold %d bytes of the budget, more than a page each", held)
	}

	// Fill the small budget with bodies that are slow to end.
	for range 16 {
		conns = append(conns, slowBody(t, addr, "", 200<<10, 100<<10))
	}
	waitFor(t, "the budget spent", func() bool { return h.Stats().AuthorizedBytes > budget*3/4-200<<10 })
	res, err := http.Post(srv.URL+"/v1/events", "application/x-ndjson", strings.NewReader(strings.Repeat(`{"pad":"`+strings.Repeat("x", 1000)+`"}`+"\n", 150)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "1" {
		t.Fatalf("budget spent: %d %s (Retry-After %q), want 429 with Retry-After", res.StatusCode, b, res.Header.Get("Retry-After"))
	}
	if h.Stats().Busy == 0 {
		t.Error("the 429 is not counted as busy")
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitFor(t, "the budget given back", func() bool { st := h.Stats(); return st.AuthorizedBytes == 0 && st.PreAuthBytes == 0 })
	res, err = http.Post(srv.URL+"/v1/events", "application/x-ndjson", strings.NewReader(`{"a":1}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("after the slow bodies left: %d", res.StatusCode)
	}
}

// Requests whose key has not passed spend only the pre-auth quarter of the
// budget: while it is spent, a producer with a key in its header is
// served.
func TestBudgetPreAuthIsolated(t *testing.T) {
	sink := &recordingSink{}
	const budget = 4 << 20
	h := newHandler(t, sink, ingest.Options{Keys: []ingest.Key{{Key: "seg-key"}}, MaxInflightBytes: budget, MaxBodyBytes: 512 << 10, BudgetWait: 20 * time.Millisecond})
	srv := httptest.NewServer(h)
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 12 { // bodies that carry their key, if any, inside: read before it can be checked
		conns = append(conns, slowBody(t, addr, "", 500<<10, 200<<10))
	}
	waitFor(t, "the pre-auth budget spent", func() bool { return h.Stats().PreAuthBytes > budget/4-250<<10 })
	if st := h.Stats(); st.AuthorizedBytes != 0 {
		t.Fatalf("unauthorized bodies charged the main budget: %+v", st)
	}
	// Another request without a header key waits, then 429.
	c := slowBody(t, addr, "", 300<<10, 300<<10)
	conns = append(conns, c)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 429 {
		t.Fatalf("pre-auth budget spent: status %d, want 429", res.StatusCode)
	}
	// A producer whose key is in its header is served all the same.
	req, _ := http.NewRequest("POST", srv.URL+"/v1/events", strings.NewReader(`{"a":1}`+"\n"))
	req.Header.Set("X-Sluice-Key", "seg-key")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("a producer with a key beside the flood: %d", res.StatusCode)
	}
}
