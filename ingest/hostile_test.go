package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/ingest"
)

// serverTimeouts are the timeouts of the http.Server in front of the
// handler.
type serverTimeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

// sluiceRunTimeouts reads the timeouts `sluice run` gives its http.Server
// from cmd/sluice/node.go, so that this test serves the handler exactly as
// the binary does and follows any change there.
func sluiceRunTimeouts(t *testing.T) serverTimeouts {
	t.Helper()
	path := filepath.Join("..", "cmd", "sluice", "node.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatalf("reading sluice run's server timeouts: %v", err)
	}
	var lits []*ast.CompositeLit
	ast.Inspect(f, func(n ast.Node) bool {
		if cl, ok := n.(*ast.CompositeLit); ok {
			if sel, ok := cl.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Server" {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "http" {
					lits = append(lits, cl)
				}
			}
		}
		return true
	})
	if len(lits) != 1 {
		t.Fatalf("%s: %d http.Server literals; want the one of sluice run", path, len(lits))
	}
	var st serverTimeouts
	fields := map[string]*time.Duration{
		"ReadHeaderTimeout": &st.ReadHeader, "ReadTimeout": &st.Read,
		"WriteTimeout": &st.Write, "IdleTimeout": &st.Idle,
	}
	for _, e := range lits[0].Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, _ := kv.Key.(*ast.Ident)
		if key == nil || fields[key.Name] == nil {
			continue
		}
		d, ok := constDuration(kv.Value)
		if !ok {
			t.Fatalf("%s: %s is not a constant duration this test can read", path, key.Name)
		}
		*fields[key.Name] = d
	}
	// Without these a slow client holds a connection and its goroutine
	// for as long as it likes.
	if st.ReadHeader <= 0 || st.Read <= 0 {
		t.Fatalf("sluice run's server has ReadHeaderTimeout %v, ReadTimeout %v: a slow body is never cut off", st.ReadHeader, st.Read)
	}
	return st
}

// constDuration evaluates a constant duration such as 10 * time.Second
// or time.Minute + 10*time.Second.
func constDuration(e ast.Expr) (time.Duration, bool) {
	switch x := e.(type) {
	case *ast.ParenExpr:
		return constDuration(x.X)
	case *ast.BasicLit:
		if x.Kind != token.INT {
			return 0, false
		}
		n, err := strconv.ParseInt(x.Value, 0, 64)
		return time.Duration(n), err == nil
	case *ast.SelectorExpr:
		if pkg, ok := x.X.(*ast.Ident); !ok || pkg.Name != "time" {
			return 0, false
		}
		unit, ok := map[string]time.Duration{
			"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
			"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
		}[x.Sel.Name]
		return unit, ok
	case *ast.BinaryExpr:
		a, ok1 := constDuration(x.X)
		b, ok2 := constDuration(x.Y)
		if !ok1 || !ok2 {
			return 0, false
		}
		switch x.Op {
		case token.MUL:
			return a * b, true
		case token.ADD:
			return a + b, true
		case token.SUB:
			return a - b, true
		}
	}
	return 0, false
}

// hostileRow is one malformed request. The body is written on a raw TCP
// connection, so that it can lie about its length, stop, or crawl.
type hostileRow struct {
	name   string
	method string   // default POST
	path   string   // default /v1/events
	header []string // "Name: value"
	body   []byte
	// length is the Content-Length to declare when it is not len(body):
	// the connection then stays open after body, as a stalled client's.
	length  int64
	chunked bool // Transfer-Encoding: chunked instead of a Content-Length
	// trickle, when > 0, sends one more byte every trickle after body, for
	// as long as the server reads (slowloris); trickleHead does so in the
	// header section, which then never ends.
	trickle     time.Duration
	trickleHead bool

	wantStatus   int      // 0: cut off by the server's timeout (see checkHostile)
	wantErr      string   // in the answer's "error"
	wantRejected []string // in each "rejected" error, in order
	want         []string // the events that must reach the stream, as sent
	// notBefore is the earliest the answer (or the close) may come, from
	// the dial: the server's timeout, for rows that wait for it. How soon
	// it comes is not checked (no timing assertions here); the client
	// gives up notBefore + hangGuard after the dial.
	notBefore time.Duration
}

