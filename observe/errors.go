package observe

import "errors"

// Errors returned by the package.
var (
	// ErrInvalidOptions is returned by NewHandler, NewCollector and
	// NewSampler for sources or options that cannot work.
	ErrInvalidOptions = errors.New("observe: invalid options")

	// ErrRunning is returned by Sampler.Run while another Run of the same
	// sampler has not returned.
	ErrRunning = errors.New("observe: sampler already running")
)
