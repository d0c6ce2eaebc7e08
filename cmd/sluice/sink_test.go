package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/dict"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/wire"
)

// sinkFixture is a stream holding known batches, and what a sink should
// make of them.
type sinkFixture struct {
	url      string
	msgs     int      // messages published
	bad      int      // of them, not sluice batches
	batches  int      // sluice batches
	degraded int      // of them, with Sluice-Level > 0
	partial  int      // of them, with Sluice-Dropped-Fields
	events   [][]byte // every event, in stream order
	partEvs  int      // events in partial batches
	body     int      // bytes of every message body
	lines    []sinkWant
}

// sinkWant is one line the sink should write with --with-headers.
type sinkWant struct {
	subject string
	seq     uint64
	headers map[string]string
	event   []byte
}

// newSinkFixture starts a NATS server with a SLUICE stream and publishes
// batches to it: plain, degraded with and without dropped fields, and a
// message that is not a batch.
func newSinkFixture(t *testing.T) *sinkFixture {
	t.Helper()
	srv := natstest.Start(t)
	f := &sinkFixture{url: srv.ClientURL()}
	ctx := t.Context()
	nc, err := nats.Connect(f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SLUICE", Subjects: []string{"sluice.>"}}); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	publish := func(m *nats.Msg) uint64 {
		t.Helper()
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		f.msgs++
		f.body += len(m.Data)
		return ack.Sequence
	}
	next := uint64(1)
	batch := func(class string, n, level int, dropped ...string) {
		t.Helper()
		b := wire.Batch{Node: "edge-1", Spool: "sp1", Class: class, First: next, Last: next + uint64(n) - 1, Count: n, Level: level, Dropped: dropped}
		next += uint64(n)
		evs := bytes.SplitAfter(bytes.TrimSuffix(events(int(b.First), n), []byte("\n")), []byte("\n"))
		m := nats.NewMsg("sluice." + class)
		m.Header = b.Header()
		m.Data = enc.EncodeAll(bytes.Join(evs, nil), nil)
		seq := publish(m)
		f.batches++
		if level > 0 {
			f.degraded++
		}
		if len(dropped) > 0 {
			f.partial++
			f.partEvs += n
		}
		h := map[string]string{}
		for k, v := range m.Header {
			h[k] = v[0]
		}
		for _, ev := range evs {
			ev = bytes.TrimSuffix(ev, []byte("\n"))
			f.events = append(f.events, ev)
			f.lines = append(f.lines, sinkWant{subject: m.Subject, seq: seq, headers: h, event: ev})
		}
	}
	batch("ingest", 3, 0)
	batch("ingest", 2, 2, "context.userAgent", "properties.html")
	batch("critical", 4, 1)
	publish(&nats.Msg{Subject: "sluice.ingest", Data: []byte("not a batch")})
	f.bad++
	batch("critical", 1, 0)
	return f
}

// linesWriter cancels its context once it has seen want newlines, so a
// sink running until a signal stops right after its last batch.
type linesWriter struct {
	bytes.Buffer
	want   int
	cancel context.CancelFunc
}

func (w *linesWriter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if bytes.Count(w.Bytes(), []byte("\n")) >= w.want {
		w.cancel()
	}
	return n, err
}

var (
	sinkStoppedRe  = regexp.MustCompile(`(?m)^sluice sink: stopped after \S+: (.+)$`)
	sinkMessagesRe = regexp.MustCompile(`(?m)^  messages  (\d+) read, stream seq (\S+), (\d+) redelivered, (\d+) terminated \(not a sluice batch\)$`)
	sinkBatchesRe  = regexp.MustCompile(`(?m)^  batches   (\d+) written, (\d+) degraded \(Sluice-Level > 0\), (\d+) partial \(Sluice-Dropped-Fields\), (\d+) acks failed$`)
	sinkEventsRe   = regexp.MustCompile(`(?m)^  events    (\d+) written, (\d+) of them partial$`)
	sinkBytesRe    = regexp.MustCompile(`(?m)^  bytes     (\d+) written to (\S+), (\d+) received \(zstd bodies\)$`)
	sinkConsumerRe = regexp.MustCompile(`(?m)^  consumer  (\S+) on SLUICE \(([^)]*)\): acknowledged up to stream seq (\d+), (\d+) awaiting ack, (\d+) not yet delivered; the stream holds (\d+) messages, last seq (\d+)$`)
)

