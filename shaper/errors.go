package shaper

import "errors"

// Sentinel errors.
var (
	// ErrInvalidOptions wraps every constructor's validation error.
	ErrInvalidOptions = errors.New("shaper: invalid options")
)
