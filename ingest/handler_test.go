package ingest_test

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
)

// recordingSink records every Ingest call and answers err.
type recordingSink struct {
	mu    sync.Mutex
	err   error
	calls []call
}

type call struct {
	class  string
	events []string
}

func (s *recordingSink) Ingest(_ context.Context, class string, events ...[]byte) error {
	c := call{class: class}
	for _, e := range events {
		c.events = append(c.events, string(e)) // copies: the handler owns the bytes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	return s.err
}

func gz(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestHandler(t *testing.T) {
	type tc struct {
		name       string
		opts       ingest.Options
		method     string // default POST
		path       string // default /v1/events
		header     map[string]string
		body       []byte
		chunked    bool // send without Content-Length
		sinkErr    error
		wantStatus int
		wantBody   string
		wantHeader map[string]string
		wantCalls  []call // nil: the sink must not be called
	}
	two := "{\"id\":1}\n{\"id\":2}\n"
	big := strings.Repeat(`{"k":"0123456789"}`+"\n", 10) // 190 bytes
	tests := []tc{
		{
			name:       "two lines",
			body:       []byte(two),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "last line without newline, CRLF, blank and white-space lines",
			body:       []byte("{\"id\":1}\r\n\r\n   \n\t{\"id\":2} "),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "bad lines rejected, good lines kept",
			body:       []byte("{\"id\":1}\n{\"id\":\n[1,2]\n\"s\"\n{\"id\":2}\n{\"a\":1}}\n"),
			wantStatus: 200,
			wantBody: `{"accepted":2,"rejected":[` +
				`{"line":2,"error":"invalid JSON at byte 6: unexpected end of input"},` +
				`{"line":3,"error":"invalid JSON at byte 0: not an object: starts with '['"},` +
				`{"line":4,"error":"invalid JSON at byte 0: not an object: starts with '\"'"},` +
				`{"line":6,"error":"invalid JSON at byte 7: trailing data after object"}]}`,
			wantCalls: []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "line over MaxEventBytes",
			opts:       ingest.Options{MaxEventBytes: 10},
			body:       []byte("{\"id\":1}\n{\"id\":12345678}\n"),
			wantStatus: 200,
			wantBody:   `{"accepted":1,"rejected":[{"line":2,"error":"event of 15 bytes, limit 10"}]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`}}},
		},
		{
			name:       "rejections beyond MaxRejected are counted",
			opts:       ingest.Options{MaxRejected: 2},
			body:       []byte("x\n{}\nx\nx\nx\nx\n"),
			wantStatus: 200,
			wantBody: `{"accepted":1,"rejected":[` +
				`{"line":1,"error":"invalid JSON at byte 0: not an object: starts with 'x'"},` +
				`{"line":3,"error":"invalid JSON at byte 0: not an object: starts with 'x'"}],"rejected_omitted":3}`,
			wantCalls: []call{{"ingest", []string{`{}`}}},
		},
		{
			name:       "class from query",
			path:       "/v1/events?class=critical",
			body:       []byte(two),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"critical", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "class from header",
			header:     map[string]string{"X-Sluice-Class": "backfill"},
			body:       []byte(two),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"backfill", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "query wins over header",
			path:       "/v1/events?class=critical",
			header:     map[string]string{"X-Sluice-Class": "backfill"},
			body:       []byte(two),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"critical", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "configured default class",
			opts:       ingest.Options{DefaultClass: "replication"},
			body:       []byte(two),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"replication", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "invalid class",
			path:       "/v1/events?class=a.b",
			body:       []byte(two),
			wantStatus: 400,
			wantBody:   `{"error":"invalid class \"a.b\": want 1-64 bytes of [A-Za-z0-9_-], not \"quarantine\""}`,
		},
		{
			name:       "reserved class",
			path:       "/v1/events?class=quarantine",
			body:       []byte(two),
			wantStatus: 400,
			wantBody:   `{"error":"invalid class \"quarantine\": want 1-64 bytes of [A-Za-z0-9_-], not \"quarantine\""}`,
		},
		{
			name:       "empty body",
			body:       []byte("\n \n"),
			wantStatus: 400,
			wantBody:   `{"error":"empty body: no events","accepted":0,"rejected":[]}`,
		},
		{
			name:       "no valid line",
			body:       []byte("1\nnull\n"),
			wantStatus: 400,
			wantBody:   `{"error":"no valid events: 2 rejected","accepted":0,"rejected":[{"line":1,"error":"invalid JSON at byte 0: not an object: starts with '1'"},{"line":2,"error":"invalid JSON at byte 0: not an object: starts with 'n'"}]}`,
		},
		{
			name:       "full: 429 with Retry-After",
			body:       []byte(two),
			sinkErr:    fmt.Errorf("%w: spool is full", aggregator.ErrFull),
			wantStatus: 429,
			wantBody:   `{"error":"class \"ingest\" is full: retry later","accepted":0,"rejected":[]}`,
			wantHeader: map[string]string{"Retry-After": "1"},
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name: "disk full: 503 with Retry-After, no path",
			body: []byte(two),
			sinkErr: fmt.Errorf("%w: %w", aggregator.ErrNoSpace,
				fmt.Errorf("spool: append ingest: disk full: write /var/lib/sluice/spool/ingest/seg-00000000000000000001.db: %w", syscall.ENOSPC)),
			wantStatus: 503,
			wantBody:   `{"error":"spool disk full","accepted":0,"rejected":[]}`,
			wantHeader: map[string]string{"Retry-After": "5"},
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "closed: 503 with Retry-After",
			body:       []byte(two),
			sinkErr:    aggregator.ErrClosed,
			wantStatus: 503,
			wantBody:   `{"error":"shutting down: retry later","accepted":0,"rejected":[]}`,
			wantHeader: map[string]string{"Retry-After": "5"},
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "dropped: 200 with dropped",
			body:       []byte("{\"id\":1}\nx\n{\"id\":2}\n"),
			sinkErr:    fmt.Errorf("%w: events dropped by overflow policy", aggregator.ErrDropped),
			wantStatus: 200,
			wantBody:   `{"accepted":0,"dropped":2,"rejected":[{"line":2,"error":"invalid JSON at byte 0: not an object: starts with 'x'"}]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "sink says too large: 413",
			body:       []byte(two),
			sinkErr:    fmt.Errorf("%w: append too large for a segment", aggregator.ErrTooLarge),
			wantStatus: 413,
			wantBody:   `{"error":"2 events of class \"ingest\" are more than the class stores at once: send smaller batches","accepted":0,"rejected":[]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "sink says invalid event: 400",
			body:       []byte(two),
			sinkErr:    fmt.Errorf("event 1: %w: not a JSON object", aggregator.ErrInvalidEvent),
			wantStatus: 400,
			wantBody:   `{"error":"event 1: aggregator: invalid event: not a JSON object","accepted":0,"rejected":[]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "other sink error: 503 with Retry-After, its message only in the log",
			body:       []byte(two),
			sinkErr:    errors.New("disk on fire at /var/lib/sluice/spool/ingest/seg-00042"),
			wantStatus: 503,
			wantBody:   `{"error":"internal error storing the events: retry later","accepted":0,"rejected":[]}`,
			wantHeader: map[string]string{"Retry-After": "5"},
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "wrong method",
			method:     "GET",
			wantStatus: 405,
			wantBody:   `{"error":"method not allowed: use POST"}`,
			wantHeader: map[string]string{"Allow": "POST"},
		},
		{
			name:       "body over limit, with Content-Length",
			opts:       ingest.Options{MaxBodyBytes: 100},
			body:       []byte(big),
			wantStatus: 413,
			wantBody:   `{"error":"request body of 190 bytes exceeds the limit of 100 bytes"}`,
		},
		{
			name:       "body over limit, chunked",
			opts:       ingest.Options{MaxBodyBytes: 100},
			body:       []byte(big),
			chunked:    true,
			wantStatus: 413,
			wantBody:   `{"error":"request body exceeds the limit of 100 bytes"}`,
		},
		{
			name:       "body at the limit",
			opts:       ingest.Options{MaxBodyBytes: 190},
			body:       []byte(big),
			chunked:    true,
			wantStatus: 200,
			wantBody:   `{"accepted":10,"rejected":[]}`,
			wantCalls:  []call{{"ingest", slices.Repeat([]string{`{"k":"0123456789"}`}, 10)}},
		},
		{
			name:       "gzip",
			header:     map[string]string{"Content-Encoding": "gzip"},
			body:       gz(t, two),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "gzip without Content-Encoding is detected",
			header:     map[string]string{"Content-Type": "text/plain"},
			body:       gz(t, two),
			wantStatus: 200,
			wantBody:   `{"accepted":2,"rejected":[]}`,
			wantCalls:  []call{{"ingest", []string{`{"id":1}`, `{"id":2}`}}},
		},
		{
			name:       "gzip over decompressed limit",
			opts:       ingest.Options{MaxDecodedBytes: 100},
			header:     map[string]string{"Content-Encoding": "gzip"},
			body:       gz(t, big),
			wantStatus: 413,
			wantBody:   `{"error":"decompressed body exceeds the limit of 100 bytes"}`,
		},
		{
			name:       "decompressed limit defaults to the body limit",
			opts:       ingest.Options{MaxBodyBytes: 100},
			header:     map[string]string{"Content-Encoding": "gzip"},
			body:       gz(t, big),
			wantStatus: 413,
			wantBody:   `{"error":"decompressed body exceeds the limit of 100 bytes"}`,
		},
		{
			name:       "bad gzip",
			header:     map[string]string{"Content-Encoding": "gzip"},
			body:       []byte(two),
			wantStatus: 400,
			wantBody:   `{"error":"gzip: invalid header"}`,
		},
		{
			name:       "truncated gzip",
			header:     map[string]string{"Content-Encoding": "gzip"},
			body:       gz(t, big)[:20],
			wantStatus: 400,
			wantBody:   `{"error":"gzip: unexpected EOF"}`,
		},
		{
			name:       "unsupported encoding",
			header:     map[string]string{"Content-Encoding": "br"},
			body:       []byte(two),
			wantStatus: 415,
			wantBody:   `{"error":"unsupported Content-Encoding \"br\": want gzip, x-gzip, deflate, zstd or identity"}`,
		},
		{
			name:       "healthz",
			method:     "GET",
			path:       "/healthz",
			wantStatus: 200,
			wantBody:   "ok",
		},
		{
			name:       "healthz wrong method",
			method:     "POST",
			path:       "/healthz",
			wantStatus: 405,
			wantBody:   `{"error":"method not allowed: use GET, HEAD"}`,
			wantHeader: map[string]string{"Allow": "GET, HEAD"},
		},
		{
			name:       "unknown path",
			method:     "GET",
			path:       "/v2/events",
			wantStatus: 404,
			wantBody:   `{"error":"no such path: /v2/events"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &recordingSink{err: tt.sinkErr}
			opts := tt.opts
			opts.NoStamp = true // bodies compared byte for byte; stamping has its own test
			var logs syncLog
			opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			h, err := ingest.NewHandler(sink, opts)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			method, path := cmp.Or(tt.method, "POST"), cmp.Or(tt.path, "/v1/events")
			var body io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req, err := http.NewRequest(method, srv.URL+path, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d (body %s)", res.StatusCode, tt.wantStatus, got)
			}
			if g := strings.TrimSpace(string(got)); g != tt.wantBody {
				t.Errorf("body\n%s\nwant\n%s", g, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if g := res.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			if !slices.EqualFunc(sink.calls, tt.wantCalls, func(a, b call) bool {
				return a.class == b.class && slices.Equal(a.events, b.events)
			}) {
				t.Errorf("sink calls %q, want %q", sink.calls, tt.wantCalls)
			}
			// Only an unexpected sink error is logged: the others are the
			// producer's business, or logged once by the node.
			unexpected := strings.HasPrefix(tt.name, "other sink error")
			if logged := logs.String(); unexpected != strings.Contains(logged, "ingest failed") {
				t.Errorf("log %q for status %d", logged, tt.wantStatus)
			}
		})
	}
}

// syncLog collects log output written from the server's goroutines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
