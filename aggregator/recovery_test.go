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
// spool cap (1 MiB segments) while its upstream is away until the spool is
// full (the producer is refused with ErrFull), then brings the upstream
// back and checks the invariant: a healthy link drains, every acknowledged
// event reaches the stream once, and the producer is served again. Before
// the fix the time-to-full signal put the level at 3, which deferred
// ingest, the class whose backlog raised it: the spool stayed full and the
// node shipped nothing more (2 runs in 5). Each state is waited for, with
// the hang guard; none is timed.
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
	for i := range runs {
		t.Run("run"+strconv.Itoa(i), fullSpoolOutage)
	}
}

func fullSpoolOutage(t *testing.T) {
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
	mon.waitAcked(t, 0, hangGuard, "first acks")

	shutdown(t, srv)
	downAt := time.Now()
	refusedBefore := refusedCount(ld)
	// The outage lasts until the stall's conditions hold: the spool is full
	// (the producer is refused) and the level is 3.
	for deadline := guard(0); refusedCount(ld) == refusedBefore || n.Stats().Link.Level < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: after %v of outage, refused %d more events (cap %d bytes), level %d; want the spool full at level 3: %+v",
				hangGuard, refusedCount(ld)-refusedBefore, 3<<20, n.Stats().Link.Level, n.Stats())
		}
	}
	down := time.Since(downAt)
	ackedAtUp, depthAtUp := totals(n.Stats())

	srv = startAt(t, srvDir, port)
	upAt := time.Now()
	// The invariant, judged on liveness, not speed.
	mon.waitAcked(t, ackedAtUp, hangGuard, "publishing after the restart")
	// The producer keeps posting on the healthy link: it is served again.
	servedAt := ld.ackedCount()
	for deadline := guard(0); ld.ackedCount() == servedAt; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: the producer was refused for %v after the upstream came back: %+v", hangGuard, n.Stats())
		}
	}
	ld.stopLoad()
	drained := drainNode(t, n, hangGuard)
	mon.close()

	tally := checkExactlyOnce(t, connect(t, srv.ClientURL()), "SLUICE", ld)
	t.Logf("outage %v (until the spool was full at level 3), spool depth %d at the restart; drained %v after the load stopped (%v after the restart); max level %d",
		down.Round(time.Millisecond), depthAtUp, drained.Round(time.Millisecond), time.Since(upAt).Round(time.Millisecond), mon.maxLevel())
	logTally(t, tally, n.Stats())
}

func refusedCount(ld *faultLoad) int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.refused
}
