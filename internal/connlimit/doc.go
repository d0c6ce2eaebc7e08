// Package connlimit bounds the connections an internet-facing HTTP server
// holds open, so that idle or silent sockets cannot take the descriptors
// the spool needs for its own files, and so that running out of them makes
// the accept loop wait instead of spin. It is a net.Listener wrapper:
//
//	ln, err := connlimit.New(inner, connlimit.Options{PerIP: 64, RejectHTTP: true})
//	...
//	srv := &http.Server{Handler: h, ConnState: ln.ConnState, ReadHeaderTimeout: 5 * time.Second}
//	err = srv.Serve(ln)
//
// # Counting
//
// A connection holds a slot from the Accept that returns it until its
// first Close: closed by http.Server, by a handler that hijacked it, or by
// eviction; Close is idempotent and frees the slot once. Options.Max bounds
// the slots (default DefaultMax: the soft RLIMIT_NOFILE minus
// Options.Reserve descriptors for the spool, NATS and logs, at most
// DefaultCap), and Options.PerIP, when set, bounds the slots of one client
// address (an IPv4 address or an IPv6 /64).
//
// # At a limit
//
// ConnState, set as http.Server.ConnState, tracks which connections are
// idle between keep-alive requests. When a new connection finds Max slots
// taken, the connection idle the longest is closed to make room, if it has
// been idle at least Options.EvictAfter (1 s); otherwise the new one is
// refused. A client at its PerIP cap gives up its own longest-idle
// connection on the same terms, or is refused; it never evicts another
// client's. Connections that have not finished their first request's
// headers (StateNew, including TLS handshakes) and those serving a request
// are never evicted.
//
// A refused connection never reaches the caller of Accept. Without
// Options.RejectHTTP it is closed at once (after reading what the client
// already sent, so the close is a FIN and not a reset). With it, the client
// gets a fixed HTTP/1.1 answer, 503 at the limit or 429 at the per-client
// cap, with Retry-After: 1, Connection: close and a JSON body. The answer
// waits, in a goroutine, for the client's first bytes (at most 1 s), since
// an HTTP client takes a response that arrives before its request for
// garbage (Go's fails the request); then the refuser sends its FIN and reads
// and discards until the client closes (at most 500 ms), like net/http's own
// lingering close, so that a client still sending its body meets no reset.
// At most 64 refusals wait at once; beyond that a refused connection is
// answered at once, unasked, and closed. Close closes those waiting and
// waits for their goroutines.
//
// # Accept errors
//
// When the inner Accept fails with a temporary error (EMFILE, ENFILE,
// ENOBUFS, ENOMEM, EINTR, EAGAIN, a pending network error, or any error
// whose Temporary method says so), Accept sleeps and retries instead of
// returning it: 5 ms, doubling to 1 s, reset by the next success. An
// episode is logged once (Options.Logger, warning level) with its number of
// errors: when the wait reaches 1 s, or when the episode ends if it ends
// before. Close wakes a sleeping Accept, which returns net.ErrClosed. Other
// errors are returned as they are.
//
// Stats returns the limits, the open, idle and refusing gauges and the
// counters (accepted, refused, refused per client, evicted, accept errors),
// for metrics.
//
// # Caveats
//
//   - The limit applies after accept(2): the kernel completes handshakes and
//     queues connections in the listen backlog (somaxconn) whatever the
//     limit, and each refused one costs an accept, a write and a close, and
//     with RejectHTTP a descriptor and a goroutine for up to 1.5 s (64 at
//     most). Descriptors used outside this listener (spool, NATS, other
//     listeners, outgoing connections) are only accounted for by Reserve.
//   - A flood of silent connections beyond the limit keeps the 64 refusal
//     slots busy, so other refused clients are answered unasked: browsers
//     and curl read that answer, Go's client may report an error instead.
//   - Eviction closes the socket, like http.Server's IdleTimeout: a client
//     whose next request is already on the wire sees the connection close
//     without an answer (or, if the request arrived, a reset) and must
//     retry; Go's client retries only idempotent requests there. EvictAfter
//     keeps this away from connections in active use. Eviction sends no
//     HTTP/2 GOAWAY, and net/http reports a new HTTP/2 connection idle as
//     soon as its preface is read, so only EvictAfter protects its first
//     request.
//   - A connection counts as active from accept until its first request's
//     headers are read, so silent and slow-header connections (slowloris)
//     and TLS handshakes are never evicted: http.Server.ReadHeaderTimeout
//     (about 5 s) is what bounds them, and PerIP what bounds one client's
//     share of them.
//   - Without ConnState wired, no connection is ever idle: at the limit new
//     connections are refused, even while idle keep-alive ones hold slots.
//   - The per-client cap sees the TCP peer: behind a proxy or load balancer
//     all clients share one address (leave PerIP at 0), and behind carrier
//     NAT many phones do.
//   - With TLS in front of this listener (RejectHTTP false), a refused
//     client sees its handshake fail, not a 503.
//   - Closing the conn returned by NetConn directly frees no slot; close the
//     wrapper.
package connlimit
