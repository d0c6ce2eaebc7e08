package spool

import "errors"

// Errors returned by the spool. Each is wrapped with the operation and its
// subject (for example "spool: append critical: spool is full"); test them with
// errors.Is.
var (
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("spool is closed")

	// ErrFull is returned by Append when a cap would be exceeded and the class's
	// Overflow policy is Block (or DropOldest found nothing left to drop).
	// Nothing was written; the caller should apply backpressure and retry later.
	ErrFull = errors.New("spool is full")

	// ErrNoSpace is returned by Append (and Claim) when the filesystem
	// holding the spool is full (ENOSPC) or the quota is exhausted (EDQUOT).
	// Nothing was written; the error also wraps the system's, so
	// errors.Is(err, syscall.ENOSPC) holds too. Unlike ErrFull it is no cap
	// but a fault an operator must fix (or acknowledgements relieve);
	// Spool.NoSpace reports the state, and appends resume by themselves once
	// there is room.
	ErrNoSpace = errors.New("disk full")

	// ErrDropped is returned by Append when a cap would be exceeded and the
	// class's Overflow policy is DropNewest: the events were refused and counted.
	ErrDropped = errors.New("events dropped by overflow policy")

	// ErrInvalidOptions is returned by Open for options out of range.
	ErrInvalidOptions = errors.New("invalid options")

	// ErrInvalidClass is returned for a class name that is not a non-empty token
	// of [A-Za-z0-9_-] of at most 64 bytes, or is the reserved name "quarantine".
	ErrInvalidClass = errors.New("invalid class name")

	// ErrInvalidRange is returned by Ack and Claim for an empty range, a range
	// starting at 0, or one beyond the class's last appended seq.
	ErrInvalidRange = errors.New("invalid range")

	// ErrTooLarge is returned by Append when one call's encoded events do not fit
	// in an empty segment (about 1.1 × Options.SegmentBytes).
	ErrTooLarge = errors.New("append too large for a segment")

	// ErrCorrupt reports a damaged record or file. Damaged sealed segments and a
	// damaged meta.db are quarantined rather than returned as errors.
	ErrCorrupt = errors.New("corrupt data")
)
