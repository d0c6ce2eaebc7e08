package wire

import "errors"

// These errors are returned by Decode, wrapped with the detail of what was
// wrong.
var (
	// ErrVersion is returned for a batch of a format version this package
	// does not know.
	ErrVersion = errors.New("wire: unsupported format version")

	// ErrHeader is returned when a required header is missing or malformed.
	ErrHeader = errors.New("wire: bad header")

	// ErrBody is returned when the body does not decompress or does not
	// match its headers (event count, size limit).
	ErrBody = errors.New("wire: bad body")
)
