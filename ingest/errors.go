package ingest

import (
	"context"
	"errors"

	"github.com/sluicehq/sluice/aggregator"
)

// ErrInvalidOptions is wrapped by NewPipeline's and NewHandler's errors: a
// bad key, class or limit in Options.
var ErrInvalidOptions = errors.New("ingest: invalid options")

// outcome is what became of the events of one Sink call: the one
// translation of the Sink's errors (aggregator's, which are the spool's),
// shared by both doors. The HTTP handler turns it into a status, the NATS
// source into an ack, a delayed nak or a term.
type outcome uint8

const (
	outStored   outcome = iota // durable
	outDropped                 // refused and counted by a drop_newest class: not kept, not retried
	outFull                    // the class is at its cap (block): retry later
	outNoSpace                 // the spool's disk is full: retry later
	outClosed                  // the node is shutting down: retry later
	outTooLarge                // the call or an event is larger than the node stores
	outInvalid                 // an event or the class is invalid: retrying cannot help
	outCanceled                // the caller's context ended first: nothing of the call is durable
	outFailed                  // anything else: retry later
)

// outcomeOf translates a Sink error.
func outcomeOf(err error) outcome {
	switch {
	case err == nil:
		return outStored
	case errors.Is(err, aggregator.ErrDropped):
		return outDropped
	case errors.Is(err, aggregator.ErrFull):
		return outFull
	case errors.Is(err, aggregator.ErrNoSpace):
		return outNoSpace
	case errors.Is(err, aggregator.ErrClosed):
		return outClosed
	case errors.Is(err, aggregator.ErrTooLarge):
		return outTooLarge
	case errors.Is(err, aggregator.ErrInvalidEvent), errors.Is(err, aggregator.ErrInvalidClass):
		return outInvalid
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return outCanceled
	}
	return outFailed
}

// kept reports whether the Sink took the events: durable, or dropped by
// policy (counted by design, never retried).
func (o outcome) kept() bool { return o == outStored || o == outDropped }

// final reports whether a retry of the same events cannot succeed: the
// caller must split the call or give the events up.
func (o outcome) final() bool { return o == outTooLarge || o == outInvalid }
