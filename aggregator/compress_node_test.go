package aggregator_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/internal/linkemu"
	"github.com/sluicehq/sluice/internal/natstest"
	"github.com/sluicehq/sluice/priority"
)

// TestCompressionPolicySlowLink: on a 4 Mbit/s link the link is the
// bottleneck, and an automatic class moves up from fastest to a denser
// level (the cores keep up with it). The test waits for the change,
// however long it takes (under the hang guard).
func TestCompressionPolicySlowLink(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	link, err := linkemu.New(linkemu.Options{
		Upstream: srv.Addr().String(),
		Settings: linkemu.Symmetric(linkemu.Shape{Bandwidth: 4 * linkemu.Mbit, Latency: 20 * time.Millisecond}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	n := newNode(t, t.TempDir(), connect(t, "nats://"+link.Addr()), nil)
	if c := n.Stats().Classes[priority.ClassIngest].Compression; c.Level != "fastest" || !c.Auto || c.Min != "fastest" || c.Max != "better" {
		t.Fatalf("at start: %+v, want auto fastest..better at fastest", c)
	}
	deadline := time.Now().Add(hangGuard)
	var c aggregator.CompressionStats
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; ; i += 500 {
		c = n.Stats().Classes[priority.ClassIngest].Compression
		// From fastest a change can only go up. (Where it settles depends
		// on the cores: under -race, a dense level on these events is slow enough
		// to be the bottleneck again, and the class comes back down.)
		if c.Changes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hang guard: the level never moved up on a 4 Mbit/s link: %+v, link %+v", c, n.Stats().Link)
		}
		// Keep a backlog of about 2 MB raw of events that compress about
		// 2× (half random hex): the link, not the producer nor the
		// cores (zstd under -race is slow), bounds the class.
		if st := n.Stats().Classes[priority.ClassIngest]; st.Depth < 2000 {
			evs := make([][]byte, 500)
			for j := range evs {
				evs[j] = fmt.Appendf(nil, `{"id":"slow-%d","type":"track","properties":{"pad":"%x"}}`, i+j, rnd.Uint64()*uint64(i+j+1))
				for range 30 {
					evs[j] = fmt.Appendf(evs[j][:len(evs[j])-3], `%016x"}}`, rnd.Uint64())
				}
			}
			if err := n.Ingest(context.Background(), priority.ClassIngest, evs...); err != nil {
				t.Fatal(err)
			}
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("ingest on 4 Mbit/s: %+v", c)
	if c.BatchBytes <= 0 || c.BatchBytes > 512<<10 {
		t.Errorf("%+v: want a batch bound within the class's 512 KiB", c)
	}
}

// TestCompressionPolicyLoopback: on loopback the link is never the
// bottleneck, and an automatic class stays at fastest.
//
// Not parallel: on a machine whose cores are taken by other tests, acks
// queue behind the CPU, the estimator reads that as a standing queue on
// the path, and the policy takes the link for the bottleneck (seen about
// once in six runs beside the other tests of this package under -race).
// Telling CPU contention from link congestion is issue 14's open work;
// this test checks the policy on the loopback it is meant for.
func TestCompressionPolicyLoopback(t *testing.T) {
	srv := natstest.Start(t)
	nc := connect(t, srv.ClientURL())
	n := newNode(t, t.TempDir(), nc, nil)
	const total = 60_000
	ingest(t, n, priority.ClassIngest, 0, total, 500)
	exactlyOnce(t, collect(t, nc, total, hangGuard), total, priority.ClassIngest)
	st := n.Stats()
	c := st.Classes[priority.ClassIngest].Compression
	t.Logf("ingest on loopback: %+v; link %+v", c, st.Link)
	if c.Level != "fastest" || c.Changes != 0 {
		t.Errorf("%+v: want fastest throughout", c)
	}
}