// sinkSummary is the sink's summary as numbers.
type sinkSummary struct {
	stopped                            string
	messages, redelivered, terminated  int
	seqs                               string
	batches, degraded, partial, ackErr int
	events, partialEvents              int
	written, received                  int
	out                                string
	ackFloor, ackPending, notDelivered int
	streamMsgs, lastSeq                int
}

func parseSinkSummary(t *testing.T, stderr string) sinkSummary {
	t.Helper()
	var s sinkSummary
	match := func(re *regexp.Regexp) []string {
		t.Helper()
		m := re.FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("summary lacks a line matching %s:\n%s", re, stderr)
		}
		return m
	}
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	s.stopped = match(sinkStoppedRe)[1]
	m := match(sinkMessagesRe)
	s.messages, s.seqs, s.redelivered, s.terminated = atoi(m[1]), m[2], atoi(m[3]), atoi(m[4])
	m = match(sinkBatchesRe)
	s.batches, s.degraded, s.partial, s.ackErr = atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4])
	m = match(sinkEventsRe)
	s.events, s.partialEvents = atoi(m[1]), atoi(m[2])
	m = match(sinkBytesRe)
	s.written, s.out, s.received = atoi(m[1]), m[2], atoi(m[3])
	m = match(sinkConsumerRe)
	s.ackFloor, s.ackPending, s.notDelivered, s.streamMsgs, s.lastSeq = atoi(m[3]), atoi(m[4]), atoi(m[5]), atoi(m[6]), atoi(m[7])
	return s
}

// TestSinkWithHeaders reads known batches with --with-headers until a
// signal: every event comes out once in an envelope carrying its batch's
// headers, and every number of the summary is what was published.
func TestSinkWithHeaders(t *testing.T) {
	f := newSinkFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &linesWriter{want: len(f.lines), cancel: cancel}
	var errOut bytes.Buffer
	if err := run(ctx, []string{"sink", "--upstream", f.url, "--with-headers"}, out, &errOut); err != nil {
		t.Fatalf("sink: %v\n%s", err, errOut.String())
	}
	t.Logf("stderr:\n%s", errOut.String())

	lines := bytes.Split(bytes.TrimSuffix(out.Bytes(), []byte("\n")), []byte("\n"))
	if len(lines) != len(f.lines) {
		t.Fatalf("sink wrote %d lines, want %d:\n%s", len(lines), len(f.lines), out.Bytes())
	}
	for i, line := range lines {
		var env struct {
			Subject   string            `json:"subject"`
			StreamSeq uint64            `json:"stream_seq"`
			Headers   map[string]string `json:"headers"`
			Event     json.RawMessage   `json:"event"`
		}
		if err := json.Unmarshal(line, &env); err != nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		w := f.lines[i]
		if env.Subject != w.subject || env.StreamSeq != w.seq || !bytes.Equal(env.Event, w.event) {
			t.Errorf("line %d: subject %q seq %d event %s, want %q %d %s", i+1, env.Subject, env.StreamSeq, env.Event, w.subject, w.seq, w.event)
		}
		if fmt.Sprint(env.Headers) != fmt.Sprint(w.headers) {
			t.Errorf("line %d: headers %v, want %v", i+1, env.Headers, w.headers)
		}
	}
	// The degraded batch's labels survive.
	if !bytes.Contains(out.Bytes(), []byte(`"Sluice-Dropped-Fields":"context.userAgent,properties.html"`)) ||
		!bytes.Contains(out.Bytes(), []byte(`"Sluice-Level":"2"`)) {
		t.Errorf("output lacks the degraded batch's Sluice-Level and Sluice-Dropped-Fields:\n%s", out.Bytes())
	}

	s := parseSinkSummary(t, errOut.String())
	want := sinkSummary{
		stopped:  "interrupted",
		messages: f.msgs, terminated: f.bad, seqs: fmt.Sprintf("1-%d", f.msgs),
		batches: f.batches, degraded: f.degraded, partial: f.partial,
		events: len(f.events), partialEvents: f.partEvs,
		written: out.Len(), received: f.body, out: "stdout",
		ackFloor: f.msgs, streamMsgs: f.msgs, lastSeq: f.msgs,
	}
	if s != want {
		t.Errorf("summary\n got %+v\nwant %+v", s, want)
	}
	if !strings.Contains(errOut.String(), "stream seq 4: wire: unsupported format version") {
		t.Errorf("stderr does not report the message that is not a batch:\n%s", errOut.String())
	}

	// A second run on the same durable finds nothing new, and its summary
	// says so: where the consumer stands and what the stream holds.
	var out2 bytes.Buffer
	errOut.Reset()
	if err := run(t.Context(), []string{"sink", "--upstream", f.url, "--idle-exit", "200ms"}, &out2, &errOut); err != nil {
		t.Fatalf("second sink: %v\n%s", err, errOut.String())
	}
	if out2.Len() != 0 {
		t.Errorf("second sink wrote %q, want nothing", out2.Bytes())
	}
	s = parseSinkSummary(t, errOut.String())
	want = sinkSummary{
		stopped: "nothing new for 200ms (--idle-exit)", seqs: "none", out: "stdout",
		ackFloor: f.msgs, streamMsgs: f.msgs, lastSeq: f.msgs,
	}
	if s != want {
		t.Errorf("empty run's summary\n got %+v\nwant %+v\n%s", s, want, errOut.String())
	}
	if !strings.Contains(errOut.String(), "nothing new: consumer sluice-sink had already acknowledged everything it selects") {
		t.Errorf("empty run's summary does not say why it is empty:\n%s", errOut.String())
	}
}

