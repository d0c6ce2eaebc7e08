package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/internal/blast"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/jsonx"
	"github.com/sluicehq/sluice/spool"
	"github.com/sluicehq/sluice/wire"
)

// The modes of RunHTTPIngest: how the load generator posts its events.
const (
	// ModeNDJSON posts NDJSON bodies to POST /v1/events.
	ModeNDJSON = "ndjson"
	// ModeNDJSONGzip posts the same bodies gzipped (Content-Encoding: gzip).
	ModeNDJSONGzip = "ndjson-gzip"
	// ModeSegmentBatch posts Segment HTTP API batches,
	// {"batch":[…],"writeKey":…,"sentAt":…}, to POST /v1/batch. Every
	// message gets a messageId unique in the run, so the handler's dedup
	// window sees no repeats.
	ModeSegmentBatch = "segment-batch"
)

// HTTPModes lists the modes, in the order the benchmark runs them.
var HTTPModes = []string{ModeNDJSON, ModeNDJSONGzip, ModeSegmentBatch}

// httpNode is the name the handler stamps on events ("sluiceNode") and
// the node puts in batch headers.
const httpNode = "bench"

// HTTPConfig configures RunHTTPIngest.
type HTTPConfig struct {
	Mode       string // one of the Mode constants
	Clients    int    // concurrent clients, each with its own keep-alive connection; default 32
	PerRequest int    // events per request body; default 100
	Events     int    // measured events, rounded down to whole requests; default 2,000,000
	Warmup     int    // events sent before the measurement, rounded down to whole requests; default 0
	// Node adjusts the node; Dir, Conn and Node are set by RunHTTPIngest.
	Node aggregator.Options
}

func (c *HTTPConfig) setDefaults() {
	if c.Clients <= 0 {
		c.Clients = 32
	}
	if c.PerRequest <= 0 {
		c.PerRequest = 100
	}
	if c.Events <= 0 {
		c.Events = 2_000_000
	}
}

// HTTPResult is one measured HTTP ingest run.
type HTTPResult struct {
	Mode      string
	Events    int           // events answered 200 in the measurement (all durable)
	Requests  int           // requests in the measurement
	Elapsed   time.Duration // first measured request sent to last answer read
	Latency   []time.Duration
	BodyBytes int64 // request body bytes sent in the measurement, as on the wire
	RawBytes  int64 // the same bodies decoded
	CPU       time.Duration
	NATSCPU   time.Duration // the NATS server child's CPU time in the measurement
	// Drain is the time from the last answer to JetStream's ack of the
	// last event: how far shipping lagged behind ingest.
	Drain time.Duration
	// Verified from the stream after the run, warm-up included.
	Stored   int // events read back and checked
	Batches  int // stream messages
	MaxLevel int // highest degradation level a batch was shipped at
	// Degraded counts the batches the shaper shipped with fields dropped
	// (Sluice-Dropped-Fields), and DegradedEvents their events, which are
	// checked by messageId and count rather than byte for byte.
	Degraded, DegradedEvents int
}

// EventsPerSec is the rate of events acknowledged as durable.
func (r HTTPResult) EventsPerSec() float64 { return float64(r.Events) / r.Elapsed.Seconds() }

