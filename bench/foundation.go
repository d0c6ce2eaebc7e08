package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
)

// Result is one measured run.
type Result struct {
	Events    int
	Elapsed   time.Duration // first ingest to last JetStream ack
	RawBytes  int64         // NDJSON bytes of the events
	WireBytes int64         // message body bytes published (first sends)
}

// EventsPerSec is the end-to-end rate.
func (r Result) EventsPerSec() float64 { return float64(r.Events) / r.Elapsed.Seconds() }

// WireRatio is raw NDJSON bytes ÷ bytes published.
func (r Result) WireRatio() float64 { return float64(r.RawBytes) / float64(r.WireBytes) }

// Connect dials url for a benchmark.
func Connect(url string) (*nats.Conn, error) {
	return nats.Connect(url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(100*time.Millisecond))
}

// RunSluice ingests total events, cycling through events, through the Go
// API of a node spooling in dir, from producers goroutines in calls of per
// events, and returns once JetStream has acknowledged all of them. opts may
// adjust the node.
func RunSluice(ctx context.Context, nc *nats.Conn, dir string, events [][]byte, total, producers, per int, opts aggregator.Options) (Result, error) {
	opts.Dir, opts.Conn = dir, nc
	if opts.Node == "" {
		opts.Node = "bench"
	}
	n, err := aggregator.New(opts)
	if err != nil {
		return Result{}, err
	}
	defer n.Close()
	// Warm up: the stream exists and a first batch went through.
	if err := n.Ingest(ctx, "ingest", events[0]); err != nil {
		return Result{}, err
	}
	if err := waitAcked(ctx, n, 1); err != nil {
		return Result{}, err
	}
	per = min(per, len(events))
	calls := total / per
	start := time.Now()
	errc := make(chan error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for c := p; c < calls; c += producers {
				i := c * per % (len(events) - per + 1)
				if err := n.Ingest(ctx, "ingest", events[i:i+per]...); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return Result{}, err
	}
	sent := uint64(calls * per)
	if err := waitAcked(ctx, n, sent+1); err != nil {
		return Result{}, err
	}
	el := time.Since(start)
	cs := n.Stats().Classes["ingest"]
	return Result{Events: int(sent), Elapsed: el, RawBytes: int64(cs.RawBytes), WireBytes: int64(cs.WireBytes)}, nil
}

func waitAcked(ctx context.Context, n *aggregator.Node, want uint64) error {
	for n.Stats().Classes["ingest"].Acked < want {
		select {
		case <-ctx.Done():
			return fmt.Errorf("acked %d of %d: %w", n.Stats().Classes["ingest"].Acked, want, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// RunNaive publishes total events, cycling through events, each as its own
// JetStream message to stream NAIVE, asynchronously with at most window
// unacknowledged, without any spool, and returns once all are acknowledged.
func RunNaive(ctx context.Context, nc *nats.Conn, events [][]byte, total, window int) (Result, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		return Result{}, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "NAIVE", Subjects: []string{"naive.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		return Result{}, err
	}
	var raw int64
	start := time.Now()
	for i := range total {
		ev := events[i%len(events)]
		raw += int64(len(ev))
		if _, err := js.PublishAsync("naive.ingest", ev); err != nil {
			return Result{}, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	return Result{Events: total, Elapsed: time.Since(start), RawBytes: raw + int64(total), WireBytes: raw}, nil
}

// DiskUsage returns the bytes of the regular files under dir.
func DiskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Mem is a process's memory, in bytes, from /proc/PID/status.
type Mem struct {
	RSS  int64 // resident set: anonymous plus file-backed pages mapped and touched
	Peak int64 // high-water mark of RSS
	Anon int64 // anonymous resident memory (heap, stacks)
	File int64 // file-backed resident pages, e.g. spool segments mapped by bbolt (reclaimable)
}

// ReadMem returns the memory of this process now.
func ReadMem() Mem { return readMem("/proc/self/status") }

// readMem reads the memory figures of a /proc/PID/status file (zero where
// there is none).
func readMem(path string) Mem {
	var m Mem
	b, err := os.ReadFile(path)
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.RSS = v << 10
		case "VmHWM:":
			m.Peak = v << 10
		case "RssAnon:":
			m.Anon = v << 10
		case "RssFile:":
			m.File = v << 10
		}
	}
	return m
}
