// Package linkemu emulates a constrained network link between sluice and
// a NATS server, for tests and the bench: a loopback TCP proxy with a
// bandwidth limit, added latency and jitter, a bounded router queue, and
// outages, all changeable live or from a Schedule.
//
//	l, err := linkemu.New(linkemu.Options{
//		Upstream: srv.Addr().String(), // the NATS server
//		Settings: linkemu.Symmetric(linkemu.Shape{Bandwidth: 20 * linkemu.Mbit, Latency: 20 * time.Millisecond}),
//	})
//	...
//	nc, err := nats.Connect("nats://" + l.Addr())
//	go l.Run(ctx, linkemu.Schedule{{At: 10 * time.Second, Settings: fiveMbit}, ...})
//
// netem is not available on the bench machines (design.md), so delay,
// jitter and outages must come from here; rates can also be shaped here,
// so tests need no root.
//
// # Model
//
// Each accepted connection is forwarded to Options.Upstream. Each direction
// (Settings.Upstream: client → server; Settings.Downstream: server →
// client) is one emulated link, shared by every connection through the
// Link, made of three stages:
//
//  1. A queue (Shape.QueueBytes; default 100 ms of transmission at the
//     rate), FIFO across connections, like a router's buffer. While it is
//     full the link stops reading from senders, so their writes block once
//     their socket buffers fill: backpressure, not loss.
//  2. A bottleneck that transmits one chunk at a time at Shape.Bandwidth:
//     a chunk of n bytes departs at max(now, linkFreeAt) + n·8/bps, and
//     linkFreeAt advances to it. An idle link does not save up credit, so
//     there are no bursts above the rate (a serialization-delay model, not
//     a token bucket with depth). Chunks are about 2 ms of transmission
//     (at least 1500 bytes, at most Options.MaxChunk), read from the
//     sender as they come, and delivered whole (store and forward).
//  3. Propagation: a chunk becomes visible to the receiver at departure +
//     Latency + a jitter uniform in [0, Jitter] from a seeded generator.
//     Chunks of one connection never overtake each other: an arrival is
//     never earlier than the previous chunk's. Propagation is a timestamped
//     queue per connection drained by a writer that sleeps until each
//     arrival and writes everything due in one writev, so latency does not
//     reduce throughput (it is a bandwidth-delay pipe, not a sleep per
//     write), up to Options.Window bytes in flight per connection and
//     direction (default 4 MiB).
//
// Without a Bandwidth the queue and bottleneck are skipped; with a zero
// Shape the link copies bytes straight through, like io.Copy (about 5% of a
// core at 1 Gbit/s on the bench machine; 1 Gbit/s shaped costs about 30%).
//
// Set changes everything live. Bytes already past the bottleneck keep the
// delay they were given; queued bytes leave at the new rate, so a rate
// change shows at the receiver within about a millisecond (the bottleneck
// releases chunks up to 1 ms ahead of the clock).
//
// Outages: Settings.Outage = OutageBlackhole (the default of SetDown(true))
// forwards nothing in either direction but keeps connections open; held
// bytes are delivered when the link comes back, no earlier than one
// Latency after recovery, and nothing is lost. OutageReset resets every
// open connection (undelivered bytes are dropped and counted in
// Stats.Dropped) and resets new ones as they are accepted, until the link
// comes back.
//
// Measured by this package's timing checks (SLUICE_LINK_TIMING=1, see
// the README's gated runs) under -race on the 2-CPU bench machine, idle: 1, 10, 50 and 100 Mbit/s within 1% over 1 s windows (also with
// 50 ms latency, and shared by 3 connections); 40 ms each way gives an
// 80.8–81.6 ms ping-pong; the 90 ms starting 10 ms after a 20 → 5 Mbit/s
// step already average 4.9 Mbit/s; through nats-server at 5 Mbit/s and
// 20 ms, a subscriber receives 5.00 Mbit/s of payload, the client's RTT is
// 41 ms and a JetStream publish is acked in 41–49 ms.
//
// # Caveats
//
//   - Application-level emulation. The proxy terminates TCP on both sides
//     (a split connection, like a performance-enhancing proxy): the
//     sender's kernel sees a loopback peer, so its congestion window and
//     RTT estimate never see the emulated link. What an application
//     measures (a NATS PING, a JetStream ack, sluice's ack RTT and
//     delivery rate) does see it, and that is what sluice's estimator
//     uses. The sender's own socket send buffer (autotuned up to tcp_wmem,
//     4 MiB here) sits in front of the emulated queue and adds to queueing
//     delay under overload, as it would on a real link; the proxy keeps its
//     receive buffers small (Options.ReadBuffer) to add little of its own.
//   - No packet loss, reordering or duplication: TCP would hide them
//     anyway, except for their effect on congestion control, which a split
//     proxy cannot reproduce.
//   - Bandwidth counts payload bytes. A real link also carries TCP/IP
//     headers, so its goodput is 3–5% below its line rate; set Bandwidth to
//     the goodput you mean.
//   - Delays are never early but can be late by the Go runtime's wake-up
//     latency: about 0.1 ms on an idle machine, milliseconds when other
//     jobs load the CPUs. A backlogged bottleneck that wakes late catches
//     up (up to 20 ms) so the rate holds over a window; a longer stall costs
//     capacity. For this reason the tests check rates and latency bounds
//     only when SLUICE_LINK_TIMING is set, and then retry them; otherwise
//     they check what no timing excuses (data intact, never early).
//   - Jitter is applied per chunk and cannot reorder, so on dense traffic
//     (chunks closer together than Jitter) delays bunch towards
//     Latency+Jitter: with 10 ms + [0, 20 ms] and a message every 1 ms the
//     median one-way delay is 26 ms, not 20.
//   - A blackhole holds rather than drops: connections stay open through
//     any outage, and no TCP retransmission timeout or keepalive fires; only
//     the endpoints' own timeouts (NATS pings) end them. New connections
//     during a blackhole complete the handshake (the kernel accepts them)
//     and are dialed upstream, but carry nothing until it ends.
//   - "Refused" during an OutageReset means accepted and reset at once: a
//     client sees ECONNRESET from connect or from its first read.
//   - Kernel shaping is the cross-check: as root, tbf/htb on a veth pair in
//     a network namespace shape within 5% (design.md). This package does
//     not do that cross-check; the bench can.
package linkemu