// TestSinkFileCutsTornLine appends plain events to a file whose last line
// a crashed sink tore: the torn part is cut off and reported, the summary
// counts the bytes the file gained, and every event is on a line of its
// own.
func TestSinkFileCutsTornLine(t *testing.T) {
	f := newSinkFixture(t)
	path := filepath.Join(t.TempDir(), "events.ndjson")
	const kept, torn = `{"id":-1}` + "\n", `{"id":-2,"ty`
	if err := os.WriteFile(path, []byte(kept+torn), 0o644); err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	if err := run(t.Context(), []string{"sink", "--upstream", f.url, "--out", path, "--durable", "file-sink", "--idle-exit", "2s"}, &bytes.Buffer{}, &errOut); err != nil {
		t.Fatalf("sink: %v\n%s", err, errOut.String())
	}
	t.Logf("stderr:\n%s", errOut.String())
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := kept + string(bytes.Join(f.events, []byte("\n"))) + "\n"
	if string(got) != want {
		t.Errorf("file\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(errOut.String(), fmt.Sprintf("ended mid-line: cut off its last %d bytes", len(torn))) {
		t.Errorf("stderr does not report the torn line:\n%s", errOut.String())
	}
	s := parseSinkSummary(t, errOut.String())
	if s.written != len(want)-len(kept) || s.out != path || s.events != len(f.events) || s.batches != f.batches ||
		s.stopped != "nothing new for 2s (--idle-exit)" {
		t.Errorf("summary %+v: want %d bytes written to %s, %d events, %d batches", s, len(want)-len(kept), path, len(f.events), f.batches)
	}
}

func TestCutTornLine(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // longer than one read
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"{}\n", "{}\n"},
		{"{}\n{", "{}\n"},
		{"{", ""},
		{long, ""},
		{"{}\n" + long, "{}\n"},
		{long + "\n" + long, long + "\n"},
	} {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, []byte(tc.in), 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		cut, err := cutTornLine(fh)
		fh.Close()
		got, _ := os.ReadFile(path)
		if err != nil || string(got) != tc.want || cut != int64(len(tc.in)-len(tc.want)) {
			t.Errorf("cutTornLine(%.10q…, %d bytes) = %d, %v, left %d bytes; want %d bytes", tc.in, len(tc.in), cut, err, len(got), len(tc.want))
		}
	}
}

// TestSinkNoStream: a missing stream is an error that says what may be
// wrong; an empty one is a run whose summary says it is empty.
func TestSinkNoStream(t *testing.T) {
	srv := natstest.Start(t)
	var errOut bytes.Buffer
	err := run(t.Context(), []string{"sink", "--upstream", srv.ClientURL(), "--idle-exit", "1s"}, &bytes.Buffer{}, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no node has published there yet, or --stream is wrong") {
		t.Errorf("err = %v, want a stream-not-found error that says why", err)
	}

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SLUICE", Subjects: []string{"sluice.>"}}); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if err := run(t.Context(), []string{"sink", "--upstream", srv.ClientURL(), "--idle-exit", "200ms"}, &bytes.Buffer{}, &errOut); err != nil {
		t.Fatalf("sink: %v", err)
	}
	if !strings.Contains(errOut.String(), "nothing to read: stream SLUICE is empty") {
		t.Errorf("summary does not say the stream is empty:\n%s", errOut.String())
	}
}

