// Package priority defines sluice's traffic classes: what a class is
// guaranteed and allowed (rates and ceilings in bytes/s and msgs/s), how
// events are routed to classes, which JSON fields matter least, and what each
// class does at each degradation level. It is pure: no goroutines, no I/O,
// no clock, and no imports beyond the standard library and the module's
// internal/jsonx, the JSON scanner that ingest validates events with.
//
// # Classes
//
// A Class has a Priority (0 highest … 7), an optional Critical flag (strict
// priority in the shaper), a guaranteed Rate and a Ceil (maximum including
// borrowing), a Weight for sharing spare capacity among equal priorities,
// an optional MaxAge after which events expire when their batch is cut
// (Expire: demoted, shipped after the class's newer events and labelled
// stale, or dropped and counted; none by default), batch and compression
// settings, an Overflow policy for its spool, and a Plan: one
// Action per degradation level 0..3 (ActionNone, ActionDropFields below a
// field priority, ActionThrottle to leftover capacity only, ActionDefer).
// Defaults(link) returns critical, ingest, replication and backfill as in
// design.md, sized as fractions of the link; Validate checks a set of classes
// against the link ceiling with precise, joined errors.
//
// # Fields
//
// FieldRule gives a JSON path ("context.userAgent", "context.page.*") a
// priority; higher is more important (the opposite direction of
// Class.Priority). A FieldSet answers "which paths go at min priority p".
// DropFields removes those paths from one compact JSON object with no
// decoding into maps and no allocation: the event is validated by the same
// scanner, in the same pass, that lists its top-level members, and only the
// objects on a path are read again: on the bundled Segment sample it is ≈ 15–20× faster than a
// map decode + delete + encode (BenchmarkDropFields). Its output is checked
// against that map-based reference by FuzzDropFields.
//
// # Routing
//
// A Router returns the class of the first Rule whose Source and JSON field
// value match, or the default class. Field lookup scans only as far as
// needed. A caller that has already scanned the event (ingest, while it
// validates it) routes it with RouteValues from the values of the
// top-level members named by Fields, without reading it again. A class
// given explicitly by the producer wins; that choice belongs to the
// caller, which then does not call Route.
//
// # Caveats
//
//   - Field paths name object keys only: they never descend into arrays and
//     cannot name a key that contains '.'.
//   - Degradation must happen at ship time (design.md invariant 4): callers
//     apply DropFields to a copy of the spooled event, never to the spool.
//   - DropFields compacts the whitespace of the objects it rewrites (objects
//     on a dropped path); everything else is copied byte for byte. It
//     accepts exactly what ingest accepts (valid UTF-8 in strings, nesting
//     at most 512 deep), which is stricter than encoding/json's json.Valid:
//     an event that ingest would refuse is returned unchanged with
//     ErrMalformedJSON.
//   - Route does not require a valid event (ingest has validated it): a rule
//     matches on a member whose value is valid before the first syntax
//     error. With duplicate keys it takes the first, where encoding/json
//     keeps the last.
//   - Rates are integers (bytes/s, msgs/s) so shaping is exact and identical
//     on every architecture; a fractional msgs/s rate is not expressible.
package priority
