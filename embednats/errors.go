package embednats

import "errors"

// Errors returned by the package.
var (
	// ErrInvalidOptions is returned by Start for options that cannot work.
	ErrInvalidOptions = errors.New("embednats: invalid options")

	// ErrNotReady is returned by Start when the server does not accept
	// connections within Options.ReadyTimeout (a taken port, most often).
	ErrNotReady = errors.New("embednats: server not ready")
)