// hangGuard is how long past a row's notBefore the client waits for the
// answer or the close: far above what the slowest honest run needs, so
// that it only turns a server that never answers into a failure.
const hangGuard = 2 * time.Minute

// slow reports whether r waits for the server's timeouts: it crawls, or
// declares a length within the body limit and stalls.
func (r *hostileRow) slow() bool {
	return r.trickle > 0 || r.trickleHead || r.length > 0 && r.length <= ingest.DefaultMaxBodyBytes
}

// hostileResult is what the client saw.
type hostileResult struct {
	status    int
	answer    hostileAnswer
	raw       string
	err       error // reading the answer
	took      time.Duration
	allocated uint64 // bytes allocated by the process while the row ran (fast rows only)
}

type hostileAnswer struct {
	Error    string `json:"error"`
	Accepted int    `json:"accepted"`
	Rejected []struct {
		Line  int    `json:"line"`
		Error string `json:"error"`
	} `json:"rejected"`
}

// hostileEvent is a good event of row, tagged so that the stream can be
// split by row.
func hostileEvent(row string, i int) string {
	return fmt.Sprintf(`{"row":%q,"i":%d}`, row, i)
}

func ndjsonLines(ls ...string) []byte { return []byte(strings.Join(ls, "\n") + "\n") }

