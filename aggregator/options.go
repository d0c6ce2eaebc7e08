package aggregator

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/spool"
)

// ClassOptions are the batching and compression settings of one traffic
// class. The zero value takes every default.
type ClassOptions struct {
	// MaxEvents is the most events in one batch. Default 1000.
	MaxEvents int
	// MaxBytes is the most raw (uncompressed NDJSON) bytes in one batch; a
	// single larger event still travels alone. Default 768 KiB, which keeps
	// a compressed batch under JetStream's default 1 MB max_payload even for
	// incompressible events.
	MaxBytes int
	// Linger is how long a partial batch waits for more events before it is
	// sent. Default 20ms; negative means send at once.
	Linger time.Duration
	// Level is the zstd level. Default zstd.SpeedFastest: on real SDK
	// events in 1000-event batches it compresses as well as SpeedDefault
	// (about 13×) at about 1.4× its speed.
	Level zstd.EncoderLevel
	// Spool holds the class's spool cap and overflow policy.
	Spool spool.ClassOptions
}

// Options configure a Node. The zero value of every field except Conn and
// Dir is a working default.
type Options struct {
	// Node names this edge node in batch headers. Default: the host name.
	Node string
	// Dir is the spool directory. Required.
	Dir string
	// Conn is the upstream NATS connection. Required. It stays the caller's:
	// the Node never closes it. Configure it to reconnect forever
	// (nats.MaxReconnects(-1)) so the node survives the upstream going away.
	Conn *nats.Conn
	// Stream is the JetStream stream, created if missing. Default "SLUICE".
	Stream string
	// Subject is the subject prefix: a batch of class c goes to
	// Subject+"."+c, and a created stream listens on Subject+".>".
	// Default "sluice".
	Subject string
	// DuplicateWindow is the duplicate window of a stream the node creates.
	// It must cover the longest gap between a batch's first publish and its
	// republish after a restart. Default 10m. An existing stream is used as
	// it is.
	DuplicateWindow time.Duration
	// MaxInFlight bounds the batches of one class published and not yet
	// acknowledged. Default 16.
	MaxInFlight int
	// AckTimeout is how long a publish waits for its JetStream ack before it
	// is retried. Default 5s.
	AckTimeout time.Duration
	// RetryMin and RetryMax bound the exponential backoff (with full jitter)
	// between retries of a failed publish. Defaults 50ms and 5s.
	RetryMin, RetryMax time.Duration
	// MaxEventBytes is the largest single event Ingest accepts. Default
	// 1 MiB.
	MaxEventBytes int
	// Classes holds per-class settings; other classes use Default.
	Classes map[string]ClassOptions
	// Default applies to classes not in Classes.
	Default ClassOptions
	// Spool configures the spool (fsync policy, segment size, total cap).
	// Its Classes and Default are filled from the ClassOptions above.
	Spool spool.Options
	// Logger receives state changes (upstream lost and back, stream
	// created, spool recovery). Nil discards.
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Dir == "" {
		return fmt.Errorf("%w: Dir is required", ErrInvalidOptions)
	}
	if o.Conn == nil {
		return fmt.Errorf("%w: Conn is required", ErrInvalidOptions)
	}
	if o.Node == "" {
		o.Node = hostname()
	}
	if o.Stream == "" {
		o.Stream = "SLUICE"
	}
	if o.Subject == "" {
		o.Subject = "sluice"
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = 10 * time.Minute
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 16
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 50 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Second
	}
	if o.RetryMax < o.RetryMin {
		return fmt.Errorf("%w: RetryMax %v < RetryMin %v", ErrInvalidOptions, o.RetryMax, o.RetryMin)
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Default.setDefaults()
	classes := make(map[string]ClassOptions, len(o.Classes))
	for name, c := range o.Classes {
		c.setDefaults()
		classes[name] = c
	}
	o.Classes = classes
	o.Spool.Default = o.Default.Spool
	o.Spool.Classes = make(map[string]spool.ClassOptions, len(classes))
	for name, c := range classes {
		o.Spool.Classes[name] = c.Spool
	}
	if o.Spool.Logger == nil {
		o.Spool.Logger = o.Logger
	}
	return nil
}

func (c *ClassOptions) setDefaults() {
	if c.MaxEvents <= 0 {
		c.MaxEvents = 1000
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 768 << 10
	}
	if c.Linger == 0 {
		c.Linger = 20 * time.Millisecond
	}
	if c.Linger < 0 {
		c.Linger = 0
	}
	if c.Level == 0 {
		c.Level = zstd.SpeedFastest
	}
}

func (o *Options) class(name string) ClassOptions {
	if c, ok := o.Classes[name]; ok {
		return c
	}
	return o.Default
}
