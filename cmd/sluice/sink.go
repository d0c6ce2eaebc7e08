package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/wire"
)

// sinkAckWait is how long the server waits for the sink's ack of a batch
// before it delivers the batch again.
const sinkAckWait = 30 * time.Second

// A batch whose dictionary cannot be had is not acknowledged: the sink
// asks the server to deliver it again after sinkDictRetry times the number
// of deliveries so far, at most sinkDictRetryMax.
const (
	sinkDictRetry    = time.Second
	sinkDictRetryMax = 30 * time.Second
)

// sinkDictTimeout bounds one lookup of a dictionary in the bucket.
const sinkDictTimeout = 10 * time.Second

type sinkConfig struct {
	Upstream    string
	Stream      string
	Durable     string
	Filter      string
	Out         string
	IdleExit    time.Duration
	Batch       int
	WithHeaders bool
	DictBucket  string
}

const sinkUsage = `Usage: sluice sink --upstream URL [flags]

Reads the stream with a durable pull consumer and writes every event of
every batch as one NDJSON line. With --with-headers each line is an
envelope that keeps what the edge node wrote about the batch:

  {"subject":"sluice.ingest","stream_seq":42,"headers":{"Nats-Msg-Id":"…",
   "Sluice-Class":"ingest","Sluice-Count":"128","Sluice-Dropped-Fields":
   "context.userAgent","Sluice-Level":"2",…},"event":{…the event…}}

"headers" holds every header of the batch's message, each with its first
value (docs/wire.md describes them). Sluice-Dropped-Fields present means the
event is partial: those fields were removed on a degraded link.

Delivery is at least once. The consumer is durable (--durable): the server
keeps its position, so a restarted sink resumes after the last batch it
acknowledged. A batch is acknowledged, and the server confirms the ack,
only after all its events are written and flushed (and, for --out FILE,
fsynced). On a signal it stops between batches: every batch it wrote is
acknowledged, and one the server had sent but it had not written yet comes
again after the ack wait. A sink that dies before an ack has written some,
all or none of that batch's events, the last one possibly cut off
mid-line; the server delivers the whole batch again after 30s (the ack
wait) to the next sink on the same durable (if the stream still holds it:
its limits decide), so those events appear twice, never not at all. With
--out FILE, a file that ends mid-line is taken to end with such a torn
line: the sink cuts it off before appending and says so on stderr. A
failed ack (reported on stderr) also makes its batch come again.
Deduplicate on the events' own ids where duplicates matter.

A batch of format version 2 was compressed with a trained dictionary, which
the sink reads from the stream's dictionary bucket (<stream>_DICT, or
--dict-bucket), opened on the first such batch. While a dictionary cannot
be read (no bucket, no key yet, a server that does not answer, a value
that is not that dictionary) its batches are not acknowledged: the sink
asks for them again after 1s, 2s, … up to 30s, says so on stderr once per
dictionary, and writes them once the dictionary can be read. Such a wait
is no progress for --idle-exit: a sink that exits meanwhile leaves those
batches unacknowledged, for the next sink on the same durable.

A message that is not a sluice batch is reported on stderr and terminated,
not retried. At exit the sink prints a summary on stderr: why it stopped,
the messages, batches, events and bytes it read and wrote, degraded and
partial batches, the stream sequences it read, and where the consumer
stands in the stream.

Flags:
`

