package aggregator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

// checkReport compares a ShutdownReport with the spool's own counts, read
// by spool.Check once the node is gone, and with the node's counters
// before and after Shutdown: what it says was left is what the spool
// holds, what it says was shipped is what JetStream acknowledged.
func checkReport(t *testing.T, dir string, rep aggregator.ShutdownReport, before, after aggregator.Stats) {
	t.Helper()
	chk, err := spool.Check(dir)
	if err != nil {
		t.Fatalf("spool.Check: %v", err)
	}
	pending := map[string]uint64{}
	for _, c := range chk.Classes {
		pending[c.Name] = c.Pending
	}
	var left uint64
	for _, c := range rep.Classes {
		if c.Left != pending[c.Class] {
			t.Errorf("%s: report says %d left, spool check says %d pending", c.Class, c.Left, pending[c.Class])
		}
		// before is taken just ahead of Shutdown: acks may land between
		// the two, so the report's count (from Shutdown's own start) can
		// be lower than the test's, never higher.
		if acked := after.Classes[c.Class].Acked - before.Classes[c.Class].Acked; c.Shipped > acked {
			t.Errorf("%s: report says %d shipped, JetStream acknowledged only %d since just before Shutdown", c.Class, c.Shipped, acked)
		}
		if (c.Left == 0) != (c.Reason == aggregator.LeftNone) {
			t.Errorf("%s: %d left with reason %v", c.Class, c.Left, c.Reason)
		}
		left += c.Left
	}
	if len(rep.Classes) != len(before.Classes) {
		t.Errorf("report has %d classes, the node %d", len(rep.Classes), len(before.Classes))
	}
	if rep.Left() != left {
		t.Errorf("Left() = %d, classes sum to %d", rep.Left(), left)
	}
	t.Logf("report: %+v", rep)
}

func class(rep aggregator.ShutdownReport, name string) aggregator.ClassDrain {
	for _, c := range rep.Classes {
		if c.Class == name {
			return c
		}
	}
	return aggregator.ClassDrain{}
}

// TestShutdownDrained: with the upstream up, Shutdown ships every spooled
// event and reports it; nothing is left and the spool agrees.
func TestShutdownDrained(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	dir := t.TempDir()
	n := newNode(t, dir, nc, nil)
	if _, ok := n.ShutdownReport(); ok {
		t.Fatal("ShutdownReport before Shutdown says ok")
	}
	ingest(t, n, "ingest", 0, 500, 50)
	ingest(t, n, "critical", 0, 50, 10)
	before := n.Stats()
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	after := n.Stats()
	rep, ok := n.ShutdownReport()
	if !ok {
		t.Fatal("no ShutdownReport after Shutdown")
	}
	checkReport(t, dir, rep, before, after)
	if rep.Left() != 0 || rep.TimedOut {
		t.Errorf("upstream up: %d left, timed out %v", rep.Left(), rep.TimedOut)
	}
	// What was not yet acknowledged just before Shutdown was shipped by
	// the lanes or by the drain: every ingested event was acknowledged.
	for _, c := range []string{"ingest", "critical"} {
		waiting := before.Classes[c].Depth
		if a := after.Classes[c]; a.Acked != a.Ingested {
			t.Errorf("%s: %d acknowledged in all, %d ingested", c, a.Acked, a.Ingested)
		}
		if got := class(rep, c).Shipped; got > waiting {
			t.Errorf("%s: report says %d shipped during the drain, only %d were waiting", c, got, waiting)
		}
	}
	// Later calls give the same answer.
	if err := n.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
	if again, _ := n.ShutdownReport(); again.Left() != rep.Left() || again.Shipped() != rep.Shipped() {
		t.Errorf("second report %+v, first %+v", again, rep)
	}
}

// TestShutdownUpstreamDown is issue 17's case: the upstream is down and
// 500 events are spooled. Shutdown must not say it drained: it leaves
// them, says why, and its numbers are the spool's.
func TestShutdownUpstreamDown(t *testing.T) {
	port := freePort(t)
	srv := startAt(t, t.TempDir(), port)
	nc := connect(t, srv.ClientURL())
	dir := t.TempDir()
	n := newNode(t, dir, nc, nil)
	ingest(t, n, "ingest", 0, 100, 50)
	collect(t, nc, 100, 10*time.Second)
	// In the stream is not yet acknowledged to the spool: wait for the
	// acks, or the server's stop leaves their batches in flight.
	for deadline := guard(0); n.Stats().Classes["ingest"].Depth != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %d ingest events not acknowledged after %v", n.Stats().Classes["ingest"].Depth, hangGuard)
		}
	}
	shutdown(t, srv)

	// The link fails: level 3 defers every class but critical.
	for deadline := guard(0); n.Stats().Link.LinkLevel != 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: link level %d %v after the upstream went away", n.Stats().Link.LinkLevel, hangGuard)
		}
	}
	ingest(t, n, "ingest", 100, 500, 50)
	ingest(t, n, "critical", 0, 50, 10) // never deferred: retried until the deadline
	before := n.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := n.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	after := n.Stats()
	rep, _ := n.ShutdownReport()
	checkReport(t, dir, rep, before, after)
	if !rep.TimedOut {
		t.Error("report: not timed out")
	}
	if c := class(rep, "ingest"); c.Left != 500 || c.Shipped != 0 || c.Reason != aggregator.LeftDeferred || c.Level != 3 {
		t.Errorf("ingest: %+v, want 500 left, deferred at level 3", c)
	}
	if c := class(rep, "critical"); c.Left != 50 || c.Shipped != 0 || c.Reason != aggregator.LeftUpstreamDown {
		t.Errorf("critical: %+v, want 50 left, upstream down", c)
	}
	if rep.Left() != 550 || rep.Shipped() != 0 {
		t.Errorf("report: %d left, %d shipped; want 550, 0", rep.Left(), rep.Shipped())
	}
}

// TestShutdownDeadline: the upstream is up but the link (a 2 kB/s
// ceiling) cannot carry the backlog before the deadline: the class is
// reported cut short by the deadline, not the upstream.
func TestShutdownDeadline(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	dir := t.TempDir()
	n := newNode(t, dir, nc, func(o *aggregator.Options) {
		o.Classes = priority.Defaults(0)
		o.Link.Ceil = 2000
	})
	ingest(t, n, "critical", 0, 5000, 100)
	before := n.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := n.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	after := n.Stats()
	rep, _ := n.ShutdownReport()
	checkReport(t, dir, rep, before, after)
	if c := class(rep, "critical"); c.Left == 0 || c.Reason != aggregator.LeftDeadline {
		t.Errorf("critical: %+v, want events left by the deadline", c)
	}
}
