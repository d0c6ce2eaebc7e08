package observe

import "time"

// StatusSchema is the version of the JSON document served at
// /api/v1/status. Fields may be added within a version; a change of a
// field's meaning or a removal bumps it.
const StatusSchema = 1

// Status is the document served at GET /api/v1/status, built by the
// Sampler at each sample. Rates ("…_per_second") are averages over
// WindowSeconds, computed from counter deltas between samples; totals
// count since the node started. Byte rates are wire (compressed) bytes
// unless named otherwise, the unit of the shaper's guarantees and
// ceilings. Durations are in seconds.
type Status struct {
	Schema int    `json:"schema"`         // StatusSchema
	Node   string `json:"node,omitempty"` // SamplerOptions.Name
	// Version is the node binary's identity (SamplerOptions.Version), as
	// `sluice version` prints it.
	Version string    `json:"version,omitempty"`
	Time    time.Time `json:"time"` // when the sample was taken (RFC 3339)
	// IntervalSeconds is the time between samples: how often the page
	// should poll.
	IntervalSeconds float64 `json:"interval_seconds"`
	// WindowSeconds is the span the rates and latency quantiles cover:
	// SamplerOptions.Window, or less right after the sampler started
	// (0 at the first sample, when every rate is 0).
	WindowSeconds float64 `json:"window_seconds"`
	// Accepting is true while the node takes events (/readyz is 200
	// unless the spool's disk is full).
	Accepting bool `json:"accepting"`
	// StreamRefused is why the node publishes nothing to its stream (a
	// stream that breaks its promises, upstream_stream.on_mismatch:
	// refuse), or empty while it publishes.
	StreamRefused string        `json:"stream_refused,omitempty"`
	Link          LinkStatus    `json:"link"`
	Spool         SpoolStatus   `json:"spool"`
	Classes       []ClassStatus `json:"classes"` // in the node's class order
	// History has one point per sample, oldest first, over the last
	// SamplerOptions.History.
	History []HistoryPoint `json:"history"`
}

// LinkStatus is the shaper's view of the upstream link.
type LinkStatus struct {
	Level       int    `json:"level"`       // degradation level 0 (normal) .. 3 (critical only)
	LinkLevel   int    `json:"link_level"`  // the part of Level from link health; only it defers classes
	Recovering  bool   `json:"recovering"`  // the signals cleared and the backlog drains at their level, not the dwell's
	Transitions uint64 `json:"transitions"` // level changes since start
	// CapacityBytesPerSecond is the estimated capacity; TargetBytesPerSecond
	// min(configured ceiling, capacity) × headroom; PacingBytesPerSecond
	// the rate the lanes are given now; DeliveryBytesPerSecond the latest
	// delivery-rate sample; RateBytesPerSecond the wire bytes all classes
	// published per second over the window.
	CapacityBytesPerSecond int64   `json:"capacity_bytes_per_second"`
	TargetBytesPerSecond   int64   `json:"target_bytes_per_second"`
	PacingBytesPerSecond   int64   `json:"pacing_bytes_per_second"`
	DeliveryBytesPerSecond int64   `json:"delivery_bytes_per_second"`
	RateBytesPerSecond     float64 `json:"rate_bytes_per_second"`
	MinRTTSeconds          float64 `json:"min_rtt_seconds"` // minimum ack RTT over the last 10 s
	SRTTSeconds            float64 `json:"srtt_seconds"`    // smoothed ack RTT
	// CPUDelaySeconds is the RTT inflation the node's own CPU explains, not
	// read as the link's queue; SchedP99Seconds the goroutines' scheduling
	// delay (p99) it comes from. Both over the last 3 s.
	CPUDelaySeconds float64        `json:"cpu_delay_seconds"`
	SchedP99Seconds float64        `json:"sched_p99_seconds"`
	ErrorRate       float64        `json:"error_rate"`      // failed attempts per attempt, smoothed, 0..1
	InFlightBytes   int64          `json:"in_flight_bytes"` // published, not yet acknowledged
	State           string         `json:"estimator_state"` // startup, cruise, up, probe_rtt
	Signals         map[string]int `json:"signals"`         // level each degradation signal asks for, by name
}

// SpoolStatus is the spool as a whole.
type SpoolStatus struct {
	Bytes       int64 `json:"bytes"`       // disk bytes of all segments
	Quarantined int   `json:"quarantined"` // damaged files moved aside since start
}