func runSink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c sinkConfig
	fs.StringVar(&c.Upstream, "upstream", "", "NATS `URL` (required)")
	fs.StringVar(&c.Stream, "stream", "SLUICE", "JetStream `stream` to read")
	fs.StringVar(&c.Durable, "durable", "sluice-sink", "durable consumer `name`: a restarted sink resumes where it stopped")
	fs.StringVar(&c.Filter, "filter", "", "only batches on this `subject` (wildcards allowed, e.g. sluice.critical); default all")
	fs.StringVar(&c.Out, "out", "-", "`file` to append events to, or - for stdout")
	fs.DurationVar(&c.IdleExit, "idle-exit", 0, "exit 0 after no batch arrived for this `duration`; 0 runs until a signal")
	fs.IntVar(&c.Batch, "batch", 64, "batches to fetch per pull request")
	fs.StringVar(&c.DictBucket, "dict-bucket", "", "JetStream KV `bucket` of the dictionaries version 2 batches name; default <stream>_DICT")
	fs.BoolVar(&c.WithHeaders, "with-headers", false, `write each event in an envelope {"subject","stream_seq","headers","event"} that keeps its batch's headers (Sluice-Level, Sluice-Dropped-Fields, …)`)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), sinkUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case c.Upstream == "":
		fmt.Fprintln(stderr, "sluice sink: --upstream is required")
		fs.Usage()
		return errUsage
	case c.IdleExit < 0:
		return fmt.Errorf("--idle-exit %v: want >= 0", c.IdleExit)
	case c.Batch <= 0:
		return fmt.Errorf("--batch %d: want > 0", c.Batch)
	}

	out, file, err := openOut(c.Out, stdout, stderr)
	if err != nil {
		return err
	}
	if file != nil {
		defer file.Close()
	}
	nc, err := nats.Connect(c.Upstream, nats.Name("sluice sink"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("upstream %s: %w", c.Upstream, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, c.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w on %s (no node has published there yet, or --stream is wrong)", c.Stream, err, c.Upstream)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", c.Stream, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       c.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: c.Filter,
		AckWait:       sinkAckWait,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on %s: %w", c.Durable, c.Stream, err)
	}
	if c.DictBucket == "" {
		c.DictBucket = wire.DictBucket(c.Stream)
	}
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.OpenDictionaries(js, c.DictBucket)))
	if err != nil {
		return err
	}
	defer dec.Close()

	s := &sink{w: bufio.NewWriterSize(out, 256<<10), file: file, dec: dec, stderr: stderr, envelope: c.WithHeaders,
		waiting: map[uint32]bool{}}
	start := time.Now()
	why, err := s.loop(ctx, cons, c)
	s.summary(stderr, c, stream, cons, why, time.Since(start))
	return err
}

// loop fetches and writes batches until ctx ends, --idle-exit passes or the
// output fails. It returns why it stopped, in words for the summary.
func (s *sink) loop(ctx context.Context, cons jetstream.Consumer, c sinkConfig) (string, error) {
	last := time.Now()
	for ctx.Err() == nil {
		wait := 5 * time.Second
		if c.IdleExit > 0 {
			left := c.IdleExit - time.Since(last)
			if left <= 0 {
				return fmt.Sprintf("nothing new for %s (--idle-exit)", c.IdleExit), nil
			}
			wait = min(wait, left)
		}
		// Idle means nothing written or terminated: a batch that comes
		// again and again because its dictionary cannot be read is no
		// progress, and --idle-exit leaves it to the next sink.
		done := s.stats.Messages
		_, err := s.fetch(ctx, cons, c.Batch, wait)
		if s.stats.Messages > done {
			last = time.Now()
		}
		if err != nil {
			return "the output failed (the batch being written was not acknowledged: it comes again)", err
		}
	}
	// A signal: every batch written was acknowledged; any fetched and not
	// written is redelivered after the ack wait.
	return "interrupted", nil
}

// openOut returns the writer of --out and, for a file, the file. A file
// that does not end in a newline ends with a line a sink tore when it
// stopped mid-write: openOut cuts it off, so the next event starts a line
// of its own, and reports it on stderr.
func openOut(path string, stdout, stderr io.Writer) (io.Writer, *os.File, error) {
	if path == "-" || path == "" {
		return stdout, nil, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	cut, err := cutTornLine(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if cut > 0 {
		fmt.Fprintf(stderr, "sluice sink: %s ended mid-line: cut off its last %d bytes, part of an event whose batch was not acknowledged (it is written again when the batch comes again)\n", path, cut)
	}
	return f, f, nil
}

// cutTornLine truncates f after its last newline (to empty if it has none)
// and returns how many bytes it removed.
func cutTornLine(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	buf := make([]byte, 64<<10)
	end := size
	for end > 0 {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return 0, fmt.Errorf("read tail: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	if end == size {
		return 0, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, fmt.Errorf("cut torn line: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("fsync: %w", err)
	}
	return size - end, nil
}

type sink struct {
	w        *bufio.Writer
	file     *os.File // nil for stdout
	dec      *wire.Decoder
	stderr   io.Writer
	envelope bool   // --with-headers
	prefix   []byte // the envelope of the current batch, up to its "event":
	stats    sinkStats
	waiting  map[uint32]bool // dictionaries whose batches wait, reported once each
}

// sinkStats counts what the sink read and wrote, for its summary.
type sinkStats struct {
	Messages      int    // messages handled (batches written and messages that are not batches)
	Redelivered   int    // of them, delivered more than once
	DictWaits     int    // deliveries of batches whose dictionary could not be read: not acknowledged, they come again
	DictBatches   int    // batches written that needed a dictionary (format version 2)
	Terminated    int    // of them, not sluice batches: reported and terminated
	Batches       int    // batches whose events were written
	Degraded      int    // of them, shipped at Sluice-Level > 0
	Partial       int    // of them, with Sluice-Dropped-Fields
	Events        int    // events written
	PartialEvents int    // of them, in partial batches
	AckFailed     int    // written batches whose ack failed: they come again
	Received      int64  // message bodies read, bytes (compressed)
	Written       int64  // bytes of the batches written to the output
	FirstSeq      uint64 // lowest stream sequence handled; 0 if none
	LastSeq       uint64 // highest stream sequence handled
}

// fetch pulls up to n batches, waiting at most wait for the first, and
// handles them. It returns how many messages arrived and an error only for
// failures that end the sink (the output cannot be written).
func (s *sink) fetch(ctx context.Context, cons jetstream.Consumer, n int, wait time.Duration) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	msgs, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		if ctx.Err() == nil && fctx.Err() == nil {
			fmt.Fprintf(s.stderr, "sluice sink: fetch: %v\n", err)
			sleep(ctx, time.Second)
		}
		return 0, nil
	}
	got := 0
	for msg := range msgs.Messages() {
		got++
		if err := s.handle(ctx, msg); err != nil {
			return got, err
		}
	}
	if err := msgs.Error(); err != nil && ctx.Err() == nil && fctx.Err() == nil &&
		!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) &&
		!errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(s.stderr, "sluice sink: fetch: %v\n", err)
	}
	return got, nil
}

