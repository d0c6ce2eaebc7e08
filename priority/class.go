package priority

import (
	"errors"
	"fmt"
	"time"
)

// Rate is a rate in two dimensions. Integers keep token arithmetic exact and
// identical on every architecture.
//
// In Class.Rate a zero dimension means "no guarantee in that dimension"; in
// Class.Ceil a zero dimension means "no class ceiling in that dimension" (the
// class is bounded only by the link). A link rate of zero in a dimension means
// that dimension is not limited.
type Rate struct {
	BytesPerSec int64 // bytes per second (payload + headers + overhead)
	MsgsPerSec  int64 // messages (batches) per second
}

// IsZero reports whether both dimensions are zero.
func (r Rate) IsZero() bool { return r.BytesPerSec == 0 && r.MsgsPerSec == 0 }

// Batch bounds one batch of a class. A batch is closed at whichever limit is
// reached first.
type Batch struct {
	MaxEvents int // events per batch; 0 = DefaultBatchMaxEvents
	// MaxBytes bounds a batch's uncompressed NDJSON body (events and their
	// newlines); 0 = DefaultBatchMaxBytes. A single event larger than
	// this travels alone.
	MaxBytes int
	Linger   time.Duration // longest wait for a batch to fill; 0 = send at once
}

// Default batch bounds, for a Batch whose MaxEvents or MaxBytes is zero.
const (
	DefaultBatchMaxEvents = 1000
	// DefaultBatchMaxBytes bounds the uncompressed NDJSON, so the
	// compressed body is under JetStream's default 1 MB max_payload even
	// for events that do not compress.
	DefaultBatchMaxBytes = 768 << 10
)

// Limits returns b's bounds with the defaults for zero values: what the
// node cuts batches by, and what sluice plan models.
func (b Batch) Limits() (maxEvents, maxBytes int, linger time.Duration) {
	maxEvents, maxBytes, linger = b.MaxEvents, b.MaxBytes, b.Linger
	if maxEvents <= 0 {
		maxEvents = DefaultBatchMaxEvents
	}
	if maxBytes <= 0 {
		maxBytes = DefaultBatchMaxBytes
	}
	return maxEvents, maxBytes, linger
}

// Compression levels (zstd), in order of ratio and cost, and
// CompressionAuto: the level chosen by the node from the link and the
// cores (shaper.ChooseCompression), within Class.CompressionMin and
// CompressionMax. The empty string means CompressionAuto.
const (
	CompressionFastest = "fastest"
	CompressionDefault = "default"
	CompressionBetter  = "better"
	CompressionBest    = "best"
	CompressionAuto    = "auto"
)

// Overflow policies: what the spool does when a class reaches MaxBytes. The
// empty string means OverflowBlock.
const (
	OverflowBlock      = "block"       // refuse new events (producers see 429/503)
	OverflowDropOldest = "drop_oldest" // delete the oldest unsent events, counted
	OverflowDropNewest = "drop_newest" // refuse the new events, counted
)

// Expiry policies: what happens to an event older than Class.MaxAge. The
// empty string means ExpireDemote, so that setting a max age alone never
// throws an acknowledged event away.
const (
	// ExpireDemote ships old events after every newer event of the class,
	// in batches of their own labelled stale (the Sluice-Stale header):
	// nothing is lost, and fresh events are not held back by old ones.
	ExpireDemote = "demote"
	// ExpireDrop does not send old events: they are counted (Expired in
	// the node's stats) and acknowledged in the spool, never silently.
	ExpireDrop = "drop"
)

// Levels is the number of degradation levels: 0 (normal) to 3 (critical only).
const Levels = 4

// ActionKind is what a class does at one degradation level.
type ActionKind uint8

const (
	// ActionNone: send normally (rate, borrowing up to ceil).
	ActionNone ActionKind = iota
	// ActionDropFields: send, with the fields whose priority is below
	// Action.MinFieldPriority removed at ship time.
	ActionDropFields
	// ActionThrottle: no guaranteed rate; the class only borrows leftover capacity,
	// after every other class, up to its ceil.
	ActionThrottle
	// ActionDefer: send nothing; events keep accumulating in the spool.
	ActionDefer
)