// TestSinkDictLater: a version 2 batch whose dictionary is not readable
// yet (no bucket at all) is not acknowledged and not written; once the
// dictionary is in the stream's bucket the sink writes it, exactly once,
// and counts the wait.
func TestSinkDictLater(t *testing.T) {
	srv := natstest.Start(t)
	ctx := t.Context()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SLUICE", Subjects: []string{"sluice.>"}}); err != nil {
		t.Fatal(err)
	}
	// A dictionary trained on events like the batch's, as the edge trains
	// one on a class's recent events.
	const id = 40000
	samples := bytes.SplitAfter(bytes.TrimSuffix(events(1000, 400), []byte("\n")), []byte("\n"))
	raw, err := dict.BuildZstdDict(samples, dict.Options{MaxDictSize: 8 << 10, HashBytes: 6, ZstdDictID: id})
	if err != nil {
		t.Fatal(err)
	}
	dictEnc, err := zstd.NewWriter(nil, zstd.WithEncoderDict(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer dictEnc.Close()
	plainEnc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plainEnc.Close()

	v2 := wire.Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: 1, Last: 5, Count: 5, Dict: id}
	v1 := wire.Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: 6, Last: 8, Count: 3}
	var received int
	for _, p := range []struct {
		b   wire.Batch
		enc *zstd.Encoder
	}{{v2, dictEnc}, {v1, plainEnc}} {
		m := nats.NewMsg("sluice.ingest")
		m.Header = p.b.Header()
		m.Data = p.enc.EncodeAll(events(int(p.b.First), p.b.Count), nil)
		received += len(m.Data)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &linesWriter{want: 8, cancel: cancel}
	var errOut syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(sctx, []string{"sink", "--upstream", srv.ClientURL()}, out, &errOut) }()

	// The sink reports the batch it cannot decode yet, then the bucket
	// and the dictionary appear.
	const waitMsg = "stream seq 1: wire: dictionary unavailable: dictionary 40000: bucket SLUICE_DICT: nats: bucket not found (not acknowledged: it comes again"
	giveUp := time.After(time.Minute) // a bound on a hang, not a timing assertion
	for !strings.Contains(errOut.String(), waitMsg) {
		select {
		case err := <-done:
			t.Fatalf("sink stopped before it reported the missing dictionary: %v\n%s", err, errOut.String())
		case <-giveUp:
			cancel()
			<-done
			t.Fatalf("sink did not report the missing dictionary as %q:\n%s", waitMsg, errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: wire.DictBucket("SLUICE")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, wire.DictKey(id), raw); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("sink: %v\n%s", err, errOut.String())
	}
	t.Logf("stderr:\n%s", errOut.String())

	// The version 1 batch first, then the one that waited: every event once.
	want := string(events(6, 3)) + string(events(1, 5))
	if out.String() != want {
		t.Errorf("sink wrote\n%s\nwant\n%s", out.String(), want)
	}
	if !strings.Contains(errOut.String(), "sluice sink: dictionary 40000 read: its batches are written now") {
		t.Errorf("stderr does not say the dictionary was read:\n%s", errOut.String())
	}
	s := parseSinkSummary(t, errOut.String())
	wantSum := sinkSummary{
		stopped: "interrupted", messages: 2, redelivered: 1, seqs: "1-2",
		batches: 2, events: 8, written: len(want), received: received, out: "stdout",
		ackFloor: 2, streamMsgs: 2, lastSeq: 2,
	}
	if s != wantSum {
		t.Errorf("summary\n got %+v\nwant %+v", s, wantSum)
	}
	m := regexp.MustCompile(`(?m)^  dicts     1 batches written with a dictionary, (\d+) deliveries waited for theirs \(not acknowledged: they come again\)$`).
		FindStringSubmatch(errOut.String())
	if m == nil || m[1] == "0" {
		t.Errorf("summary does not count one dictionary batch and its waits:\n%s", errOut.String())
	}

	// Nothing comes again: the batch was acknowledged once written.
	var out2 bytes.Buffer
	var errOut2 bytes.Buffer
	if err := run(ctx, []string{"sink", "--upstream", srv.ClientURL(), "--idle-exit", "300ms"}, &out2, &errOut2); err != nil {
		t.Fatalf("second sink: %v", err)
	}
	if out2.Len() != 0 {
		t.Errorf("second sink wrote %q, want nothing", out2.String())
	}
}