// handle writes the events of one batch and acknowledges it once they are
// flushed (and, for a file, fsynced). A batch whose dictionary cannot be
// read is neither written nor counted: it is handed back for later.
func (s *sink) handle(ctx context.Context, msg jetstream.Msg) error {
	var seq, delivered uint64
	if md, err := msg.Metadata(); err == nil {
		seq, delivered = md.Sequence.Stream, md.NumDelivered
	}
	dctx, cancel := context.WithTimeout(ctx, sinkDictTimeout)
	b, err := s.dec.DecodeContext(dctx, msg.Headers(), msg.Data())
	cancel()
	if errors.Is(err, wire.ErrDict) || errors.Is(err, wire.ErrBadDict) {
		s.waitDict(msg, seq, delivered, b.Dict, err)
		return nil
	}
	st := &s.stats
	st.Messages++
	if delivered > 1 {
		st.Redelivered++
	}
	st.Received += int64(len(msg.Data()))
	if seq != 0 {
		if st.FirstSeq == 0 || seq < st.FirstSeq {
			st.FirstSeq = seq
		}
		st.LastSeq = max(st.LastSeq, seq)
	}
	if err != nil {
		st.Terminated++
		fmt.Fprintf(s.stderr, "sluice sink: batch on %s, stream seq %d: %v (terminated, not retried)\n", msg.Subject(), seq, err)
		if err := msg.Term(); err != nil {
			fmt.Fprintf(s.stderr, "sluice sink: term seq %d: %v\n", seq, err)
		}
		return nil
	}
	if s.envelope {
		s.prefix = envelopePrefix(s.prefix[:0], msg.Subject(), seq, msg.Headers())
	}
	var n int64
	for _, ev := range b.Events {
		if s.envelope {
			s.w.Write(s.prefix)
			s.w.Write(ev)
			s.w.WriteString("}\n")
			n += int64(len(s.prefix) + len(ev) + 2)
		} else {
			s.w.Write(ev)
			s.w.WriteByte('\n')
			n += int64(len(ev) + 1)
		}
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if s.file != nil {
		if err := s.file.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", s.file.Name(), err)
		}
	}
	// Counted once the whole batch is out: a failed write leaves a batch
	// the server sends again, not one the summary counts.
	st.Written += n
	st.Batches++
	st.Events += len(b.Events)
	if b.Level > 0 {
		st.Degraded++
	}
	if b.Dict != 0 {
		st.DictBatches++
		if s.waiting[b.Dict] {
			delete(s.waiting, b.Dict)
			fmt.Fprintf(s.stderr, "sluice sink: dictionary %d read: its batches are written now\n", b.Dict)
		}
	}
	if len(b.Dropped) > 0 {
		st.Partial++
		st.PartialEvents += len(b.Events)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		// Not fatal: the batch comes again after AckWait and is written twice.
		st.AckFailed++
		fmt.Fprintf(s.stderr, "sluice sink: ack of stream seq %d on %s failed: %v (the batch comes again after %s and is written twice)\n", seq, msg.Subject(), err, sinkAckWait)
	}
	return nil
}

