package connlimit

import (
	"fmt"
	"log/slog"
	"time"
)

// DefaultReserve is the number of descriptors DefaultMax leaves to the rest
// of the process when Options.Reserve is zero: spool segments and their
// directory handles, bbolt, NATS connections, the admin listener, logs, and
// the refused connections still being answered (up to 64 with RejectHTTP).
const DefaultReserve = 512

// DefaultCap is the most connections DefaultMax ever allows, because memory
// runs out before descriptors do: measured with Go 1.26's http.Server, each
// connection costs about 14 KiB of Go heap and stack before its first
// request and 18 KiB idle between keep-alive requests (a goroutine, a 4 KiB
// read and a 4 KiB write buffer, the server's state), plus kernel socket
// memory that the pod's cgroup also charges. 2048 of them is about 36 MiB,
// a tenth of a 384 MiB pod.
const DefaultCap = 2048

// DefaultEvictAfter is the Options.EvictAfter used when it is zero.
const DefaultEvictAfter = time.Second

// Backoff bounds for temporary Accept errors (EMFILE, ENFILE, ENOBUFS,
// ENOMEM, …): the first wait is backoffMin, each further error in a row
// doubles it, up to backoffMax; a successful accept resets it. These are
// net/http's own figures.
const (
	backoffMin = 5 * time.Millisecond
	backoffMax = time.Second
)

// How a refusal is answered with RejectHTTP. The answer waits for the
// client's first bytes (refuseWait), so that it answers a request, as HTTP
// clients expect (Go's drops a response that arrives before its request as
// unsolicited, and fails the request). After writing, the refuser sends
// its FIN and reads and discards until the client closes (refuseLinger), as
// net/http's own server does, so the client's writes never meet a reset.
// At most maxRefusing refusals wait at once, each holding a descriptor and
// a goroutine; beyond that a refused connection is answered at once, unasked.
const (
	refuseWait         = time.Second
	refuseLinger       = 500 * time.Millisecond
	rejectWriteTimeout = 50 * time.Millisecond
	maxRefusing        = 64
)

// Options configure a Listener. The zero value is usable: a limit derived
// from RLIMIT_NOFILE, no per-client cap, refused connections just closed.
type Options struct {
	// Max is the most connections open at once, counted from Accept to the
	// conn's first Close (hijacked conns included). Default 0:
	// DefaultMax(Reserve).
	Max int
	// PerIP is the most connections open at once from one client address
	// (one IPv4 address, or one IPv6 /64), as the TCP peer is seen: behind a
	// load balancer or proxy every client shares its address, so leave it 0
	// there. Carrier NAT puts many phones behind one IPv4 address, so size it
	// for that. Default 0: no per-client cap.
	PerIP int
	// Reserve is the number of descriptors kept for the rest of the process
	// when Max is derived. Ignored when Max is set. Default 0: DefaultReserve.
	Reserve int
	// EvictAfter is how long a connection must have been idle (between
	// keep-alive requests, as reported to ConnState) before it may be
	// closed to make room for a new one. It spares the connections of
	// producers that are sending right now, whose next request may already
	// be on the wire. Default 0: DefaultEvictAfter (1 s); set 1ns to make
	// every idle connection evictable.
	EvictAfter time.Duration
	// RejectHTTP makes a refused connection get a fixed response before it
	// is closed: 503 (connection limit) or 429 (per-client cap), with
	// Retry-After: 1, Connection: close and a short JSON body. It is written
	// once the client has sent its first bytes (or after 1 s of silence),
	// then the connection is closed gracefully: at most 64 refusals are in
	// this state at once, each for at most 1.5 s, holding a descriptor from
	// Reserve. Set it only when the listener serves plain HTTP; with TLS in
	// front (ServeTLS, tls.NewListener) leave it false and refused
	// connections are just closed. Default false.
	RejectHTTP bool
	// Logger receives one warning per episode of accept errors. Default nil:
	// discard.
	Logger *slog.Logger
}

// setDefaults validates o and fills in its defaults.
func (o *Options) setDefaults() error {
	switch {
	case o.Max < 0:
		return fmt.Errorf("%w: Max %d < 0", ErrInvalidOptions, o.Max)
	case o.PerIP < 0:
		return fmt.Errorf("%w: PerIP %d < 0", ErrInvalidOptions, o.PerIP)
	case o.Reserve < 0:
		return fmt.Errorf("%w: Reserve %d < 0", ErrInvalidOptions, o.Reserve)
	case o.EvictAfter < 0:
		return fmt.Errorf("%w: EvictAfter %v < 0", ErrInvalidOptions, o.EvictAfter)
	}
	if o.Max == 0 {
		o.Max = DefaultMax(o.Reserve)
	}
	if o.EvictAfter == 0 {
		o.EvictAfter = DefaultEvictAfter
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DefaultMax is the connection limit New uses when Options.Max is zero:
// the soft RLIMIT_NOFILE minus reserve (DefaultReserve when reserve ≤ 0),
// but at least half the soft limit (so a small limit still leaves half for
// the rest of the process), at most DefaultCap, and at least 1. Go raises
// the soft limit to the hard one at start-up, so in a container this is
// usually the hard limit (often 1048576) minus 512, capped: 2048. Where the
// limit cannot be read (not Unix) it is DefaultCap.
func DefaultMax(reserve int) int {
	if reserve <= 0 {
		reserve = DefaultReserve
	}
	soft, ok := softNoFile()
	if !ok {
		return DefaultCap
	}
	return maxFor(soft, reserve)
}

// maxFor is DefaultMax for a given soft limit.
func maxFor(soft uint64, reserve int) int {
	if soft > 1<<30 {
		soft = 1 << 30 // RLIM_INFINITY and friends
	}
	n := int(soft) - reserve
	if n < int(soft)/2 {
		n = int(soft) / 2
	}
	return max(1, min(n, DefaultCap))
}
