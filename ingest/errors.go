package ingest

import "errors"

// ErrInvalidOptions is wrapped by NewHandler's errors: a bad key, class or
// limit in Options.
var ErrInvalidOptions = errors.New("ingest: invalid options")