// TestHostileInput sends malformed, oversized, compressed-bomb and slow
// requests to the handler served as `sluice run` serves it (the same
// http.Server timeouts, a real node with its bbolt spool and JetStream).
// Each gets its precise 4xx, or for slow clients the connection is cut by
// the server's timeout; the good events beside bad ones, where the
// endpoint keeps them, reach the stream exactly; nothing panics; the
// memory each request allocates is bounded by a small multiple of the
// body limit, none is retained after, and no goroutine outlives its
// connection.
func TestHostileInput(t *testing.T) {
	timeouts := sluiceRunTimeouts(t)
	t.Logf("sluice run's server timeouts: %+v", timeouts)
	nc, node := replayNode(t)
	h, err := ingest.NewHandler(node, ingest.Options{Node: "edge-hostile"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: timeouts.ReadHeader,
		ReadTimeout:       timeouts.Read,
		WriteTimeout:      timeouts.Write,
		IdleTimeout:       timeouts.Idle,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-served
	}()
	addr := ln.Addr().String()

	const (
		limit = ingest.DefaultMaxBodyBytes
		// maxAlloc bounds what the process allocates while one request
		// runs: 12 times the body limit.
		maxAlloc = 12 * limit
		// maxRetained bounds how much the live heap may grow over the
		// whole table.
		maxRetained = 16 << 20
	)
	rows := hostileRows(t, timeouts)

	// The baselines, with the node, JetStream and the server running and
	// warm: the class's lane and the stream exist.
	warm := hostileRow{name: "warm-up", body: ndjsonLines(hostileEvent("warm", 1)), wantStatus: 200, want: []string{hostileEvent("warm", 1)}}
	if res := sendHostile(addr, &warm); res.status != 200 {
		t.Fatalf("a good request: %d %s %v", res.status, res.raw, res.err)
	}
	rows = append(rows, warm) // for its event in the stream; not sent again
	heapBefore := settledHeap()
	goroutinesBefore := runtime.NumGoroutine()

	var mu sync.Mutex
	ran := map[string]bool{warm.name: true} // rows whose events to expect
	for i := range rows {
		r := &rows[i]
		if r.name == warm.name || r.slow() {
			continue
		}
		t.Run(r.name, func(t *testing.T) {
			mu.Lock()
			ran[r.name] = true
			mu.Unlock()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			res := sendHostile(addr, r)
			runtime.ReadMemStats(&m1)
			res.allocated = m1.TotalAlloc - m0.TotalAlloc
			checkHostile(t, r, res)
			// Everything the process allocated while the row ran, client
			// included: the body, its decoded copy, buffers growing by
			// doubling to twice the limit, the events. A few times the
			// body limit, never a function of the number of lines.
			if res.allocated > maxAlloc {
				t.Errorf("allocated %d MiB while it ran; want at most %d MiB", res.allocated>>20, maxAlloc>>20)
			}
		})
	}
	// Slow rows last as long as the server's timeouts: they run together.
	t.Run("slow", func(t *testing.T) {
		for i := range rows {
			if r := &rows[i]; r.slow() {
				t.Run(r.name, func(t *testing.T) {
					t.Parallel()
					mu.Lock()
					ran[r.name] = true
					mu.Unlock()
					checkHostile(t, r, sendHostile(addr, r))
				})
			}
		}
	})

	// Nothing stays behind: no connection's goroutine, and the heap is
	// back to where it was but for the events' bookkeeping.
	waitConnGoroutines(t)
	if grown := int64(settledHeap()) - int64(heapBefore); grown > maxRetained {
		t.Errorf("the heap grew by %d MiB over the table; want at most %d MiB", grown>>20, maxRetained>>20)
	} else {
		t.Logf("heap after the table: %+d KiB", grown>>10)
	}
	t.Logf("goroutines: %d before the table, %d after (the node's and JetStream's come and go)", goroutinesBefore, runtime.NumGoroutine())

	// The stream holds exactly the good events, each once, in order.
	if err := node.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, ev := range readStream(t, nc) {
		orig, ok := unstamp(string(ev), "edge-hostile")
		if !ok {
			t.Errorf("stream event without the node's stamp: %.200s", ev)
			continue
		}
		var tag struct{ Row string }
		if err := json.Unmarshal([]byte(orig), &tag); err != nil || tag.Row == "" {
			t.Errorf("stream event of no row: %.200s", orig)
			continue
		}
		got[tag.Row] = append(got[tag.Row], orig)
	}
	rowEvents := map[string][]string{}
	for _, r := range rows {
		if !ran[r.name] {
			continue
		}
		for _, ev := range r.want {
			var tag struct{ Row string }
			json.Unmarshal([]byte(ev), &tag)
			rowEvents[tag.Row] = append(rowEvents[tag.Row], ev)
		}
	}
	for row, evs := range got {
		if !slices.Equal(evs, rowEvents[row]) {
			t.Errorf("row %q: the stream holds\n%s\nwant\n%s", row, strings.Join(evs, "\n"), strings.Join(rowEvents[row], "\n"))
		}
	}
	for row, evs := range rowEvents {
		if got[row] == nil {
			t.Errorf("row %q: none of its %d good events reached the stream", row, len(evs))
		}
	}
}

// hostileRows builds the table. Good events are tagged with a short row id
// (see hostileEvent).
func hostileRows(t *testing.T, to serverTimeouts) []hostileRow {
	const (
		limit      = ingest.DefaultMaxBodyBytes
		eventLimit = ingest.DefaultMaxEventBytes
	)
	ev := hostileEvent
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	mib := make([]byte, 1<<20)
	var gzipBomb, zstdBomb []byte
	{
		member := gzipBytes(t, mib) // about 1 KiB
		gzipBomb = bytes.Repeat(member, 1024)
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
		if err != nil {
			t.Fatal(err)
		}
		frame := enc.EncodeAll(mib, nil) // tens of bytes
		enc.Close()
		zstdBomb = bytes.Repeat(frame, 1024)
	}
	wideWindow := func() []byte { // a frame whose window is 32 MiB
		enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(32<<20), zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		return enc.EncodeAll(bytes.Repeat([]byte("0123456789abcdef"), 1<<20), nil)
	}()
	good := gzipBytes(t, ndjsonLines(ev("gz", 1), ev("gz", 2)))
	huge := `{"row":"huge","pad":"` + strings.Repeat("x", eventLimit) + `"}`
	tooMany := bytes.Repeat([]byte(`{"row":"many"}`+"\n"), ingest.DefaultMaxEvents+1)
	over := bytes.Repeat([]byte(`{"row":"over","pad":"`+strings.Repeat("x", 1000)+`"}`+"\n"), limit/1000+10)

	return []hostileRow{
		// Invalid JSON: a bad line or element costs only itself; a body
		// that is not the endpoint's envelope is refused whole.
		{
			name:         "ndjson with broken lines",
			body:         ndjsonLines(ev("nd", 1), `{"row":"nd","i":`, `{"row":"nd"}}`, `[1,2]`, ev("nd", 2)),
			wantStatus:   200,
			wantRejected: []string{"line 2: invalid JSON", "line 3: invalid JSON", "line 4: invalid JSON"},
			want:         []string{ev("nd", 1), ev("nd", 2)},
		},
		{
			name:       "array cut short",
			body:       []byte(`[` + ev("arr", 1) + `,{"row":"arr"`),
			wantStatus: 400,
			wantErr:    "events: invalid JSON at byte",
		},
		{
			name:         "array with bad elements",
			body:         []byte(`[` + ev("arr2", 1) + `,"x",{"a":tru},` + ev("arr2", 2) + `]`),
			wantStatus:   200,
			wantRejected: []string{"line 2: invalid JSON", "line 3: invalid JSON"},
			want:         []string{ev("arr2", 1), ev("arr2", 2)},
		},
		{
			name:       "segment batch cut short",
			path:       "/v1/batch",
			body:       []byte(`{"batch":[{"type":"track","row":"seg0"`),
			wantStatus: 400,
			wantErr:    "segment: invalid JSON",
		},
		{
			name:       "posthog not JSON",
			path:       "/batch/",
			body:       []byte(`api_key=k&event=e`),
			wantStatus: 400,
			wantErr:    "posthog:",
		},
		{
			name:       "snowplow envelope cut short",
			path:       "/com.snowplowanalytics.snowplow/tp2",
			body:       []byte(`{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[{"e":"pv"`),
			wantStatus: 400,
			wantErr:    "snowplow: invalid JSON",
		},
		// Deep nesting is refused without recursion; the neighbours stay.
		{
			name:       "100k open brackets",
			body:       bytes.Repeat([]byte("["), 100_000),
			wantStatus: 400,
			wantErr:    "events: invalid JSON",
		},
		{
			name:         "deeply nested line between good lines",
			body:         ndjsonLines(ev("deep", 1), `{"row":"deep","a":`+deep(100_000)+`}`, `{"row":"deep","o":`+strings.Repeat(`{"o":`, 50_000)+`1`+strings.Repeat("}", 50_000)+`}`, ev("deep", 2)),
			wantStatus:   200,
			wantRejected: []string{"line 2: ", "line 3: "},
			want:         []string{ev("deep", 1), ev("deep", 2)},
		},
		{
			name:         "deeply nested segment message",
			path:         "/v1/batch",
			body:         []byte(`{"batch":[{"type":"track","row":"segdeep","i":1},{"type":"track","p":` + deep(100_000) + `},{"type":"track","row":"segdeep","i":2}]}`),
			wantStatus:   200,
			wantRejected: []string{"line 2: "},
			want:         []string{`{"type":"track","row":"segdeep","i":1}`, `{"type":"track","row":"segdeep","i":2}`},
		},
		// Strings must be valid UTF-8 without raw control characters.
		{
			name: "invalid UTF-8 in strings",
			body: ndjsonLines(ev("utf8", 1),
				"{\"row\":\"utf8\",\"s\":\"\xff\xfe\"}",                     // not UTF-8 at all
				"{\"row\":\"utf8\",\"s\":\"\xc0\xaf\"}",                     // overlong '/'
				"{\"row\":\"utf8\",\"s\":\"\xed\xa0\x80\"}",                 // a UTF-16 surrogate
				"{\"row\":\"utf8\",\"\xe2\x82\":1}",                         // a key cut mid-rune
				"{\"row\":\"utf8\",\"s\":\"caf\xc3\xa9 \xf0\x9f\x8c\x8a\"}", // valid: kept
				ev("utf8", 2)),
			wantStatus:   200,
			wantRejected: []string{"line 2: ", "line 3: ", "line 4: ", "line 5: "},
			want:         []string{ev("utf8", 1), "{\"row\":\"utf8\",\"s\":\"caf\xc3\xa9 \xf0\x9f\x8c\x8a\"}", ev("utf8", 2)},
		},
		{
			name:         "NUL bytes",
			body:         ndjsonLines(ev("nul", 1), "{\"row\":\"nul\",\"s\":\"a\x00b\"}", ev("nul", 2)+"\x00", "\x00\x00\x00\x00", `{"row":"nul","s":"a\u0000b"}`),
			wantStatus:   200,
			wantRejected: []string{"line 2: ", "line 3: ", "line 4: "},
			want:         []string{ev("nul", 1), `{"row":"nul","s":"a\u0000b"}`},
		},
		{
			name:       "a body of NULs",
			body:       make([]byte, 64<<10),
			wantStatus: 400,
			wantErr:    "no valid events: 1 rejected",
		},
		// Content-Type is never what decides: a good body with a wrong one
		// is kept, a form body is not JSON.
		{
			name:       "NDJSON labelled image/png",
			header:     []string{"Content-Type: image/png"},
			body:       ndjsonLines(ev("png", 1), ev("png", 2)),
			wantStatus: 200,
			want:       []string{ev("png", 1), ev("png", 2)},
		},
		{
			// Line by line, as NDJSON with CRLF: the part's one JSON line
			// is an event.
			name:         "multipart form",
			header:       []string{"Content-Type: multipart/form-data; boundary=XyZ"},
			body:         []byte("--XyZ\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n" + ev("form", 1) + "\r\n--XyZ--\r\n"),
			wantStatus:   200,
			wantRejected: []string{"line 1: invalid JSON", "line 2: invalid JSON", "line 5: invalid JSON"},
			want:         []string{ev("form", 1)},
		},
		{
			name:       "urlencoded form to segment",
			path:       "/v1/track",
			header:     []string{"Content-Type: application/x-www-form-urlencoded"},
			body:       []byte("event=x&userId=u"),
			wantStatus: 400,
			wantErr:    "segment: body is not a JSON object",
		},
		// Compressed bodies: bombs stop at the decoded limit, broken
		// streams are a 400 naming the coding.
		{
			name:       "gzip bomb: 1 GiB of zeros",
			header:     []string{"Content-Encoding: gzip"},
			body:       gzipBomb,
			wantStatus: 413,
			wantErr:    fmt.Sprintf("decompressed body exceeds the limit of %d bytes", limit),
		},
		{
			name:       "gzip bomb, sniffed without Content-Encoding",
			body:       gzipBomb,
			wantStatus: 413,
			wantErr:    fmt.Sprintf("decompressed body exceeds the limit of %d bytes", limit),
		},
		{
			name:       "gzip bomb inside gzip",
			header:     []string{"Content-Encoding: gzip, gzip"},
			body:       gzipBytes(t, gzipBomb),
			wantStatus: 413,
			wantErr:    fmt.Sprintf("decompressed body exceeds the limit of %d bytes", limit),
		},
		{
			name:       "zstd bomb: 1 GiB of zeros",
			header:     []string{"Content-Encoding: zstd"},
			body:       zstdBomb,
			wantStatus: 413,
			wantErr:    fmt.Sprintf("decompressed body exceeds the limit of %d bytes", limit),
		},
		{
			name:       "zstd frame with a 32 MiB window",
			header:     []string{"Content-Encoding: zstd"},
			body:       wideWindow,
			wantStatus: 400,
			wantErr:    "zstd: window size exceeds the limit of 8388608 bytes",
		},
		{
			name:       "truncated gzip",
			header:     []string{"Content-Encoding: gzip"},
			body:       good[:len(good)-6],
			wantStatus: 400,
			wantErr:    "gzip: unexpected EOF",
		},
		{
			name:       "gzip with a bad checksum",
			header:     []string{"Content-Encoding: gzip"},
			body:       append(slices.Clone(good[:len(good)-8]), 0, 0, 0, 0, good[len(good)-4], good[len(good)-3], good[len(good)-2], good[len(good)-1]),
			wantStatus: 400,
			wantErr:    "gzip: invalid checksum",
		},
		{
			name:       "valid gzip of invalid JSON",
			header:     []string{"Content-Encoding: gzip"},
			body:       gzipBytes(t, []byte("{\"row\":\"gzbad\",\n{{{\nnot json\n")),
			wantStatus: 400,
			wantErr:    "no valid events: 3 rejected",
		},
		{
			name:       "valid gzip of a broken segment batch",
			path:       "/v1/batch",
			header:     []string{"Content-Encoding: gzip"},
			body:       gzipBytes(t, []byte(`{"batch":[{"type":"track"},`)),
			wantStatus: 400,
			wantErr:    "segment: invalid JSON",
		},
		{
			name:       "good gzip still works",
			header:     []string{"Content-Encoding: gzip"},
			body:       good,
			wantStatus: 200,
			want:       []string{ev("gz", 1), ev("gz", 2)},
		},
		// Size limits.
		{
			name:         "a line over the event limit between good lines",
			body:         ndjsonLines(ev("huge", 1), huge, ev("huge", 2)),
			wantStatus:   200,
			wantRejected: []string{fmt.Sprintf("line 2: event of %d bytes, limit %d", len(huge), eventLimit)},
			want:         []string{ev("huge", 1), ev("huge", 2)},
		},
		{
			name:       "one event too many",
			body:       tooMany,
			wantStatus: 413,
			wantErr:    fmt.Sprintf("batch of %d events exceeds the limit of %d events", ingest.DefaultMaxEvents+1, ingest.DefaultMaxEvents),
		},
		{
			name:       "body over the limit, Content-Length",
			body:       over,
			wantStatus: 413,
			wantErr:    fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", len(over), limit),
		},
		{
			name:       "body over the limit, chunked",
			body:       over,
			chunked:    true,
			wantStatus: 413,
			wantErr:    fmt.Sprintf("request body exceeds the limit of %d bytes", limit),
		},
		{
			name:       "2 GB declared, 20 bytes sent",
			body:       []byte(ev("liar", 1)),
			length:     2 << 30,
			wantStatus: 413,
			wantErr:    fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes", 2<<30, limit),
		},
		// Tiny events fill a body at the limit with millions of them: the
		// request is refused whole (over MaxEvents) at a cost bounded by
		// the body, not by the number of lines.
		{
			name:       "8 MiB of empty objects",
			body:       bytes.Repeat([]byte("{}\n"), limit/3),
			wantStatus: 413,
			wantErr:    fmt.Sprintf("exceeds the limit of %d events", ingest.DefaultMaxEvents),
		},
		{
			name:       "8 MiB of bad lines",
			body:       bytes.Repeat([]byte("x\n"), limit/2),
			wantStatus: 413,
			wantErr:    fmt.Sprintf("exceeds the limit of %d events", ingest.DefaultMaxEvents),
		},
		{
			name:       "8 MiB array of empty objects",
			body:       append(append([]byte("["), bytes.Repeat([]byte("{},"), limit/3-1)...), "{}]"...),
			wantStatus: 413,
			wantErr:    fmt.Sprintf("exceeds the limit of %d events", ingest.DefaultMaxEvents),
		},
		{
			name:       "8 MiB segment batch of bad elements",
			path:       "/v1/batch",
			body:       append(append([]byte(`{"batch":[`), bytes.Repeat([]byte("1,"), limit/2-8)...), "1]}"...),
			wantStatus: 413,
			wantErr:    fmt.Sprintf("exceeds the limit of %d events", ingest.DefaultMaxEvents),
		},
		{
			name:       "pixel with a 2 MiB query",
			method:     "GET",
			path:       "/i?e=pv&url=" + strings.Repeat("a", 2<<20),
			wantStatus: 431,
		},
		// Bodies that never end: answered by ReadTimeout (the server reads
		// no further, its goroutine is gone), headers that never end by
		// ReadHeaderTimeout, neither before.
		{
			name:      "slowloris body",
			body:      []byte(ev("slow", 1) + "\n"),
			length:    1 << 20,
			trickle:   time.Second,
			notBefore: to.Read - time.Second,
		},
		{
			name:      "stalled body",
			body:      []byte(ev("stall", 1) + "\n"),
			length:    4 << 20,
			notBefore: to.Read - time.Second,
		},
		{
			name:        "slowloris headers",
			trickleHead: true,
			trickle:     time.Second,
			notBefore:   to.ReadHeader - time.Second,
		},
	}
}

// sendHostile sends r on a new connection and reads the answer. It returns
// once the connection is closed and its writer has stopped.
func sendHostile(addr string, r *hostileRow) (res hostileResult) {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		res.err = err
		return res
	}
	defer conn.Close()
	// The client's own bound, far past the row's notBefore: a server that
	// never answers fails the row instead of hanging the test.
	conn.SetDeadline(start.Add(r.notBefore + hangGuard))
	done := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		writeHostile(conn, r, done)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		res.status, res.raw = resp.StatusCode, string(body)
		if resp.Header.Get("Content-Type") == "application/json" {
			if jerr := json.Unmarshal(body, &res.answer); jerr != nil {
				err = fmt.Errorf("answer is not JSON: %v", jerr)
			}
		}
	}
	res.took = time.Since(start)
	res.err = err
	close(done)
	conn.Close()
	<-wrote
	return res
}

