package aggregator_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/internal/natstest"
)

// A blackhole never disconnects: the level reaches 3 by failed attempts,
// which defers ingest. The budget's retries go out anyway, as probes, so
// the node sees the link come back within seconds (TCP's own retransmit
// backoff after the outage takes most of them), not after the level's
// dwell, and every event arrives once.
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
		o.Link.Dwell = 30 * time.Second // recovery must not wait for it
	})
	ingest(t, n, "ingest", 0, 200, 20)
	collect(t, nc, 200, 10*time.Second)

	if err := link.SetDown(true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 200; n.Stats().Link.Level < 3; i += 20 {
		if time.Now().After(deadline) {
			t.Fatalf("level %d after 20 s of blackhole", n.Stats().Link.Level)
		}
		ingest(t, n, "ingest", i, 20, 20)
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	ingested := int(n.Stats().Classes["ingest"].Ingested)
	if err := link.SetDown(false); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	for n.Stats().Classes["ingest"].Acked < uint64(ingested) {
		if time.Since(back) > 15*time.Second {
			t.Fatalf("15 s after the link came back: acked %d of %d, level %d", n.Stats().Classes["ingest"].Acked, ingested, n.Stats().Link.Level)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("all %d events acknowledged %v after the link came back", ingested, time.Since(back).Round(time.Millisecond))
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, collect(t, connect(t, srv.ClientURL()), ingested, 10*time.Second), ingested, "ingest")
}
