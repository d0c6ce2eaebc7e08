package linkemu

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/natstest"
)

// TestThroughNATS runs a nats.go client through a 5 Mbit/s, 20 ms link to
// a real nats-server and checks the RTT it sees and the rate a subscriber
// (connected directly) receives its publishes at.
func TestThroughNATS(t *testing.T) {
	const (
		rate    = 5 * Mbit
		oneWay  = 20 * time.Millisecond
		payload = 32 << 10
	)
	srv := natstest.Start(t)
	l := newLink(t, srv.Addr().String(), Symmetric(Shape{Bandwidth: rate, Latency: oneWay}))

	nc, err := nats.Connect("nats://"+l.Addr(), nats.Name("linkemu-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	direct, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()

	measure(t, func(t *testing.T) error {
		var rtt time.Duration
		for i := range 5 {
			d, err := nc.RTT()
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 || d < rtt {
				rtt = d
			}
		}
		t.Logf("nats RTT through link (min of 5): %v", rtt)
		if rtt < 2*oneWay {
			t.Errorf("RTT %v < 2×%v", rtt, oneWay)
		}
		if rtt > 2*oneWay+20*time.Millisecond {
			return fmt.Errorf("RTT %v, want < %v", rtt, 2*oneWay+20*time.Millisecond)
		}
		return nil
	})

	measure(t, func(t *testing.T) error {
		// Publish 2 s worth at once; the subscriber sees the link drain it.
		n := int(float64(rate) / 8 * dur(2*time.Second, time.Second).Seconds() / payload)
		var mu sync.Mutex
		var arrivals []time.Time
		got := make(chan struct{})
		sub, err := direct.Subscribe("linkemu.bulk", func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			if len(m.Data) != payload {
				t.Errorf("message of %d bytes, want %d", len(m.Data), payload)
			}
			arrivals = append(arrivals, time.Now())
			if len(arrivals) == n {
				close(got)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := direct.Flush(); err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte{'x'}, payload)
		for range n {
			if err := nc.Publish("linkemu.bulk", data); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.FlushTimeout(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(30 * time.Second): // a guard against hanging, not a measurement
			mu.Lock()
			t.Fatalf("subscriber got %d of %d messages", len(arrivals), n)
		}
		mu.Lock()
		first, last := arrivals[0], arrivals[n-1]
		mu.Unlock()
		r := float64((n-1)*payload) * 8 / last.Sub(first).Seconds()
		t.Logf("%d × %d B published through %v: subscriber received %.3f Mbit/s of payload over %v (%+.2f%%)",
			n, payload, rate, r/1e6, last.Sub(first).Round(time.Millisecond), 100*(r/float64(rate)-1))
		if !within(r, float64(rate), 0.05) {
			return fmt.Errorf("payload rate %.3f Mbit/s, want %v ±5%%", r/1e6, rate)
		}
		return nil
	})

	measure(t, func(t *testing.T) error {
		// A JetStream publish ack is one round trip through the link.
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "LINKEMU", Subjects: []string{"linkemu.js"}}); err != nil {
			t.Fatal(err)
		}
		var lo, hi time.Duration
		for i := range 5 {
			start := time.Now()
			if _, err := js.Publish(ctx, "linkemu.js", []byte("event")); err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			if i == 0 || d < lo {
				lo = d
			}
			hi = max(hi, d)
		}
		t.Logf("JetStream publish→ack through link: min %v max %v", lo, hi)
		if lo < 2*oneWay {
			t.Errorf("ack after %v < 2×%v", lo, oneWay)
		}
		if hi > 2*oneWay+30*time.Millisecond {
			return fmt.Errorf("ack after %v, want < %v", hi, 2*oneWay+30*time.Millisecond)
		}
		return nil
	})
	s := l.Stats()
	t.Logf("link stats: up %d B, down %d B, conns %d", s.Upstream.Bytes, s.Downstream.Bytes, s.Conns)
}