// writeHostile writes r's request to w until it is done, w fails or done
// is closed.
func writeHostile(w io.Writer, r *hostileRow, done <-chan struct{}) {
	method, path := r.method, r.path
	if method == "" {
		method = "POST"
	}
	if path == "" {
		path = "/v1/events"
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: sluice.test\r\nConnection: close\r\n", method, path)
	for _, h := range r.header {
		head.WriteString(h + "\r\n")
	}
	tick := func(b []byte) bool { // one byte per r.trickle, until done
		t := time.NewTicker(r.trickle)
		defer t.Stop()
		for {
			select {
			case <-done:
				return false
			case <-t.C:
				if _, err := w.Write(b); err != nil {
					return false
				}
			}
		}
	}
	if r.trickleHead {
		head.WriteString("X-Slow: ")
		if _, err := w.Write(head.Bytes()); err != nil {
			return
		}
		tick([]byte("a"))
		return
	}
	switch {
	case r.chunked:
		head.WriteString("Transfer-Encoding: chunked\r\n")
	case r.length > 0:
		fmt.Fprintf(&head, "Content-Length: %d\r\n", r.length)
	case method != "GET":
		fmt.Fprintf(&head, "Content-Length: %d\r\n", len(r.body))
	}
	head.WriteString("\r\n")
	if _, err := w.Write(head.Bytes()); err != nil {
		return
	}
	if r.chunked {
		for b := r.body; len(b) > 0; {
			n := min(len(b), 64<<10)
			if _, err := fmt.Fprintf(w, "%x\r\n", n); err != nil {
				return
			}
			if _, err := w.Write(b[:n]); err != nil {
				return
			}
			if _, err := io.WriteString(w, "\r\n"); err != nil {
				return
			}
			b = b[n:]
		}
		io.WriteString(w, "0\r\n\r\n")
		return
	}
	if _, err := w.Write(r.body); err != nil {
		return
	}
	switch {
	case r.trickle > 0:
		tick([]byte(" "))
	case r.length > 0:
		<-done // stalled: send nothing more, keep the connection
	}
}

func checkHostile(t *testing.T, r *hostileRow, res hostileResult) {
	t.Helper()
	t.Logf("%d after %v, allocated %d KiB: %.300s (%v)", res.status, res.took.Round(time.Millisecond), res.allocated>>10, strings.TrimSpace(res.raw), res.err)
	if res.took < r.notBefore {
		t.Errorf("answered after %v; not before %v (the server's timeout)", res.took.Round(time.Millisecond), r.notBefore)
	}
	if r.wantStatus == 0 {
		// Cut off by the server's timeout: net/http closes the connection
		// without an answer, or the handler answers 408 if its write
		// deadline still allows it.
		if ne, ok := res.err.(net.Error); ok && ne.Timeout() {
			t.Errorf("hang guard: the server neither answered nor closed the connection in %v: %v", r.notBefore+hangGuard, res.err)
		}
		if res.status != 0 && res.status != http.StatusRequestTimeout {
			t.Errorf("status %d; want the connection closed, or 408", res.status)
		}
		return
	}
	if res.err != nil {
		t.Fatalf("no answer (a timeout here is the hang guard): %v; want %d", res.err, r.wantStatus)
	}
	if res.status != r.wantStatus {
		t.Errorf("status %d; want %d", res.status, r.wantStatus)
	}
	if !strings.Contains(res.answer.Error, r.wantErr) {
		t.Errorf("error %q; want it to contain %q", res.answer.Error, r.wantErr)
	}
	if res.status == 200 && res.answer.Accepted != len(r.want) {
		t.Errorf("accepted %d; want %d", res.answer.Accepted, len(r.want))
	}
	if res.status == 200 || len(r.wantRejected) > 0 {
		var got []string
		for _, rej := range res.answer.Rejected {
			got = append(got, fmt.Sprintf("line %d: %s", rej.Line, rej.Error))
		}
		ok := len(got) == len(r.wantRejected)
		for i := 0; ok && i < len(got); i++ {
			ok = strings.Contains(got[i], r.wantRejected[i])
		}
		if !ok {
			t.Errorf("rejected %q; want %q", got, r.wantRejected)
		}
	}
}

// unstamp removes the stamp the handler puts first in every event of node.
func unstamp(ev, node string) (string, bool) {
	rest, ok := strings.CutPrefix(ev, `{"`+ingest.StampReceivedAt+`":"`)
	if !ok {
		return "", false
	}
	_, rest, ok = strings.Cut(rest, `","sluiceNode":"`+node+`"`)
	switch {
	case !ok:
		return "", false
	case strings.HasPrefix(rest, ","):
		return "{" + rest[1:], true
	case rest == "}":
		return "{}", true
	}
	return "", false
}

// settledHeap returns the live heap once garbage and pooled buffers are
// collected (a sync.Pool survives one collection).
func settledHeap() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// waitConnGoroutines waits for every goroutine serving or sending a
// request to end, and fails with their stacks if they are still there
// after hangGuard: a connection the server never let go of.
func waitConnGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var held []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "net/http.(*conn).serve") || strings.Contains(g, "sluice/ingest.") ||
				strings.Contains(g, "ingest_test.sendHostile") || strings.Contains(g, "ingest_test.writeHostile") {
				held = append(held, g)
			}
		}
		if len(held) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("hang guard: %d goroutines of connections are still there %v after the table:\n%s", len(held), hangGuard, strings.Join(held, "\n\n"))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
