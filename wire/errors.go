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
	// match its headers (event count, size limit, the dictionary its
	// frames name).
	ErrBody = errors.New("wire: bad body")

	// ErrDict is returned for a version 2 batch whose dictionary cannot be
	// had now: the Decoder has no dictionary source, or the source failed
	// (the bucket is unreachable, the key is not there yet). It wraps the
	// source's error. The batch itself may be fine: retry it later, never
	// drop it.
	ErrDict = errors.New("wire: dictionary unavailable")

	// ErrBadDict is returned when a dictionary source answers with bytes
	// that are not the dictionary asked for: not in zstd's dictionary
	// format, another dictionary id embedded, or larger than MaxDictSize.
	// The batch may be fine and the source wrong: keep the batch and tell
	// the source's operator.
	ErrBadDict = errors.New("wire: bad dictionary")
)
