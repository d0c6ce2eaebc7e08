package aggregator

import (
	"errors"

	"github.com/sluicehq/sluice/spool"
)

// Errors returned by Node. The conditions a producer must react to (full,
// no space, dropped, too large, closed) are the spool's own values, not
// copies of them: one vocabulary from the spool to the edge, which
// translates it once (package ingest into an HTTP status or a NATS
// acknowledgement). Test them with errors.Is.
var (
	// ErrClosed is returned by Ingest after Shutdown or Close has begun.
	// It is spool.ErrClosed.
	ErrClosed = spool.ErrClosed

	// ErrFull is returned by Ingest when the class's spool is at its cap and
	// the class's overflow policy is block. Callers turn it into
	// backpressure (HTTP 429 with Retry-After) and retry later. It is
	// spool.ErrFull.
	ErrFull = spool.ErrFull

	// ErrNoSpace is returned by Ingest when the filesystem holding the spool
	// is full (or its quota exhausted): nothing was kept. Unlike ErrFull it
	// is no configured cap but a fault for an operator (or for upstream
	// acknowledgements, which free segments) to clear. Callers answer HTTP
	// 503 with Retry-After (not 507, which SDKs do not retry) and retry
	// later; the error's text names files, so do not show it to producers.
	// Node.DiskFull reports the state. It is spool.ErrNoSpace.
	ErrNoSpace = spool.ErrNoSpace

	// ErrDropped is returned by Ingest when the class's overflow policy is
	// drop_newest and the events were refused. They are counted, not kept.
	// It is spool.ErrDropped.
	ErrDropped = spool.ErrDropped

	// ErrTooLarge is returned by Ingest for an event or a call larger than
	// the node accepts. It is spool.ErrTooLarge.
	ErrTooLarge = spool.ErrTooLarge

	// ErrInvalidEvent is returned by Ingest for an event that is not a JSON
	// object. No event of the call is kept.
	ErrInvalidEvent = errors.New("aggregator: invalid event")

	// ErrInvalidClass is returned by Ingest for a class name that cannot be
	// a spool directory and a NATS subject token.
	ErrInvalidClass = errors.New("aggregator: invalid class")

	// ErrInvalidOptions is returned by New for options that cannot work.
	ErrInvalidOptions = errors.New("aggregator: invalid options")
)
