package aggregator

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/priority"
	"github.com/sluicehq/sluice/spool"
)

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
	// DuplicateWindow is StreamConfig.DuplicateWindow under its older
	// name: the node's duplicate window, which must cover the longest gap
	// between a batch's first publish and its republish after a restart.
	// Default 10m. Set either, or both to the same value; after New both
	// hold it.
	DuplicateWindow time.Duration
	// StreamConfig are the settings of the stream: those a missing stream
	// is created with, and the promises an existing one is checked
	// against. See StreamOptions.
	StreamConfig StreamOptions
	// MaxInFlight bounds the batches of one class published and not yet
	// acknowledged (of all classes together when the link is unshaped).
	// Default 16.
	MaxInFlight int
	// AckTimeout is how long a publish waits for its JetStream ack before it
	// counts as failed and is retried. Default 5s.
	AckTimeout time.Duration
	// RetryMin and RetryMax bound the exponential backoff (full jitter)
	// between attempts of a failed publish. Defaults 100ms and 5s.
	RetryMin, RetryMax time.Duration
	// RetryBudget is the fraction of recent first sends that retries may
	// add (plus one retry per second), so a failing link never sees a retry
	// storm. Default 0.1.
	RetryBudget float64
	// MaxEventBytes is the largest single event Node.Ingest accepts, in
	// bytes; a larger one fails the call with ErrTooLarge. Default 1 MiB,
	// nats-server's default max_payload. Keep it near the upstream's
	// max_payload: an event that does not fit in one message even
	// compressed is acknowledged by Ingest, then dropped at publish and
	// counted in ClassStats.TooLarge.
	//
	// It is the limit of the node's own door, Ingest, and of nothing else.
	// Events that come through package ingest are bounded once, by that
	// pipeline's Options.MaxEventBytes (reloadable; a larger event is
	// refused on its own), and stored through IngestValid, which does not
	// check them again: no event meets both limits, so the two never
	// disagree about an event. A Sink that hides the Node (a wrapper with
	// only Ingest) gets the node's checks too: then set this to at least
	// the pipeline's limit plus its stamp. `sluice run` sets only the
	// pipeline's, from ingest.max_event_bytes.
	MaxEventBytes int
	// Classes are the traffic classes the node accepts; Ingest refuses
	// others with ErrInvalidClass. Default priority.Defaults(Link.Ceil):
	// critical, ingest, replication and backfill.
	Classes []priority.Class
	// Link describes the upstream link to the shaper.
	Link Link
	// Dictionary configures the per-class zstd dictionaries: by default
	// each class trains one on its own recent events and uses it where it
	// pays (DictAuto). A dictionary is written to the JetStream key-value
	// bucket wire.DictBucket(Stream) (created if missing, with the
	// stream's replicas and no TTL) and acknowledged before the first
	// batch that uses it is published.
	Dictionary DictOptions
	// Spool configures the node's spool: fsync policy, segment size and
	// total cap. The caps and overflow policy of each class are in Classes.
	Spool SpoolOptions
	// Logger receives state changes (upstream lost and back, level changes,
	// stream created, spool recovery). Nil discards.
	Logger *slog.Logger
}

// SpoolOptions are the spool settings a caller chooses; the node builds
// the spool's own options from them and from Classes (each class's cap and
// overflow policy). The zero value is a working default: fsync before each
// Ingest returns, 64 MiB segments, no total cap. New refuses invalid
// values with ErrInvalidOptions.
type SpoolOptions struct {
	// Fsync is the durability policy of Ingest. Default spool.FsyncAlways:
	// every commit is fsynced before Ingest returns (group commit shares
	// the fsync between concurrent calls). spool.FsyncInterval and
	// spool.FsyncNever trade the events of a power loss for throughput; a
	// process crash loses nothing under any policy.
	Fsync spool.Fsync
	// FsyncInterval is the longest time between two fsyncs under
	// spool.FsyncInterval; the node also fsyncs idle classes at this
	// period. Default 1s; must not be negative; ignored by the other
	// policies.
	FsyncInterval time.Duration
	// SegmentBytes is the size in bytes of one segment file: the unit the
	// spool deletes once its events are acknowledged. Default 64 MiB; 1 MiB
	// to 512 MiB. One Ingest call must fit in an empty segment (about
	// 1.1 × SegmentBytes), else it fails with ErrTooLarge.
	SegmentBytes int64
	// MaxBytes caps the disk bytes of all classes' segments together. 0
	// (default) is unlimited; must not be negative. When an Ingest would
	// exceed it, the class's overflow policy applies (priority.Class
	// Overflow: block answers ErrFull). A class's own cap is its MaxBytes.
	MaxBytes int64
}

