package main

import (
	"bytes"
	"context"
	"encoding/binary"
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

// sinkDictStream starts a server with a SLUICE stream and returns its URL,
// a JetStream context, and a dictionary trained on events like the
// batches', as the edge trains one on a class's recent events.
func sinkDictStream(t *testing.T, id uint32) (string, jetstream.JetStream, []byte) {
	t.Helper()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SLUICE", Subjects: []string{"sluice.>"}}); err != nil {
		t.Fatal(err)
	}
	samples := bytes.SplitAfter(bytes.TrimSuffix(events(1000, 400), []byte("\n")), []byte("\n"))
	raw, err := dict.BuildZstdDict(samples, dict.Options{MaxDictSize: 8 << 10, HashBytes: 6, ZstdDictID: id})
	if err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), js, raw
}

// publishBatch publishes events first..first+n-1 as one batch, compressed
// with dictionary raw (version 2) or without (raw nil), and returns the
// body's size.
func publishBatch(t *testing.T, js jetstream.JetStream, first, n int, raw []byte) int {
	t.Helper()
	var opts []zstd.EOption
	b := wire.Batch{Node: "edge-1", Spool: "sp1", Class: "ingest", First: uint64(first), Last: uint64(first + n - 1), Count: n}
	if raw != nil {
		opts = append(opts, zstd.WithEncoderDict(raw))
		b.Dict = binary.LittleEndian.Uint32(raw[4:8])
	}
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	m := nats.NewMsg("sluice.ingest")
	m.Header = b.Header()
	m.Data = enc.EncodeAll(events(first, n), nil)
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	return len(m.Data)
}

// TestSinkDictLater: a version 2 batch whose dictionary cannot be read yet
// (no bucket at all, or a bucket without its key) is not acknowledged and
// not written; once the dictionary is in the stream's bucket the sink
// writes it, exactly once, and counts the wait.
func TestSinkDictLater(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bucket  bool   // the bucket exists before the sink starts
		waitMsg string // what the sink reports while it waits
	}{
		{"no bucket", false, "stream seq 1: wire: dictionary unavailable: dictionary 40000: bucket SLUICE_DICT: nats: bucket not found (not acknowledged: it comes again"},
		{"no key", true, "stream seq 1: wire: dictionary unavailable: dictionary 40000: bucket SLUICE_DICT key 40000: nats: key not found (not acknowledged: it comes again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = 40000
			url, js, raw := sinkDictStream(t, id)
			ctx := t.Context()
			var kv jetstream.KeyValue
			var err error
			if tc.bucket {
				if kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: wire.DictBucket("SLUICE")}); err != nil {
					t.Fatal(err)
				}
			}
			received := publishBatch(t, js, 1, 5, raw) + publishBatch(t, js, 6, 3, nil)

			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			out := &linesWriter{want: 8, cancel: cancel}
			var errOut syncBuffer
			done := make(chan error, 1)
			go func() { done <- run(sctx, []string{"sink", "--upstream", url}, out, &errOut) }()

			// The sink reports the batch it cannot decode yet, then the
			// dictionary appears.
			giveUp := time.After(time.Minute) // a bound on a hang, not a timing assertion
			for !strings.Contains(errOut.String(), tc.waitMsg) {
				select {
				case err := <-done:
					t.Fatalf("sink stopped before it reported the missing dictionary: %v\n%s", err, errOut.String())
				case <-giveUp:
					cancel()
					<-done
					t.Fatalf("sink did not report the missing dictionary as %q:\n%s", tc.waitMsg, errOut.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			if !tc.bucket {
				if kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: wire.DictBucket("SLUICE")}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := kv.Create(ctx, wire.DictKey(id), raw); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("sink: %v\n%s", err, errOut.String())
			}
			t.Logf("stderr:\n%s", errOut.String())

			// The version 1 batch first, then the one that waited: every
			// event once.
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
			if m := sinkDictsRe.FindStringSubmatch(errOut.String()); m == nil || m[1] != "1" || m[2] == "0" {
				t.Errorf("summary does not count one dictionary batch and its waits:\n%s", errOut.String())
			}

			// Nothing comes again: the batch was acknowledged once written.
			var out2, errOut2 bytes.Buffer
			if err := run(ctx, []string{"sink", "--upstream", url, "--idle-exit", "300ms"}, &out2, &errOut2); err != nil {
				t.Fatalf("second sink: %v", err)
			}
			if out2.Len() != 0 {
				t.Errorf("second sink wrote %q, want nothing", out2.String())
			}
		})
	}
}

var sinkDictsRe = regexp.MustCompile(`(?m)^  dicts     (\d+) batches written with a dictionary, (\d+) deliveries waited for theirs \(not acknowledged: they come again\)$`)

// TestSinkDictIdleExit: a sink with --idle-exit does not wait forever for a
// dictionary: it exits, leaving the batch unacknowledged, and the next
// sink on the same durable writes it once the dictionary exists.
func TestSinkDictIdleExit(t *testing.T) {
	const id = 40001
	url, js, raw := sinkDictStream(t, id)
	ctx := t.Context()
	publishBatch(t, js, 1, 4, raw)

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"sink", "--upstream", url, "--idle-exit", "1500ms"}, &out, &errOut); err != nil {
		t.Fatalf("sink: %v\n%s", err, errOut.String())
	}
	t.Logf("first sink:\n%s", errOut.String())
	s := parseSinkSummary(t, errOut.String())
	if out.Len() != 0 || s.messages != 0 || s.batches != 0 || s.ackFloor != 0 || s.streamMsgs != 1 ||
		s.stopped != "nothing new for 1.5s (--idle-exit)" {
		t.Errorf("first sink wrote %q; summary %+v: want nothing written, nothing acknowledged", out.String(), s)
	}
	if m := sinkDictsRe.FindStringSubmatch(errOut.String()); m == nil || m[1] != "0" || m[2] == "0" {
		t.Errorf("summary does not count the waits:\n%s", errOut.String())
	}

	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: wire.DictBucket("SLUICE")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, wire.DictKey(id), raw); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	// Longer than the nak's delay, so the batch comes again meanwhile.
	if err := run(ctx, []string{"sink", "--upstream", url, "--idle-exit", "5s"}, &out, &errOut); err != nil {
		t.Fatalf("second sink: %v\n%s", err, errOut.String())
	}
	t.Logf("second sink:\n%s", errOut.String())
	if want := string(events(1, 4)); out.String() != want {
		t.Errorf("second sink wrote\n%s\nwant\n%s", out.String(), want)
	}
	if s := parseSinkSummary(t, errOut.String()); s.batches != 1 || s.ackFloor != 1 {
		t.Errorf("second sink's summary %+v: want the batch written and acknowledged", s)
	}
}