// LatencyQuantile returns the q-quantile of the request latencies.
func (r HTTPResult) LatencyQuantile(q float64) time.Duration {
	if len(r.Latency) == 0 {
		return 0
	}
	s := r.Latency
	if !slices.IsSorted(s) {
		s = slices.Clone(s)
		slices.Sort(s)
	}
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// CPUCores is this process's CPU time (node, handler, HTTP server and load
// generator) per second of the measurement.
func (r HTTPResult) CPUCores() float64 { return r.CPU.Seconds() / r.Elapsed.Seconds() }

// NATSCPUCores is the NATS server's CPU time per second of the measurement.
func (r HTTPResult) NATSCPUCores() float64 { return r.NATSCPU.Seconds() / r.Elapsed.Seconds() }

// RunHTTPIngest measures the HTTP ingest path on loopback: a node spooling
// in dir with fsync always and publishing to srv, behind an ingest.Handler
// served by net/http on 127.0.0.1, and cfg.Clients keep-alive clients in
// this process posting pre-built bodies of cfg.PerRequest events cycled
// from events. Every answer must be 200 with every event accepted. After
// the measurement it waits for JetStream to acknowledge every event, then
// reads the whole stream back and checks each event against what was sent:
// the handler's stamp, the bytes, and the count of every distinct event
// (in ModeSegmentBatch, that each unique messageId arrived exactly once).
func RunHTTPIngest(ctx context.Context, srv *blast.Server, dir string, events [][]byte, cfg HTTPConfig) (HTTPResult, error) {
	cfg.setDefaults()
	pl, err := buildPayload(cfg.Mode, events, cfg.PerRequest, cfg.Mode == ModeSegmentBatch)
	if err != nil {
		return HTTPResult{}, err
	}
	nc, err := Connect(srv.URL)
	if err != nil {
		return HTTPResult{}, err
	}
	defer nc.Close()
	opts := cfg.Node
	opts.Dir, opts.Conn, opts.Node = dir, nc, httpNode
	node, err := aggregator.New(opts)
	if err != nil {
		return HTTPResult{}, err
	}
	defer node.Close()
	h, err := ingest.NewHandler(node, ingest.Options{Node: httpNode})
	if err != nil {
		return HTTPResult{}, err
	}
	addr, stop, err := serveLoopback(h)
	if err != nil {
		return HTTPResult{}, err
	}
	defer stop()

	gen := newLoadGen("http://"+addr+pl.path, pl, cfg.Clients)
	defer gen.close()
	warm := cfg.Warmup / cfg.PerRequest
	reqs := cfg.Events / cfg.PerRequest
	if reqs == 0 {
		return HTTPResult{}, fmt.Errorf("bench: %d events is less than one request of %d", cfg.Events, cfg.PerRequest)
	}
	started := time.Now()
	if err := gen.run(ctx, 0, warm, nil); err != nil {
		return HTTPResult{}, fmt.Errorf("bench: warm-up: %w", err)
	}
	res := HTTPResult{Mode: cfg.Mode, Requests: reqs, Events: reqs * cfg.PerRequest, Latency: make([]time.Duration, reqs)}
	cpu0, ncpu0 := processCPU(), srv.CPUTime()
	start := time.Now()
	if err := gen.run(ctx, warm, warm+reqs, res.Latency); err != nil {
		return HTTPResult{}, err
	}
	res.Elapsed = time.Since(start)
	res.CPU, res.NATSCPU = processCPU()-cpu0, srv.CPUTime()-ncpu0
	slices.Sort(res.Latency)
	for r := warm; r < warm+reqs; r++ {
		b := &pl.bodies[r%len(pl.bodies)]
		res.BodyBytes += int64(len(b.data))
		res.RawBytes += int64(b.raw)
	}

	// Everything answered 200 is durable in the spool; now it must reach
	// the stream, and the handler must agree with the clients.
	total := uint64((warm + reqs) * cfg.PerRequest)
	if err := waitAcked(ctx, node, total); err != nil {
		return HTTPResult{}, err
	}
	res.Drain = time.Since(start) - res.Elapsed
	st := h.Stats()
	if st.Accepted != total || st.Failed != 0 || st.Rejected != 0 || st.Duplicates != 0 || st.Dropped != 0 {
		return HTTPResult{}, fmt.Errorf("bench: handler stats %+v, want %d accepted and nothing else", st, total)
	}
	stop()
	if err := node.Shutdown(ctx); err != nil {
		return HTTPResult{}, err
	}
	cs := node.Stats().Classes[ingest.DefaultClass]
	if cs.Acked != total || cs.Ingested != total {
		return HTTPResult{}, fmt.Errorf("bench: node ingested %d and acked %d events, want %d", cs.Ingested, cs.Acked, total)
	}
	v := newVerifier(pl, warm+reqs, started.Add(-time.Second), time.Now().Add(time.Second))
	if err := v.readStream(ctx, nc, opts.Stream); err != nil {
		return HTTPResult{}, err
	}
	if err := v.check(); err != nil {
		return HTTPResult{}, err
	}
	res.Stored, res.Batches, res.MaxLevel = v.events, v.batches, v.maxLevel
	res.Degraded, res.DegradedEvents = v.degraded, v.degradedEvents
	return res, nil
}

// payload is the pre-built request bodies of a mode.
type payload struct {
	mode     string
	ids      bool // each event's messageId starts with digits unique in the run
	path     string
	header   http.Header
	per      int
	bodies   []body
	expected []byte // the body of a 200 answer to a request of per events
}

// body is one request body and the events it carries.
type body struct {
	data   []byte // as sent
	raw    int    // decoded size
	events []sentEvent
	idAt   []int // with payload.ids: offsets in data of each event's 16 id digits
}

// sentEvent is one event as posted. With payload.ids its messageId starts
// with 16 hex digits at offset id, which each request fills with a number
// unique in the run (zeros here); elsewhere id is -1.
type sentEvent struct {
	b  []byte
	id int
}

// idDigits is the width of the per-request id prefix, in hex digits.
const idDigits = 16

// buildPayload cuts events into bodies of per events for mode. Events
// lose any "writeKey" member (the request carries the key); with ids (which
// ModeSegmentBatch needs) each messageId gets a 16-digit prefix to fill, or
// a messageId of those digits if it had none.
func buildPayload(mode string, events [][]byte, per int, ids bool) (*payload, error) {
	if len(events) < per {
		return nil, fmt.Errorf("bench: %d events, want at least %d", len(events), per)
	}
	if mode == ModeSegmentBatch && !ids {
		return nil, errors.New("bench: segment batches need unique messageIds")
	}
	if mode == ModeNDJSONGzip && ids {
		return nil, errors.New("bench: gzipped bodies cannot have their ids filled in")
	}
	pl := &payload{mode: mode, ids: ids, per: per, header: http.Header{}}
	pl.expected = fmt.Appendf(nil, "{\"accepted\":%d,\"rejected\":[]}\n", per)
	switch mode {
	case ModeNDJSON, ModeNDJSONGzip:
		pl.path = "/v1/events"
		pl.header.Set("Content-Type", "application/x-ndjson")
		if mode == ModeNDJSONGzip {
			pl.header.Set("Content-Encoding", "gzip")
		}
	case ModeSegmentBatch:
		pl.path = "/v1/batch"
		pl.header.Set("Content-Type", "application/json")
	default:
		return nil, fmt.Errorf("bench: unknown HTTP mode %q (want %s)", mode, strings.Join(HTTPModes, ", "))
	}
	for i := 0; i+per <= len(events); i += per {
		var b body
		for j, ev := range events[i : i+per] {
			se, err := prepareEvent(ev, ids)
			if err != nil {
				return nil, fmt.Errorf("bench: event %d: %w", i+j, err)
			}
			b.events = append(b.events, se)
		}
		if mode == ModeSegmentBatch {
			b.data = append(b.data, `{"batch":[`...)
			for j, se := range b.events {
				if j > 0 {
					b.data = append(b.data, ',')
				}
				b.idAt = append(b.idAt, len(b.data)+se.id)
				b.data = append(b.data, se.b...)
			}
			b.data = append(b.data, `],"writeKey":"wk_sluice_bench","sentAt":"2026-11-25T00:00:00.000Z"}`...)
			b.raw = len(b.data)
		} else {
			for _, se := range b.events {
				if ids {
					b.idAt = append(b.idAt, len(b.data)+se.id)
				}
				b.data = append(append(b.data, se.b...), '\n')
			}
			b.raw = len(b.data)
			if mode == ModeNDJSONGzip {
				var z bytes.Buffer
				zw := gzip.NewWriter(&z)
				zw.Write(b.data)
				if err := zw.Close(); err != nil {
					return nil, err
				}
				b.data = z.Bytes()
			}
		}
		pl.bodies = append(pl.bodies, b)
	}
	return pl, nil
}

// prepareEvent drops ev's "writeKey" members and, with id, makes room for
// the id digits in its messageId. An event that needs neither is returned
// as it is.
func prepareEvent(ev []byte, id bool) (sentEvent, error) {
	ev = bytes.TrimSpace(ev)
	if err := jsonx.Object(ev); err != nil {
		return sentEvent{}, err
	}
	if jsonx.HasNewline(ev) {
		ev = jsonx.AppendCompact(nil, ev)
	}
	if !id && !bytes.Contains(ev, []byte(`"writeKey"`)) {
		return sentEvent{b: ev, id: -1}, nil
	}
	out := []byte{'{'}
	at := -1
	err := jsonx.Members(ev, func(m jsonx.Member) error {
		switch k := string(m.Key); {
		case k == "writeKey":
			return nil
		case k == "messageId" && id && at < 0 && len(m.Value) > 1 && m.Value[0] == '"':
			if len(out) > 1 {
				out = append(out, ',')
			}
			out = append(out, `"messageId":"`...)
			at = len(out)
			out = append(out, strings.Repeat("0", idDigits)...)
			out = append(out, '-')
			out = append(out, m.Value[1:]...)
			return nil
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, ev[m.Start:m.End]...)
		return nil
	})
	if err != nil {
		return sentEvent{}, err
	}
	if id && at < 0 {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, `"messageId":"`...)
		at = len(out)
		out = append(out, strings.Repeat("0", idDigits)+`"`...)
	}
	return sentEvent{b: append(out, '}'), id: at}, nil
}

