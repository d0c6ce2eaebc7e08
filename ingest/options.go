package ingest

import (
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/priority"
)

// Defaults of Options.
const (
	DefaultClass           = "ingest"
	DefaultMaxBodyBytes    = 8 << 20
	DefaultMaxEventBytes   = 1 << 20
	DefaultMaxRejected     = 100
	DefaultMaxEvents       = 10_000
	DefaultRetryAfterFull  = 1 // seconds
	DefaultRetryAfterClose = 5 // seconds
	DefaultDedupWindow     = 10 * time.Minute
	DefaultDedupEntries    = 1_000_000
)

// Options configure the handler. The zero value takes every default.
type Options struct {
	// DefaultClass is the class of an event that no explicit class, key
	// or routing rule places. Default "ingest".
	DefaultClass string
	// Router classifies each event by its fields and source endpoint
	// ("events", "segment", "snowplow", "posthog") when the request names
	// no class (?class=, X-Sluice-Class) and its key has none. Nil: every
	// such event goes to DefaultClass.
	Router *priority.Router
	// Keys are the write keys. With none, every request is accepted; with
	// any, a request must present one of them (see Key) or get 401.
	Keys []Key
	// Node is stamped on every event as "sluiceNode", with the time the
	// request arrived as "receivedAt" (see StampNode), unless NoStamp.
	Node    string
	NoStamp bool
	// DedupWindow is how long an SDK's event id (Segment messageId,
	// Snowplow eid, PostHog uuid) is remembered to drop client retries;
	// default 10 minutes, negative turns dedup off. DedupEntries bounds the
	// ids held (about 41 bytes each); default 1,000,000, the oldest go
	// first. Ids are scoped by the key's Source, else the endpoint.
	DedupWindow  time.Duration
	DedupEntries int
	// MaxBodyBytes bounds the request body as received, in bytes.
	// Default 8 MiB; a larger body gets 413.
	MaxBodyBytes int64
	// MaxDecodedBytes bounds a compressed body after decompression, in
	// bytes. Default MaxBodyBytes; a larger one gets 413.
	MaxDecodedBytes int64
	// MaxEventBytes bounds one event as received, in bytes; a larger one
	// is rejected on its own. Default 1 MiB, the aggregator's default
	// MaxEventBytes (the stamp adds about 70 bytes to it).
	MaxEventBytes int
	// MaxEvents bounds the events (valid or not) of one request; a larger
	// batch gets 413 and none of it is kept. Default 10,000.
	MaxEvents int
	// MaxRejected bounds the rejections listed in a response. Default 100.
	MaxRejected int
	// RetryAfterFull and RetryAfterClose are the Retry-After seconds of a
	// 429 (a class full) and a 503 (shutting down). Defaults 1 and 5.
	RetryAfterFull, RetryAfterClose int
	// Logger receives failures of the Sink that answer 500. Nil discards.
	Logger *slog.Logger
	// Now is the clock of stamps and the dedup window. Nil: time.Now.
	Now func() time.Time
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
	if o.MaxEvents <= 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	if o.MaxRejected <= 0 {
		o.MaxRejected = DefaultMaxRejected
	}
	if o.RetryAfterFull <= 0 {
		o.RetryAfterFull = DefaultRetryAfterFull
	}
	if o.RetryAfterClose <= 0 {
		o.RetryAfterClose = DefaultRetryAfterClose
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.DedupEntries <= 0 {
		o.DedupEntries = DefaultDedupEntries
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = timeNow
	}
}