// waitDict hands back a batch whose dictionary cannot be read: it is not
// acknowledged, and the server delivers it again after a delay that grows
// with its deliveries. The first wait for each dictionary is reported.
func (s *sink) waitDict(msg jetstream.Msg, seq, delivered uint64, id uint32, why error) {
	s.stats.DictWaits++
	delay := min(sinkDictRetry*time.Duration(max(delivered, 1)), sinkDictRetryMax)
	if !s.waiting[id] {
		s.waiting[id] = true
		fmt.Fprintf(s.stderr, "sluice sink: batch on %s, stream seq %d: %v (not acknowledged: it comes again, and so does every batch of dictionary %d until the dictionary can be read)\n",
			msg.Subject(), seq, why, id)
	}
	if err := msg.NakWithDelay(delay); err != nil {
		// Not fatal either: without the nak the batch comes again after AckWait.
		fmt.Fprintf(s.stderr, "sluice sink: nak of stream seq %d: %v (it comes again after %s)\n", seq, err, sinkAckWait)
	}
}

// envelopePrefix appends to dst the envelope of a batch's events up to
// the event itself: {"subject":…,"stream_seq":…,"headers":{…},"event":
func envelopePrefix(dst []byte, subject string, seq uint64, h nats.Header) []byte {
	first := make(map[string]string, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			first[k] = vs[0]
		}
	}
	subj, _ := json.Marshal(subject) // a string always marshals
	hdr, _ := json.Marshal(first)    // so does a map of strings, its keys sorted
	dst = append(dst, `{"subject":`...)
	dst = append(dst, subj...)
	dst = append(dst, `,"stream_seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"headers":`...)
	dst = append(dst, hdr...)
	return append(dst, `,"event":`...)
}

// summary prints on w why the sink stopped, what it read and wrote, and
// where its consumer stands in the stream.
func (s *sink) summary(w io.Writer, c sinkConfig, stream jetstream.Stream, cons jetstream.Consumer, why string, took time.Duration) {
	st := s.stats
	out := "stdout"
	if s.file != nil {
		out = s.file.Name()
	}
	fmt.Fprintf(w, "sluice sink: stopped after %s: %s\n", took.Round(time.Millisecond), why)
	seqs := "none"
	if st.Messages > 0 {
		seqs = fmt.Sprintf("%d-%d", st.FirstSeq, st.LastSeq)
	}
	fmt.Fprintf(w, "  messages  %d read, stream seq %s, %d redelivered, %d terminated (not a sluice batch)\n",
		st.Messages, seqs, st.Redelivered, st.Terminated)
	fmt.Fprintf(w, "  batches   %d written, %d degraded (Sluice-Level > 0), %d partial (Sluice-Dropped-Fields), %d acks failed\n",
		st.Batches, st.Degraded, st.Partial, st.AckFailed)
	fmt.Fprintf(w, "  events    %d written, %d of them partial\n", st.Events, st.PartialEvents)
	fmt.Fprintf(w, "  bytes     %d written to %s, %d received (zstd bodies)\n", st.Written, out, st.Received)
	if st.DictBatches > 0 || st.DictWaits > 0 {
		fmt.Fprintf(w, "  dicts     %d batches written with a dictionary, %d deliveries waited for theirs (not acknowledged: they come again)\n",
			st.DictBatches, st.DictWaits)
	}

	// Where the consumer stands tells an empty run from a broken one.
	ictx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ci, err := cons.Info(ictx)
	if err != nil {
		fmt.Fprintf(w, "  consumer  %s on %s: %v\n", c.Durable, c.Stream, err)
		return
	}
	filter := "every subject"
	if c.Filter != "" {
		filter = c.Filter
	}
	line := fmt.Sprintf("  consumer  %s on %s (%s): acknowledged up to stream seq %d, %d awaiting ack, %d not yet delivered",
		c.Durable, c.Stream, filter, ci.AckFloor.Stream, ci.NumAckPending, ci.NumPending)
	si, err := stream.Info(ictx)
	if err == nil {
		line += fmt.Sprintf("; the stream holds %d messages, last seq %d", si.State.Msgs, si.State.LastSeq)
	}
	fmt.Fprintln(w, line)
	switch {
	case st.Messages > 0 || err != nil:
	case si.State.Msgs == 0:
		fmt.Fprintf(w, "  nothing to read: stream %s is empty (no node has shipped to it yet)\n", c.Stream)
	case ci.NumPending == 0 && ci.NumAckPending == 0:
		fmt.Fprintf(w, "  nothing new: consumer %s had already acknowledged everything it selects; a new --durable name reads the stream from its first message\n", c.Durable)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
