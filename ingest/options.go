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
	// DefaultMaxInflightBytes is MaxInflightBytes' default: a quarter of
	// a 256 MiB pod. `sluice run` derives its own from the memory limit.
	DefaultMaxInflightBytes = 64 << 20
	DefaultBudgetWait       = 250 * time.Millisecond
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
	// MaxInflightBytes is the memory budget of all requests in flight, in
	// bytes: bodies as they are received, decompressed, and rebuilt into
	// events and stamped are charged as they are produced, before they are
	// allocated, and given back when the request is answered. A quarter of
	// it is the pre-auth budget: what requests spend before their write
	// key passed (a body that carries its key is read and decompressed
	// before it can be checked), so that traffic without a valid key
	// cannot take the memory of producers that have one; the other three
	// quarters are for authorized requests (every request when no keys
	// are configured). A request whose
	// charge does not fit waits up to BudgetWait for others to finish,
	// then gets 429 with Retry-After. Default DefaultMaxInflightBytes
	// (64 MiB); it must hold at least MaxBodyBytes + MaxDecodedBytes.
	MaxInflightBytes int64
	// BudgetWait is how long a charge waits for the budget; default
	// 250 ms.
	BudgetWait time.Duration
	// MaxExpansion bounds the events of one body, in bytes as they would
	// be stored (before stamps), to this multiple of the body's decoded
	// size (and at least 64 KiB). Only merged batch-level members make a
	// body grow (Segment "context" and "integrations" are copied into
	// each message without its own); past the bound the request gets 413
	// before the copy is made. Default 8.
	MaxExpansion float64
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
	if o.MaxInflightBytes <= 0 {
		o.MaxInflightBytes = max(DefaultMaxInflightBytes, 4*(o.MaxBodyBytes+o.MaxDecodedBytes))
	}
	if o.BudgetWait <= 0 {
		o.BudgetWait = DefaultBudgetWait
	}
	if o.MaxExpansion <= 0 {
		o.MaxExpansion = DefaultMaxExpansion
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
