package linkemu

import "errors"

var (
	// ErrInvalidOptions is returned (wrapped) by New when Options are
	// unusable: no upstream address, a negative size, bad Settings.
	ErrInvalidOptions = errors.New("linkemu: invalid options")
	// ErrInvalidSettings is returned (wrapped) by Set and Run for a negative
	// bandwidth, latency, jitter or queue size, an unknown Outage, or a
	// Schedule whose steps are not in time order.
	ErrInvalidSettings = errors.New("linkemu: invalid settings")
	// ErrClosed is returned by Set, SetDown and Run after Close.
	ErrClosed = errors.New("linkemu: link closed")
)
