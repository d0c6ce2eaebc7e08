package ingest

import "log/slog"

// Defaults of Options.
const (
	DefaultClass           = "ingest"
	DefaultMaxBodyBytes    = 8 << 20
	DefaultMaxEventBytes   = 1 << 20
	DefaultMaxRejected     = 100
	DefaultRetryAfterFull  = 1 // seconds
	DefaultRetryAfterClose = 5 // seconds
)

// Options configure the handler. The zero value takes every default.
type Options struct {
	// DefaultClass is the class of a request that names none. Default
	// "ingest".
	DefaultClass string
	// MaxBodyBytes bounds the request body as received, in bytes.
	// Default 8 MiB; a larger body gets 413.
	MaxBodyBytes int64
	// MaxDecodedBytes bounds a gzip body after decompression, in bytes.
	// Default MaxBodyBytes; a larger one gets 413.
	MaxDecodedBytes int64
	// MaxEventBytes bounds one line, in bytes; a longer line is rejected on
	// its own. Default 1 MiB, the aggregator's default MaxEventBytes.
	MaxEventBytes int
	// MaxRejected bounds the rejections listed in a response. Default 100.
	MaxRejected int
	// Logger receives failures of the Sink that answer 500. Nil discards.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.DefaultClass == "" {
		o.DefaultClass = DefaultClass
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxDecodedBytes <= 0 {
		o.MaxDecodedBytes = o.MaxBodyBytes
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = DefaultMaxEventBytes
	}
	if o.MaxRejected <= 0 {
		o.MaxRejected = DefaultMaxRejected
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}
