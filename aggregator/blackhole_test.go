package aggregator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/internal/natstest"
)

// A blackhole never disconnects: the level reaches 3 by failed attempts,
// which defers ingest. The budget's retries go out anyway, as probes, so
// the node sees the link come back by itself (within seconds: TCP's own
// retransmit backoff after the outage takes most of them), not after the
// level's dwell, and every event arrives once. The dwell here is a day,
// so a node that waited for it would hang: the recovery is judged on
// reaching the state within the hang guard, not on how fast it came.
func TestBlackholeRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("a 12 s outage")
	}
	srv := natstest.Start(t)
	link, err := linkemu.New(linkemu.Options{Upstream: srv.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	nc := connect(t, "nats://"+link.Addr())
	n := newNode(t, t.TempDir(), nc, func(o *aggregator.Options) {
		o.Link.Dwell = 24 * time.Hour // recovery must not wait for it
	})
	ingest(t, n, "ingest", 0, 200, 20)
	collect(t, nc, 200, hangGuard)

	if err := link.SetDown(true); err != nil {
		t.Fatal(err)
	}
	deadline := guard(0)
	for i := 200; n.Stats().Link.Level < 3; i += 20 {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: level %d after %v of blackhole", n.Stats().Link.Level, hangGuard)
		}
		ingest(t, n, "ingest", i, 20, 20)
		time.Sleep(100 * time.Millisecond)
	}
	// The outage goes on at level 3 (part of the scenario, not a wait for
	// a state): the probes' TCP retransmits back off.
	time.Sleep(2 * time.Second)
	ingested := int(n.Stats().Classes["ingest"].Ingested)
	if err := link.SetDown(false); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for deadline := guard(0); n.Stats().Classes["ingest"].Acked < uint64(ingested); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: %v after the link came back: acked %d of %d, level %d", hangGuard, n.Stats().Classes["ingest"].Acked, ingested, n.Stats().Link.Level)
		}
	}
	timingBound(t, fmt.Sprintf("all %d events acknowledged after the link came back", ingested), time.Since(back), 15*time.Second)
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, collect(t, connect(t, srv.ClientURL()), ingested, hangGuard), ingested, "ingest")
}
