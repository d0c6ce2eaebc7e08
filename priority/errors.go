package priority

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers test with errors.Is.
var (
	// ErrInvalidClass reports a class definition that Validate rejects.
	ErrInvalidClass = errors.New("priority: invalid class")
	// ErrInvalidPath reports a field path that is empty, has an empty
	// segment, or uses '*' anywhere but as a whole trailing segment.
	ErrInvalidPath = errors.New("priority: invalid field path")
	// ErrInvalidRule reports a routing rule that names no class or an
	// unknown one, or has an invalid field path.
	ErrInvalidRule = errors.New("priority: invalid routing rule")
	// ErrMalformedJSON reports an event that is not one well-formed JSON
	// object. DropFields returns the input unchanged with this error.
	ErrMalformedJSON = errors.New("priority: malformed JSON event")
)
