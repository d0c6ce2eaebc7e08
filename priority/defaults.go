package priority

import "time"

// Default class names.
const (
	ClassCritical    = "critical"
	ClassIngest      = "ingest"
	ClassReplication = "replication"
	ClassBackfill    = "backfill"
)

// Default field priorities (higher = more important; fields without a rule
// are never dropped).
const (
	FieldDebug     = 0  // debugging payloads nobody downstream needs
	FieldTelemetry = 10 // SDK bookkeeping: library, user agent, integrations
	FieldContext   = 20 // nice-to-have context: page, campaign, screen
)

// DefaultFieldRules returns the default field priorities for Segment-like
// events (Segment, RudderStack, and similar SDK formats):
//
//	properties.debug, _metadata                       0  (dropped from level 1)
//	context.library, context.userAgent, integrations  10 (dropped from level 2)
//	context.page.*, context.campaign, context.screen  20 (kept until deferred)
func DefaultFieldRules() []FieldRule {
	return []FieldRule{
		{Path: "properties.debug", Priority: FieldDebug},
		{Path: "_metadata", Priority: FieldDebug},
		{Path: "context.library", Priority: FieldTelemetry},
		{Path: "context.userAgent", Priority: FieldTelemetry},
		{Path: "integrations", Priority: FieldTelemetry},
		{Path: "context.page.*", Priority: FieldContext},
		{Path: "context.campaign", Priority: FieldContext},
		{Path: "context.screen", Priority: FieldContext},
	}
}

// Defaults returns the four default classes of design.md, sized as fractions
// of a link of linkBytesPerSec (the configured link ceiling, before
// headroom). linkBytesPerSec ≤ 0 gives classes without rates or ceilings
// (priority and plans only).
//
//	class        prio  rate  ceil  weight  L0        L1           L2           L3
//	critical     0*    10%   40%   1       none      none         none         none
//	ingest       1     35%   100%  1       none      drop <10     drop <20     defer
//	replication  2     15%   100%  1       none      defer        defer        defer
//	backfill     3     0     100%  1       throttle  defer        defer        defer
//
// (* critical: strict priority.) Σ rate = 60% of the link and ceil_crit + Σ
// others' rates = 90%, so the set passes Validate; the shaper scales the
// guarantees down when the measured target falls below their sum. There are
// no msgs/s limits by default.
//
// No class has a MaxAge: an upstream outage of any length expires nothing
// that was acknowledged to a producer. Expire is ExpireDemote throughout,
// so a MaxAge set later without an Expire keeps every event.
func Defaults(linkBytesPerSec int64) []Class {
	frac := func(pct int64) int64 {
		if linkBytesPerSec <= 0 {
			return 0
		}
		return linkBytesPerSec / 100 * pct
	}
	bytes := func(pct int64) Rate { return Rate{BytesPerSec: frac(pct)} }
	defer3 := [Levels]Action{{Kind: ActionNone}, {Kind: ActionDefer}, {Kind: ActionDefer}, {Kind: ActionDefer}}
	return []Class{
		{
			Name: ClassCritical, Priority: 0, Critical: true,
			Rate: bytes(10), Ceil: bytes(40), Weight: 1,
			Expire:      ExpireDemote,
			Batch:       Batch{MaxEvents: 100, MaxBytes: 64 << 10, Linger: 5 * time.Millisecond},
			Compression: CompressionAuto, CompressionMin: CompressionFastest, CompressionMax: CompressionBetter,
			Overflow: OverflowBlock,
		},
		{
			Name: ClassIngest, Priority: 1,
			Rate: bytes(35), Ceil: bytes(100), Weight: 1,
			Expire:      ExpireDemote,
			Batch:       Batch{MaxEvents: 1024, MaxBytes: 512 << 10, Linger: 100 * time.Millisecond},
			Compression: CompressionAuto, CompressionMin: CompressionFastest, CompressionMax: CompressionBetter,
			Overflow: OverflowBlock,
			Fields:   DefaultFieldRules(),
			Plan: [Levels]Action{
				{Kind: ActionNone},
				{Kind: ActionDropFields, MinFieldPriority: FieldTelemetry},
				{Kind: ActionDropFields, MinFieldPriority: FieldContext},
				{Kind: ActionDefer},
			},
		},
		{
			Name: ClassReplication, Priority: 2,
			Rate: bytes(15), Ceil: bytes(100), Weight: 1,
			Expire:      ExpireDemote,
			Batch:       Batch{MaxEvents: 4096, MaxBytes: 768 << 10, Linger: 500 * time.Millisecond},
			Compression: CompressionAuto, CompressionMin: CompressionFastest, CompressionMax: CompressionBetter,
			Overflow: OverflowBlock,
			Plan:     defer3,
		},
		{
			Name: ClassBackfill, Priority: 3,
			Ceil: bytes(100), Weight: 1,
			Expire:      ExpireDemote,
			Batch:       Batch{MaxEvents: 4096, MaxBytes: 768 << 10, Linger: time.Second},
			Compression: CompressionAuto, CompressionMin: CompressionFastest, CompressionMax: CompressionBetter,
			Overflow: OverflowBlock,
			Plan:     [Levels]Action{{Kind: ActionThrottle}, {Kind: ActionDefer}, {Kind: ActionDefer}, {Kind: ActionDefer}},
		},
	}
}