// Link describes the upstream link for the shaper.
type Link struct {
	// Ceil is the configured capacity of the link in bytes/s, if known; 0
	// means unknown, and the estimator finds it from acks. The shaper plans
	// for min(Ceil, measured capacity) × Headroom.
	Ceil int64
	// Headroom is the fraction of the capacity the shaper plans to use.
	// Default 0.8: never plan for 100% utilization.
	Headroom float64
	// Unshaped turns the shaper off, for comparison: every class shares one
	// FIFO window of MaxInFlight batches, as fast as it drains, with no
	// token buckets, no degradation and no expiry.
	Unshaped bool
	// Tick is how often link health is evaluated and the degradation level
	// updated. Default 250ms.
	Tick time.Duration
	// Dwell is the least time between two steps down of the degradation
	// level (it falls one level per dwell, so a link back from level 3
	// takes three dwells to reach level 0). Default 10s.
	Dwell time.Duration
}

// setDefaults fills the defaults of o, checks it, and returns the options of
// its spool.
func (o *Options) setDefaults() (spool.Options, error) {
	var so spool.Options
	if o.Dir == "" {
		return so, fmt.Errorf("%w: Dir is required", ErrInvalidOptions)
	}
	if o.Conn == nil {
		return so, fmt.Errorf("%w: Conn is required", ErrInvalidOptions)
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
	if err := o.setStreamDefaults(); err != nil {
		return so, err
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 16
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 100 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Second
	}
	if o.RetryMax < o.RetryMin {
		return so, fmt.Errorf("%w: RetryMax %v < RetryMin %v", ErrInvalidOptions, o.RetryMax, o.RetryMin)
	}
	if o.RetryBudget == 0 {
		o.RetryBudget = 0.1
	}
	if o.RetryBudget < 0 || o.RetryBudget > 1 {
		return so, fmt.Errorf("%w: RetryBudget %v outside 0..1", ErrInvalidOptions, o.RetryBudget)
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = 1 << 20
	}
	if o.Link.Headroom == 0 {
		o.Link.Headroom = 0.8
	}
	if o.Link.Headroom < 0 || o.Link.Headroom > 1 {
		return so, fmt.Errorf("%w: Link.Headroom %v outside (0, 1]", ErrInvalidOptions, o.Link.Headroom)
	}
	if o.Link.Ceil < 0 {
		return so, fmt.Errorf("%w: negative Link.Ceil", ErrInvalidOptions)
	}
	if o.Link.Tick <= 0 {
		o.Link.Tick = 250 * time.Millisecond
	}
	if o.Link.Dwell <= 0 {
		o.Link.Dwell = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if len(o.Classes) == 0 {
		o.Classes = priority.Defaults(o.Link.Ceil)
	}
	if err := o.Dictionary.setDefaults(); err != nil {
		return so, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	for name := range o.Dictionary.Classes {
		if !slices.ContainsFunc(o.Classes, func(c priority.Class) bool { return c.Name == name }) {
			return so, fmt.Errorf("%w: Dictionary.Classes names %q, not a class", ErrInvalidOptions, name)
		}
	}
	if err := priority.Validate(o.Classes, priority.Rate{BytesPerSec: o.Link.Ceil}); err != nil {
		return so, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if o.Spool.Fsync < spool.FsyncAlways || o.Spool.Fsync > spool.FsyncNever {
		return so, fmt.Errorf("%w: Spool.Fsync %v", ErrInvalidOptions, o.Spool.Fsync)
	}
	if o.Spool.FsyncInterval < 0 || o.Spool.SegmentBytes < 0 || o.Spool.MaxBytes < 0 {
		return so, fmt.Errorf("%w: negative Spool.FsyncInterval, SegmentBytes or MaxBytes", ErrInvalidOptions)
	}
	if o.Spool.FsyncInterval == 0 {
		o.Spool.FsyncInterval = time.Second
	}
	// The spool checks SegmentBytes' range; New wraps its refusal in
	// ErrInvalidOptions.
	so = spool.Options{Fsync: o.Spool.Fsync, FsyncInterval: o.Spool.FsyncInterval,
		SegmentBytes: o.Spool.SegmentBytes, MaxBytes: o.Spool.MaxBytes, Logger: o.Logger,
		Classes: make(map[string]spool.ClassOptions, len(o.Classes))}
	for _, c := range o.Classes {
		if !spool.ValidClass(c.Name) {
			return so, fmt.Errorf("%w: class name %q: 1-64 bytes of [A-Za-z0-9_-]", ErrInvalidOptions, c.Name)
		}
		ov, err := spool.Block, error(nil)
		if c.Overflow != "" {
			ov, err = spool.ParseOverflow(c.Overflow)
		}
		if err != nil {
			return so, fmt.Errorf("%w: class %s: %w", ErrInvalidOptions, c.Name, err)
		}
		so.Classes[c.Name] = spool.ClassOptions{MaxBytes: c.MaxBytes, Overflow: ov}
	}
	return so, nil
}
