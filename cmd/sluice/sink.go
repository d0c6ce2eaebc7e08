package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/wire"
)

type sinkConfig struct {
	Upstream string
	Stream   string
	Durable  string
	Filter   string
	Out      string
	IdleExit time.Duration
	Batch    int
}

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
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice sink --upstream URL [flags]\n\n"+
			"Reads the stream with a durable pull consumer and writes every event of every batch as one\n"+
			"NDJSON line. A batch is acknowledged after its events are written (and fsynced, for a\n"+
			"file), so delivery is at least once: a sink killed between the two writes the batch again.\n"+
			"A batch that does not decode is reported on stderr and terminated, not retried.\n\nFlags:\n")
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

	out, file, err := openOut(c.Out, stdout)
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
	if err != nil {
		return fmt.Errorf("stream %s: %w", c.Stream, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       c.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: c.Filter,
		AckWait:       30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on %s: %w", c.Durable, c.Stream, err)
	}
	dec, err := wire.NewDecoder(0)
	if err != nil {
		return err
	}
	defer dec.Close()

	s := &sink{w: bufio.NewWriterSize(out, 256<<10), file: file, dec: dec, stderr: stderr}
	last := time.Now()
	for ctx.Err() == nil {
		wait := 5 * time.Second
		if c.IdleExit > 0 {
			left := c.IdleExit - time.Since(last)
			if left <= 0 {
				return nil
			}
			wait = min(wait, left)
		}
		n, err := s.fetch(ctx, cons, c.Batch, wait)
		if n > 0 {
			last = time.Now()
		}
		if err != nil {
			return err
		}
	}
	return nil // a signal: the current batch was finished, the rest stays in the stream
}

// openOut returns the writer of --out and, for a file, the file.
func openOut(path string, stdout io.Writer) (io.Writer, *os.File, error) {
	if path == "-" || path == "" {
		return stdout, nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	return f, f, nil
}

type sink struct {
	w      *bufio.Writer
	file   *os.File // nil for stdout
	dec    *wire.Decoder
	stderr io.Writer
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
// flushed (and, for a file, fsynced).
func (s *sink) handle(ctx context.Context, msg jetstream.Msg) error {
	b, err := s.dec.Decode(msg.Headers(), msg.Data())
	if err != nil {
		var seq uint64
		if md, mdErr := msg.Metadata(); mdErr == nil {
			seq = md.Sequence.Stream
		}
		fmt.Fprintf(s.stderr, "sluice sink: batch on %s, stream seq %d: %v (terminated, not retried)\n", msg.Subject(), seq, err)
		if err := msg.Term(); err != nil {
			fmt.Fprintf(s.stderr, "sluice sink: term seq %d: %v\n", seq, err)
		}
		return nil
	}
	for _, ev := range b.Events {
		s.w.Write(ev)
		s.w.WriteByte('\n')
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if s.file != nil {
		if err := s.file.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", s.file.Name(), err)
		}
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		// Not fatal: the batch comes again after AckWait and is written twice.
		fmt.Fprintf(s.stderr, "sluice sink: ack %s: %v\n", msg.Subject(), err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
