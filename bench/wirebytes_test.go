package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
)

// BenchmarkWireBytesConstrained measures the bytes a node puts on a
// constrained uplink per event, shaped and unshaped, side by side: the
// issue-13 figure "on a 4 Mbit/s link the shaped node puts no more bytes
// per event on the wire than the unshaped one". A backlog of real Segment
// SDK events (sdk_wire_from_apache/segment.events.ndjson under
// blast.DataDir, each given a unique id) is
// ingested into the ingest class of a node with the default classes and
// the link unknown to it, and shipped through the link emulator (4 Mbit/s,
// 20 ms each way) to a NATS server; the bytes are the emulator's, upstream
// (bodies, headers, protocol). Runs alternate shaped, unshaped, shaped,
// unshaped. SLUICE_WIREBYTES=N sets the events per run (it skips without
// it: a run takes about N/8,000 seconds); SLUICE_WIREBYTES_REPS the pairs
// (default 2); SLUICE_WIREBYTES_NODEGRADE=1 gives ingest the plan none at
// every level, so that the shaped node's bytes are not cut by dropped
// fields (by default the backlog raises the level, and ingest's plan drops
// low-priority fields).
func BenchmarkWireBytesConstrained(b *testing.B) {
	n, _ := strconv.Atoi(os.Getenv("SLUICE_WIREBYTES"))
	if n <= 0 {
		b.Skip("set SLUICE_WIREBYTES to the events per run (e.g. 100000)")
	}
	reps := 2
	if v, err := strconv.Atoi(os.Getenv("SLUICE_WIREBYTES_REPS")); err == nil && v > 0 {
		reps = v
	}
	events := uniqueEvents(b, n)
	for range b.N {
		var per [2][]float64
		for r := range 2 * reps {
			shaped := r%2 == 0
			bpe, ratio, degraded, took := wireBytesRun(b, events, shaped)
			mode := "unshaped"
			if shaped {
				mode = "shaped"
			}
			b.Logf("%s: %.1f wire bytes/event (node's ratio %.2f×, %.0f%% of batches with fields dropped by the level), %d events in %v",
				mode, bpe, ratio, 100*degraded, len(events), took.Round(time.Millisecond))
			per[r%2] = append(per[r%2], bpe)
		}
		mean := func(v []float64) float64 {
			var s float64
			for _, x := range v {
				s += x
			}
			return s / float64(len(v))
		}
		b.ReportMetric(mean(per[0]), "shaped-B/event")
		b.ReportMetric(mean(per[1]), "unshaped-B/event")
		b.ReportMetric(mean(per[0])/mean(per[1]), "shaped/unshaped")
	}
}

// uniqueEvents returns n events cycling through the Segment sample
// (segmentEvents), each with a unique "id" put first.
func uniqueEvents(b *testing.B, n int) [][]byte {
	sample, source, err := segmentEvents(10_000)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("events: %s", source)
	out := make([][]byte, n)
	for i := range out {
		l := sample[i%len(sample)]
		out[i] = append(fmt.Appendf(nil, `{"id":"wb-%09d",`, i), l[1:]...)
	}
	return out
}

// wireBytesRun ships events through a fresh 4 Mbit/s link to a fresh
// server and returns the link's upstream bytes per event, the node's
// raw/wire ratio, the fraction of batches the degradation level dropped
// fields from, and how long the run took.
func wireBytesRun(b *testing.B, events [][]byte, shaped bool) (float64, float64, float64, time.Duration) {
	srv := natstest.Start(b)
	link, err := linkemu.New(linkemu.Options{
		Upstream: srv.Addr().String(),
		Settings: linkemu.Symmetric(linkemu.Shape{Bandwidth: 4 * linkemu.Mbit, Latency: 20 * time.Millisecond}),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer link.Close()
	nc, err := nats.Connect("nats://"+link.Addr(), nats.MaxReconnects(-1))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	classes := priority.Defaults(0)
	if os.Getenv("SLUICE_WIREBYTES_NODEGRADE") == "1" {
		for i := range classes {
			if classes[i].Name == priority.ClassIngest {
				classes[i].Plan = [priority.Levels]priority.Action{}
			}
		}
	}
	node, err := aggregator.New(aggregator.Options{
		Dir: b.TempDir(), Conn: nc, Node: "wb", Classes: classes,
		Link:   aggregator.Link{Unshaped: !shaped},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	before := link.Stats()
	for i := 0; i < len(events); i += 1000 {
		if err := node.Ingest(ctx, priority.ClassIngest, events[i:min(i+1000, len(events))]...); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Minute)
	var st aggregator.ClassStats
	for {
		st = node.Stats().Classes[priority.ClassIngest]
		if st.Acked >= uint64(len(events)) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("hang guard: %d of %d acknowledged", st.Acked, len(events))
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	d := link.Stats().Sub(before)
	if err := node.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	return float64(d.Upstream.Bytes) / float64(len(events)), float64(st.RawBytes) / float64(st.WireBytes),
		float64(st.Degraded) / float64(max(st.Batches, 1)), took
}