// putHex writes v as idDigits lower-case hex digits.
func putHex(dst []byte, v uint64) {
	const digits = "0123456789abcdef"
	for i := idDigits - 1; i >= 0; i-- {
		dst[i] = digits[v&15]
		v >>= 4
	}
}

// loadGen posts a payload's bodies from concurrent clients.
type loadGen struct {
	url     string
	pl      *payload
	clients []*httpClient
}

// httpClient is one client: its own connection, its own buffers.
type httpClient struct {
	c      *http.Client
	header http.Header
	buf    []byte // the body being sent, when it is patched
	resp   bytes.Buffer
}

func newLoadGen(url string, pl *payload, n int) *loadGen {
	g := &loadGen{url: url, pl: pl}
	for range n {
		tr := &http.Transport{
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     1,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		}
		g.clients = append(g.clients, &httpClient{c: &http.Client{Transport: tr}, header: pl.header.Clone()})
	}
	return g
}

func (g *loadGen) close() {
	for _, c := range g.clients {
		c.c.CloseIdleConnections()
	}
}

// run sends requests from through to-1, request r carrying body r modulo
// the bodies, and records request r's latency in lat[r-from] if lat is
// not nil. It returns the first failure.
func (g *loadGen) run(ctx context.Context, from, to int, lat []time.Duration) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	for _, c := range g.clients {
		wg.Go(func() {
			for {
				r := int(next.Add(1) - 1)
				if r >= to || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := c.post(ctx, g.url, g.pl, r); err != nil {
					cancel(fmt.Errorf("request %d: %w", r, err))
					return
				}
				if lat != nil {
					lat[r-from] = time.Since(t0)
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx) // nil unless a request failed or ctx ended
}

// post sends request r and checks its answer.
func (c *httpClient) post(ctx context.Context, url string, pl *payload, r int) error {
	b := &pl.bodies[r%len(pl.bodies)]
	data := b.data
	if b.idAt != nil {
		c.buf = append(c.buf[:0], data...)
		for i, at := range b.idAt {
			putHex(c.buf[at:], uint64(r)*uint64(pl.per)+uint64(i))
		}
		data = c.buf
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header = c.header
	resp, err := c.c.Do(req)
	if err != nil {
		return err
	}
	c.resp.Reset()
	_, err = c.resp.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(c.resp.Bytes(), pl.expected) {
		// The answer names lines and reasons, not event contents.
		return fmt.Errorf("status %d: %.300s", resp.StatusCode, c.resp.Bytes())
	}
	return nil
}

// verifier checks the events read back from the stream against the
// payload: each must be the handler's stamp followed by an event sent.
type verifier struct {
	pl              *payload
	reqs            int
	from, to        time.Time      // bounds of the receivedAt stamps
	head            []byte         // the stamp up to receivedAt's value
	mid             []byte         // the stamp after it
	index           map[string]int // distinct event sent (after its '{') → its number
	byID            map[string]int // its messageId → its number
	counts          []int          // by distinct event, without ModeSegmentBatch
	seen            []uint64       // bit set of the ids, with ModeSegmentBatch
	events, batches int
	maxLevel        int
	degraded        int   // batches shipped with fields dropped
	degradedEvents  int   // events in those batches
	wireBytes       int64 // the batches' payloads, as stored
}

func newVerifier(pl *payload, reqs int, from, to time.Time) *verifier {
	v := &verifier{pl: pl, reqs: reqs, from: from, to: to}
	v.head = []byte(`{"` + ingest.StampReceivedAt + `":"`)
	v.mid = []byte(`","` + ingest.StampNode + `":"` + httpNode + `",`)
	if pl.ids {
		v.seen = make([]uint64, (reqs*pl.per+63)/64)
		return v
	}
	v.index, v.byID = make(map[string]int), make(map[string]int)
	for _, b := range pl.bodies {
		for _, se := range b.events {
			i, ok := v.index[string(se.b[1:])]
			if !ok {
				i = len(v.index)
				v.index[string(se.b[1:])] = i
			}
			if id := messageID(se.b); id != nil {
				if j, dup := v.byID[string(id)]; dup && j != i {
					v.byID[string(id)] = -1 // two different events: ambiguous
				} else {
					v.byID[string(id)] = i
				}
			}
		}
	}
	v.counts = make([]int, len(v.index))
	return v
}

// stampLen is the length of receivedAt's value, e.g. 2026-11-26T01:02:03.456Z.
const stampLen = len("2006-01-02T15:04:05.000Z")

// event checks one stored event. An event of a batch shipped with fields
// dropped (degraded) is identified by its messageId and counted, not
// compared byte for byte.
func (v *verifier) event(ev []byte, degraded bool) error {
	v.events++
	if !bytes.HasPrefix(ev, v.head) || len(ev) < len(v.head)+stampLen+len(v.mid) {
		return errors.New("event without the handler's stamp")
	}
	ts := ev[len(v.head) : len(v.head)+stampLen]
	t, err := time.Parse("2006-01-02T15:04:05.000Z07:00", string(ts))
	if err != nil || t.Before(v.from.Truncate(time.Millisecond)) || t.After(v.to) {
		return fmt.Errorf("receivedAt %s outside the run (%v)", ts, err)
	}
	rest := ev[len(v.head)+stampLen:]
	if !bytes.HasPrefix(rest, v.mid) {
		return errors.New("event without the handler's node stamp")
	}
	rest = rest[len(v.mid):] // the event sent, after its '{'
	if v.seen == nil {
		i, ok := v.index[string(rest)]
		if degraded {
			i, ok = v.byID[string(messageID(rest))]
			ok = ok && i >= 0
		}
		if !ok {
			return errors.New("event that was not sent (bytes or messageId differ)")
		}
		v.counts[i]++
		return nil
	}
	q := bytes.Index(rest, []byte(`"messageId":"`))
	if q < 0 || len(rest) < q+13+idDigits {
		return errors.New("event without its messageId")
	}
	q += 13
	id, err := strconv.ParseUint(string(rest[q:q+idDigits]), 16, 64)
	if err != nil || id >= uint64(v.reqs*v.pl.per) {
		return fmt.Errorf("messageId prefix %q not sent", rest[q:q+idDigits])
	}
	if v.seen[id/64]&(1<<(id%64)) != 0 {
		return fmt.Errorf("messageId prefix %016x delivered twice", id)
	}
	v.seen[id/64] |= 1 << (id % 64)
	r, i := int(id)/v.pl.per, int(id)%v.pl.per
	se := v.pl.bodies[r%len(v.pl.bodies)].events[i]
	if degraded {
		// Fields were dropped: the rest of the message is the one sent
		// when its original messageId is.
		if !bytes.Equal(messageID(rest)[idDigits:], messageID(se.b[1:])[idDigits:]) {
			return fmt.Errorf("event %016x has another event's messageId", id)
		}
		return nil
	}
	if se.id-1 != q || !bytes.Equal(rest[:q], se.b[1:se.id]) || !bytes.Equal(rest[q+idDigits:], se.b[se.id+idDigits:]) {
		return fmt.Errorf("event %016x differs from the one sent", id)
	}
	return nil
}

// messageID returns the value of the first "messageId" member in ev,
// without its quotes, or nil.
func messageID(ev []byte) []byte {
	const key = `"messageId":"`
	q := bytes.Index(ev, []byte(key))
	if q < 0 {
		return nil
	}
	v := ev[q+len(key):]
	if e := bytes.IndexByte(v, '"'); e >= 0 {
		return v[:e]
	}
	return nil
}

// readStream reads every message of the stream and checks its events.
func (v *verifier) readStream(ctx context.Context, nc *nats.Conn, stream string) error {
	if stream == "" {
		stream = "SLUICE"
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	oc, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	it, err := oc.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.NewStreamDictionaries(js, stream)))
	if err != nil {
		return err
	}
	defer dec.Close()
	for v.batches < int(info.State.Msgs) {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("bench: read stream: message %d of %d: %w", v.batches+1, info.State.Msgs, err)
		}
		v.batches++
		v.wireBytes += int64(len(m.Data()))
		b, err := dec.Decode(nats.Header(m.Headers()), m.Data())
		if err != nil {
			return fmt.Errorf("bench: stream message %d: %w", v.batches, err)
		}
		if b.Class != ingest.DefaultClass {
			return fmt.Errorf("bench: stream message %d: class %q", v.batches, b.Class)
		}
		v.maxLevel = max(v.maxLevel, b.Level)
		if len(b.Dropped) > 0 {
			v.degraded++
			v.degradedEvents += len(b.Events)
		}
		for _, ev := range b.Events {
			if err := v.event(ev, len(b.Dropped) > 0); err != nil {
				return fmt.Errorf("bench: stream message %d: %w", v.batches, err)
			}
		}
	}
	return nil
}

// check compares what was read with what was sent.
func (v *verifier) check() error {
	if want := v.reqs * v.pl.per; v.events != want {
		return fmt.Errorf("bench: %d events in the stream, want %d", v.events, want)
	}
	if v.seen != nil {
		return nil // every id once, and as many as were sent
	}
	want := make([]int, len(v.counts))
	for bi, b := range v.pl.bodies {
		n := v.reqs / len(v.pl.bodies)
		if bi < v.reqs%len(v.pl.bodies) {
			n++
		}
		for _, se := range b.events {
			want[v.index[string(se.b[1:])]] += n
		}
	}
	for i := range want {
		if v.counts[i] != want[i] {
			return fmt.Errorf("bench: distinct event %d stored %d times, sent %d", i, v.counts[i], want[i])
		}
	}
	return nil
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serveLoopback serves h on a free port of 127.0.0.1; stop closes the
// server and waits for it (again: nothing).
func serveLoopback(h http.Handler) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	return ln.Addr().String(), sync.OnceFunc(func() {
		hs.Close()
		<-served
	}), nil
}

// httpBenchNode is the node the HTTP benchmark runs: fsync always (every
// answer waits for its events' fsync), default classes, shaper on, and a
// link ceiling of 1 GiB/s, far above what loopback publishing needs, so
// the shaper neither starts from its 1 MiB/s guess nor degrades.
func httpBenchNode() aggregator.Options {
	return aggregator.Options{
		Spool: aggregator.SpoolOptions{Fsync: spool.FsyncAlways},
		Link:  aggregator.Link{Ceil: 1 << 30},
	}
}
