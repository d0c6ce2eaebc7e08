package aggregator_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/wire"
)

// streamRanges reads the whole stream in order and returns, per class, the
// spool ranges of its batches in stream order.
func streamRanges(t *testing.T, nc *nats.Conn) map[string][][2]uint64 {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "SLUICE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := wire.NewDecoder(0, wire.WithDictionaries(wire.NewStreamDictionaries(js, "SLUICE")))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out := make(map[string][][2]uint64)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("stream seq %d: %v", seq, err)
		}
		b, err := dec.Decode(nats.Header(msg.Header), msg.Data)
		if err != nil {
			t.Fatalf("decode stream seq %d: %v", seq, err)
		}
		out[b.Class] = append(out[b.Class], [2]uint64{b.First, b.Last})
	}
	return out
}

// TestPipelineStreamOrder: with parallel compression and a healthy
// upstream (no retries), each class's batches land in the stream in the
// order their ranges were claimed, tiling the class's spool from 1, every
// event once. The stream exists before the node starts: batches published
// while the node is still creating it fail and are retried, and a retried
// batch may land after later ones (package doc, Caveats).
func TestPipelineStreamOrder(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SLUICE", Subjects: []string{"sluice.>"}, Duplicates: 10 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) {
		o.Classes = priority.Defaults(0)
		for i := range o.Classes {
			o.Classes[i].Batch.MaxEvents = 40 // many batches, several compressing at once
		}
	})
	var wg sync.WaitGroup
	for _, c := range []string{"ingest", "critical"} {
		wg.Go(func() { ingest(t, n, c, 0, 6000, 250) })
	}
	wg.Wait()
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := n.Stats()
	for _, c := range []string{"ingest", "critical"} {
		if cs := st.Classes[c]; cs.Acked != 6000 || cs.Retries != 0 {
			t.Fatalf("%s: acked %d, retries %d; want 6000 and none", c, cs.Acked, cs.Retries)
		}
	}
	exactlyOnce(t, collect(t, nc, 12000, 30*time.Second), 6000, "ingest", "critical")
	for c, rs := range streamRanges(t, nc) {
		next := uint64(1)
		for i, r := range rs {
			if r[0] != next {
				t.Fatalf("%s: batch %d in the stream is %d-%d, want it to start at %d (%v)", c, i, r[0], r[1], next, rs)
			}
			next = r[1] + 1
		}
		if next != 6001 {
			t.Errorf("%s: batches end at %d, want 6000", c, next-1)
		}
	}
}

// TestPipelineShutdownMidStream: nodes stopped while their pipelines are
// full (a drain that must deliver everything, then hard stops with
// batches cut, compressing and in flight) lose nothing: after a last
// start, the stream holds every event exactly once.
func TestPipelineShutdownMidStream(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	dir := t.TempDir()
	big := func(o *aggregator.Options) {
		o.Classes = priority.Defaults(0)
		o.Classes[1].Batch.MaxEvents = 100
	}

	// A drain while ingest goes on: everything acknowledged is delivered
	// before Shutdown returns.
	n := newNode(t, dir, nc, big)
	var wg sync.WaitGroup
	wg.Go(func() { ingest(t, n, "ingest", 0, 4000, 200) })
	wg.Wait()
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cs := n.Stats().Classes["ingest"]; cs.Acked != 4000 || cs.Depth != 0 {
		t.Fatalf("after the drain: acked %d, depth %d; want 4000, 0", cs.Acked, cs.Depth)
	}

	// Hard stops mid-pipeline: what was cut stays claimed.
	for round := range 3 {
		n := newNode(t, dir, nc, big)
		ingest(t, n, "ingest", 4000+round*4000, 4000, 400)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		n.Shutdown(ctx)
	}
	newNode(t, dir, nc, nil)
	exactlyOnce(t, collect(t, nc, 16000, 60*time.Second), 16000, "ingest")
}