func (k ActionKind) String() string {
	switch k {
	case ActionNone:
		return "none"
	case ActionDropFields:
		return "drop_fields"
	case ActionThrottle:
		return "throttle"
	case ActionDefer:
		return "defer"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// Action is what happens to a class at one degradation level. Expiry by
// Class.MaxAge (drop or demote) applies at every level regardless of the
// action.
type Action struct {
	Kind ActionKind
	// MinFieldPriority: with Kind == ActionDropFields, fields whose rule priority
	// is strictly below this are removed. Fields without a rule are kept.
	MinFieldPriority int
}

// Class is one traffic class.
type Class struct {
	// Name identifies the class in config, routing rules, headers and metrics.
	Name string
	// Priority orders classes for spare capacity: 0 is highest, 7 lowest.
	Priority int
	// Critical classes are served with strict priority before all others,
	// bounded by their Ceil and the link.
	Critical bool
	// Rate is the guaranteed rate; Ceil the maximum including borrowing.
	Rate, Ceil Rate
	// Weight shares spare capacity among classes of equal Priority
	// (proportionally). 0 means 1.
	Weight int
	// MaxAge is the age past which an event is expired when its batch is
	// cut, as Expire says. 0 (the default of every class) means never.
	MaxAge time.Duration
	// Expire is what expiry means: ExpireDemote (ship after the newer
	// events, labelled stale) or ExpireDrop (do not ship, counted). ""
	// means ExpireDemote. Without a MaxAge it has no effect.
	Expire string
	// Batch bounds this class's batches.
	Batch Batch
	// Compression is one of the Compression* constants: a fixed level, or
	// CompressionAuto ("" = auto).
	Compression string
	// CompressionMin and CompressionMax bound an automatic level (fixed
	// level names; "" = fastest and better: an encoder at best holds about
	// 35 MiB, one per compression worker, so best is opt-in). Ignored for a
	// fixed level.
	CompressionMin, CompressionMax string
	// Overflow is one of the Overflow* constants ("" = block).
	Overflow string
	// MaxBytes caps this class's spool; 0 = only the total cap applies.
	MaxBytes int64
	// Fields gives JSON fields a priority for DropFields actions. Fields
	// without a rule are never dropped.
	Fields []FieldRule
	// Plan is the action at each degradation level 0..3.
	Plan [Levels]Action
}

// EffectiveWeight returns Weight, or 1 when Weight is zero.
func (c *Class) EffectiveWeight() int {
	if c.Weight <= 0 {
		return 1
	}
	return c.Weight
}

// ActionAt returns the plan's action at level, clamping level into 0..3.
func (c *Class) ActionAt(level int) Action {
	level = max(0, min(level, Levels-1))
	return c.Plan[level]
}

// compressionRank is the rank of a fixed level's name (0 fastest .. 3
// best), def for "", -1 for any other name.
func compressionRank(name string, def int) int {
	switch name {
	case "":
		return def
	case CompressionFastest:
		return 0
	case CompressionDefault:
		return 1
	case CompressionBetter:
		return 2
	case CompressionBest:
		return 3
	}
	return -1
}

// MaxPriority is the largest valid Class.Priority (as HTB's prio 0..7).
const MaxPriority = 7

// Validate checks a set of classes against the link ceiling (linkCeil zero
// dimensions are unbounded). It returns every problem found, joined, each
// wrapping ErrInvalidClass (or ErrInvalidPath for field rules).
//
// Rules: names are non-empty and unique; priorities in 0..7; weights,
// rates, ceilings, batch bounds, MaxAge and MaxBytes non-negative; a non-zero
// ceil dimension is ≥ the rate; no ceil exceeds the link ceil; Σ rate over all
// classes (critical included) ≤ the link ceil; a critical class has a byte
// ceil when others have byte guarantees, and ceil_crit + Σ others' rate ≤ link
// ceil, so strict priority cannot starve a guarantee; Compression, Overflow,
// Expire and plan kinds are known values; field paths are valid.
func Validate(classes []Class, linkCeil Rate) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidClass}, args...)...))
	}
	if len(classes) == 0 {
		bad("no classes")
	}
	if linkCeil.BytesPerSec < 0 || linkCeil.MsgsPerSec < 0 {
		bad("negative link ceil %+v", linkCeil)
	}
	seen := make(map[string]int, len(classes))
	var sumRate Rate
	for i := range classes {
		c := &classes[i]
		name := c.Name
		if name == "" {
			bad("class #%d: empty name", i)
			name = fmt.Sprintf("#%d", i)
		} else if j, dup := seen[name]; dup {
			bad("class %q: duplicate name (classes #%d and #%d)", name, j, i)
		} else {
			seen[name] = i
		}
		if c.Priority < 0 || c.Priority > MaxPriority {
			bad("class %q: priority %d outside 0..%d", name, c.Priority, MaxPriority)
		}
		if c.Weight < 0 {
			bad("class %q: negative weight %d", name, c.Weight)
		}
		checkDim := func(dim string, rate, ceil, link int64) {
			if rate < 0 {
				bad("class %q: negative rate %s %d", name, dim, rate)
			}
			if ceil < 0 {
				bad("class %q: negative ceil %s %d", name, dim, ceil)
			}
			if ceil > 0 && ceil < rate {
				bad("class %q: ceil %s %d < rate %d", name, dim, ceil, rate)
			}
			if link > 0 && ceil > link {
				bad("class %q: ceil %s %d > link ceil %d", name, dim, ceil, link)
			}
			if link > 0 && ceil == 0 && rate > link {
				bad("class %q: rate %s %d > link ceil %d", name, dim, rate, link)
			}
		}
		checkDim("bytes/s", c.Rate.BytesPerSec, c.Ceil.BytesPerSec, linkCeil.BytesPerSec)
		checkDim("msgs/s", c.Rate.MsgsPerSec, c.Ceil.MsgsPerSec, linkCeil.MsgsPerSec)
		sumRate.BytesPerSec += max(0, c.Rate.BytesPerSec)
		sumRate.MsgsPerSec += max(0, c.Rate.MsgsPerSec)
		if c.MaxAge < 0 {
			bad("class %q: negative max age %v", name, c.MaxAge)
		}
		if c.Batch.MaxEvents < 0 || c.Batch.MaxBytes < 0 || c.Batch.Linger < 0 {
			bad("class %q: negative batch bound %+v", name, c.Batch)
		}
		if c.MaxBytes < 0 {
			bad("class %q: negative max bytes %d", name, c.MaxBytes)
		}
		switch c.Compression {
		case "", CompressionAuto, CompressionFastest, CompressionDefault, CompressionBetter, CompressionBest:
		default:
			bad("class %q: unknown compression %q (want auto, fastest, default, better or best)", name, c.Compression)
		}
		lo, hi := compressionRank(c.CompressionMin, 0), compressionRank(c.CompressionMax, 2)
		switch {
		case lo < 0:
			bad("class %q: unknown compression_min %q (want fastest, default, better or best)", name, c.CompressionMin)
		case hi < 0:
			bad("class %q: unknown compression_max %q (want fastest, default, better or best)", name, c.CompressionMax)
		case lo > hi:
			bad("class %q: compression_min %q above compression_max %q", name, c.CompressionMin, c.CompressionMax)
		}
		switch c.Expire {
		case "", ExpireDemote, ExpireDrop:
		default:
			bad("class %q: unknown expire %q (want demote or drop)", name, c.Expire)
		}
		switch c.Overflow {
		case "", OverflowBlock, OverflowDropOldest, OverflowDropNewest:
		default:
			bad("class %q: unknown overflow %q (want block, drop_oldest or drop_newest)", name, c.Overflow)
		}
		for lv, a := range c.Plan {
			if a.Kind > ActionDefer {
				bad("class %q: level %d: unknown action %v", name, lv, a.Kind)
			}
		}
		if _, err := NewFieldSet(c.Fields); err != nil {
			errs = append(errs, fmt.Errorf("class %q: %w", name, err))
		}
	}
	if l := linkCeil.BytesPerSec; l > 0 && sumRate.BytesPerSec > l {
		bad("sum of rates %d bytes/s > link ceil %d bytes/s", sumRate.BytesPerSec, l)
	}
	if l := linkCeil.MsgsPerSec; l > 0 && sumRate.MsgsPerSec > l {
		bad("sum of rates %d msgs/s > link ceil %d msgs/s", sumRate.MsgsPerSec, l)
	}
	// Strict priority must leave room for everyone else's guarantee.
	for i := range classes {
		c := &classes[i]
		if !c.Critical {
			continue
		}
		var others Rate
		for j := range classes {
			if j != i && !classes[j].Critical {
				others.BytesPerSec += max(0, classes[j].Rate.BytesPerSec)
				others.MsgsPerSec += max(0, classes[j].Rate.MsgsPerSec)
			}
		}
		check := func(dim string, ceil, other, link int64) {
			if link <= 0 || other == 0 {
				return
			}
			if ceil == 0 {
				bad("critical class %q: needs a ceil %s so strict priority cannot starve the other classes' guarantees (%d)", c.Name, dim, other)
				return
			}
			if ceil+other > link {
				bad("critical class %q: ceil %s %d + others' rates %d > link ceil %d", c.Name, dim, ceil, other, link)
			}
		}
		check("bytes/s", c.Ceil.BytesPerSec, others.BytesPerSec, linkCeil.BytesPerSec)
		check("msgs/s", c.Ceil.MsgsPerSec, others.MsgsPerSec, linkCeil.MsgsPerSec)
	}
	return errors.Join(errs...)
}
