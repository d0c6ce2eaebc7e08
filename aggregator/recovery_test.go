package aggregator_test

// A healthy link always drains (issue 14, first item): a node whose spool
// filled up during an outage must ship its backlog once the upstream is
// back, however loud its backlog signals are.

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
)

// TestFullSpoolOutageRecovers posts steadily into a node with a 3 MiB
// spool cap (1 MiB segments) while its upstream is away for 10 s (3 s with
// -short), so that the producer is refused with ErrFull, then brings the
// upstream back and checks the invariant: a healthy link drains, every
// acknowledged event reaches the stream once, and the producer is served
// again. Before the fix the time-to-full signal put the level at 3, which
// deferred ingest, the class whose backlog raised it: the spool stayed full
// and the node shipped nothing more (2 runs in 5).
//
// SLUICE_RECOVERY_RUNS=20 repeats it (the gated run; see README).
func TestFullSpoolOutageRecovers(t *testing.T) {
	t.Parallel()
	runs := 1
	if s := os.Getenv("SLUICE_RECOVERY_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("SLUICE_RECOVERY_RUNS=%q: want a positive count", s)
		}
		runs = n
	}
	down := 10 * time.Second
	if testing.Short() {
		down = 3 * time.Second
	}
	for i := range runs {
		t.Run("run"+strconv.Itoa(i), func(t *testing.T) { fullSpoolOutage(t, down) })
	}
}

func fullSpoolOutage(t *testing.T, down time.Duration) {
	port := quietPort(t)
	srvDir := t.TempDir()
	srv := startAt(t, srvDir, port)
	nc := nodeConn(t, srv.ClientURL())
	n := faultNode(t, nc, func(o *aggregator.Options) {
		o.Spool.MaxBytes = 3 << 20
		o.Spool.SegmentBytes = 1 << 20
		o.Link.Dwell = 0 // the default 10 s: the stall held the level through it
	})
	mon := watchNode(t, n)
	// About 600 KB/s stored: the cap is reached a few seconds into the outage.
	ld := startLoad(t, n, loadSpec{classes: []string{"ingest"}, rate: 3000, pad: 100})
	mon.waitAcked(t, 0, 20*time.Second, "first acks")

	shutdown(t, srv)
	refusedBefore := refusedCount(ld)
	time.Sleep(down)
	if refusedCount(ld) == refusedBefore {
		t.Fatalf("the spool never filled during the %v outage (cap %d bytes): the test does not test the stall", down, 3<<20)
	}
	ackedAtUp, depthAtUp := totals(n.Stats())

	srv = startAt(t, srvDir, port)
	upAt := time.Now()
	// The invariant, judged on liveness, not speed: a minute is two orders
	// of magnitude above what the drain needs on loopback.
	mon.waitAcked(t, ackedAtUp, time.Minute, "publishing after the restart")
	servedAt := ld.ackedCount()
	time.Sleep(3 * time.Second) // the producer keeps posting on the healthy link
	if ld.ackedCount() == servedAt {
		t.Errorf("the producer was refused for 3 s after the upstream came back: %+v", n.Stats())
	}
	ld.stopLoad()
	drained := drainNode(t, n, time.Minute)
	mon.close()

	tally := checkExactlyOnce(t, connect(t, srv.ClientURL()), "SLUICE", ld)
	t.Logf("outage %v, spool depth %d at the restart; drained %v after the load stopped (%v after the restart); max level %d",
		down, depthAtUp, drained.Round(time.Millisecond), time.Since(upAt).Round(time.Millisecond), mon.maxLevel())
	logTally(t, tally, n.Stats())
}

func refusedCount(ld *faultLoad) int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.refused
}
