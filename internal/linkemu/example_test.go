package linkemu_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sluicehq/sluice/internal/linkemu"
)

// A ping through a link with 20 ms each way takes at least 40 ms.
func Example() {
	// The upstream: an echo server here, nats-server in the bench.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()

	l, err := linkemu.New(linkemu.Options{
		Upstream: ln.Addr().String(),
		Settings: linkemu.Symmetric(linkemu.Shape{Bandwidth: 20 * linkemu.Mbit, Latency: 20 * time.Millisecond}),
	})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	c, err := net.Dial("tcp", l.Addr()) // instead of ln.Addr()
	if err != nil {
		panic(err)
	}
	defer c.Close()
	start := time.Now()
	buf := []byte("ping")
	if _, err := c.Write(buf); err != nil {
		panic(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		panic(err)
	}
	fmt.Println(string(buf), "after ≥ 40ms:", time.Since(start) >= 40*time.Millisecond)
	fmt.Println(l.Settings())
	// Output:
	// ping after ≥ 40ms: true
	// both 20Mbit/s +20ms q=250000B
}

// The step-change and outage scenarios of the bench, as one script.
func ExampleLink_Run() {
	l, err := linkemu.New(linkemu.Options{Upstream: "127.0.0.1:4222"})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	link := func(rate linkemu.Rate) linkemu.Settings {
		return linkemu.Symmetric(linkemu.Shape{Bandwidth: rate, Latency: 20 * time.Millisecond})
	}
	down := link(20 * linkemu.Mbit)
	down.Outage = linkemu.OutageBlackhole
	script := linkemu.Schedule{
		{At: 0, Settings: link(20 * linkemu.Mbit)},
		{At: 60 * time.Second, Settings: link(5 * linkemu.Mbit)},
		{At: 120 * time.Second, Settings: link(20 * linkemu.Mbit)},
		{At: 180 * time.Second, Settings: down},
		{At: 210 * time.Second, Settings: link(20 * linkemu.Mbit)},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond) // the bench waits 4 min
	defer cancel()
	err = l.Run(ctx, script)
	fmt.Println(l.Settings(), err)
	// Output:
	// both 20Mbit/s +20ms q=250000B context deadline exceeded
}