// ClassStatus is one traffic class (lane).
type ClassStatus struct {
	Name     string `json:"name"`
	Priority int    `json:"priority"` // 0 highest .. 7 lowest
	Critical bool   `json:"critical"` // strict priority
	// Action is the plan's action at the current level: none,
	// drop_fields, throttle or defer; Deferred is true while the class
	// sends nothing.
	Action   string `json:"action"`
	Deferred bool   `json:"deferred"`

	// RateBytesPerSecond is the actual rate: wire bytes published per
	// second. GuaranteedBytesPerSecond and CeilingBytesPerSecond are the
	// configured guarantee and ceiling (0: none; a class without a ceiling
	// is bounded by the link's target). With a link of unknown capacity
	// (link_mbit 0, the default) the default classes' percentages are of
	// nothing, so both are 0; the fields below say what is in force.
	RateBytesPerSecond       float64 `json:"rate_bytes_per_second"`
	GuaranteedBytesPerSecond int64   `json:"guaranteed_bytes_per_second"`
	CeilingBytesPerSecond    int64   `json:"ceiling_bytes_per_second"`
	// EffectiveGuaranteedBytesPerSecond is the guarantee in force now
	// (scaled down when the guarantees exceed the link's target, 0 while
	// throttled or deferred, and 0 without a configured guarantee).
	// EffectiveCeilingBytesPerSecond is the ceiling in force now: the
	// class's own, or the rate the lanes share (the link's target, or the
	// estimator's probe above it: Link.PacingBytesPerSecond) where that
	// is lower or the class has none; CeilingSource says which, "class"
	// or "link". Both 0 (and CeilingSource "") while the class is
	// deferred or the node is unshaped.
	EffectiveGuaranteedBytesPerSecond int64  `json:"effective_guaranteed_bytes_per_second"`
	EffectiveCeilingBytesPerSecond    int64  `json:"effective_ceiling_bytes_per_second"`
	CeilingSource                     string `json:"ceiling_source"`
	// Share is how the class gets capacity now, as the lanes enforce it:
	//
	//	strict      critical: before every other class, up to its ceiling in force
	//	guaranteed  its guarantee in force, then borrowing by priority up to its ceiling in force
	//	priority    no guarantee in force: what the classes before it leave, by
	//	            priority, then weight (every class, with the default
	//	            link_mbit 0)
	//	leftover    throttled by the level's plan: only what no class with a guarantee takes
	//	deferred    nothing: the level's plan defers it
	//	unshaped    the shaper is off (unshaped: true): one FIFO for every class
	Share string `json:"share"`

	InEventsPerSecond    float64 `json:"in_events_per_second"`    // events ingested
	InBytesPerSecond     float64 `json:"in_bytes_per_second"`     // their raw bytes
	AckedEventsPerSecond float64 `json:"acked_events_per_second"` // events acknowledged by JetStream
	RetriesPerSecond     float64 `json:"retries_per_second"`
	ErrorsPerSecond      float64 `json:"errors_per_second"` // failed publish attempts

	// BacklogEvents is the events spooled and not yet acknowledged;
	// BacklogBytes an estimate of their bytes (BacklogEvents × the mean
	// size of the events ingested since start, at most SpoolBytes);
	// SpoolBytes the disk bytes of the class's spool segments, which
	// also hold acknowledged events until their segment is deleted.
	BacklogEvents    uint64  `json:"backlog_events"`
	BacklogBytes     int64   `json:"backlog_bytes"`
	SpoolBytes       int64   `json:"spool_bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"` // of the oldest unacknowledged event
	InFlightBatches  int64   `json:"in_flight_batches"`

	// Dropped is every event lost since start: DroppedByReason summed,
	// whose reasons are the spool's (drop_oldest, drop_newest,
	// quarantine), too_large and expired (older than the class's max
	// age). Refused counts events Ingest refused because the spool was
	// full: the producer was told and kept them.
	Dropped         uint64            `json:"dropped"`
	DroppedByReason map[string]uint64 `json:"dropped_by_reason"`
	Refused         uint64            `json:"refused"`

	// CompressionRatio is raw bytes per wire byte since start (0 before
	// the first batch); EventsPerBatch the mean since start.
	CompressionRatio float64 `json:"compression_ratio"`
	EventsPerBatch   float64 `json:"events_per_batch"`
	// Compression is the level the class's batches are compressed at now
	// (fastest, default, better, best); CompressionAuto whether the
	// policy chooses it (compression auto); BatchTargetBytes the raw
	// bytes bound of its next batch; Bottleneck what bounds the class at
	// that level (link, cpu; unknown without a link estimate; "" for a
	// fixed level); CompressionBusy its compression workers' busy
	// fraction.
	Compression      string  `json:"compression"`
	CompressionAuto  bool    `json:"compression_auto"`
	BatchTargetBytes int     `json:"batch_target_bytes"`
	Bottleneck       string  `json:"bottleneck"`
	CompressionBusy  float64 `json:"compression_busy"`
	// Dictionary is the class's trained zstd dictionary.
	Dictionary DictStatus `json:"dictionary"`
	// Latency is ingest → JetStream ack over the window.
	Latency LatencyStatus `json:"latency"`
}

// DictStatus is a class's zstd dictionary (aggregator.DictOptions): its
// mode, the id in use (0: none; the key in the stream's dictionary
// bucket), the held-out ratios with and without it at the last training
// or check (0 before), and its counters since start.
type DictStatus struct {
	Mode          string  `json:"mode"`
	ID            uint32  `json:"id"`
	Ratio         float64 `json:"ratio"`
	PlainRatio    float64 `json:"plain_ratio"`
	Batches       uint64  `json:"batches"`
	Trainings     uint64  `json:"trainings"`
	Adoptions     uint64  `json:"adoptions"`
	PublishErrors uint64  `json:"publish_errors"`
}

// LatencyStatus summarises the end-to-end latencies of the batches
// acknowledged in the window, accurate to about 10%.
type LatencyStatus struct {
	Count      uint64  `json:"count"` // batches acknowledged in the window
	P50Seconds float64 `json:"p50_seconds"`
	P95Seconds float64 `json:"p95_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
}

// HistoryPoint is one sample of the link, for the page's level strip and
// rate chart. Keys are short: a point repeats once a second for minutes.
type HistoryPoint struct {
	UnixMilli int64 `json:"t"`     // sample time, Unix milliseconds
	Level     int   `json:"level"` // degradation level
	// Rate is the wire bytes/s all classes published since the previous
	// sample; Capacity, Target are the link's, in bytes/s.
	Rate     float64 `json:"rate"`
	Capacity int64   `json:"capacity"`
	Target   int64   `json:"target"`
	SRTT     float64 `json:"srtt"`    // smoothed RTT, seconds
	Backlog  uint64  `json:"backlog"` // events spooled over all classes
}
