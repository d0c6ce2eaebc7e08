// Package embednats runs a NATS server with JetStream inside the calling
// process, for a service that embeds a sluice node and has no NATS server
// of its own to publish to, and for `sluice run` on its defaults.
//
//	srv, err := embednats.Start(embednats.Options{Dir: "/var/lib/svc/nats"})
//	...
//	defer srv.Close()
//	nc, err := srv.Connect() // in-process: no TCP, no port
//	node, err := aggregator.New(aggregator.Options{Dir: "/var/lib/svc/spool", Conn: nc})
//
// The server stores its streams under Options.Dir, so what it
// acknowledged survives a restart of the process on the same directory.
// It listens for clients on a loopback port (a free one by default;
// Server.ClientURL names it) unless Options.NoListen is set, and
// Server.Connect always connects in-process, without a socket.
//
// The sluice library packages (aggregator, ingest, wire, …) never import
// nats-server; only this package, the binary and the tests do, so a
// service that publishes to a remote NATS does not link a server.
//
// # Caveats
//
//   - A JetStream ack is not an fsync. By default the server syncs its
//     file store every two minutes, so a power loss (not a process crash)
//     can lose messages it acknowledged, which the sluice spool has
//     already deleted. Set Options.SyncAlways where that matters more
//     than throughput, or publish to a replicated (R3) stream elsewhere.
//   - The server shares the process: its memory and CPU count against the
//     service's, and it stops when the process does. It is one server, not
//     a cluster.
//   - The server's limits are its defaults except Options.MaxPayload:
//     1 MB messages, no account limits, no authentication. Listen on
//     loopback only (the default Host) or not at all (NoListen).
package embednats
