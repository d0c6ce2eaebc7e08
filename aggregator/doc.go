// Package aggregator is the running sluice node: it takes events in through
// Ingest, makes them durable in the spool, and ships them per traffic class
// in zstd-compressed batches to NATS JetStream.
//
// # Data path
//
// Ingest checks that each event is one JSON object (compacting multi-line
// ones onto one line), appends the call's events to the class's spool with
// group commit, and returns only once they are committed under the fsync
// policy: a nil error means the events survive a crash.
//
// Each class has a lane of two goroutines. The shipper reads the spool from
// the first unsent event, cuts a batch (ClassOptions MaxEvents, MaxBytes,
// Linger), claims its range durably in the spool, compresses it with a
// reused zstd encoder into the wire envelope and publishes it asynchronously,
// at most Options.MaxInFlight batches per class unacknowledged. The acker
// waits for JetStream's acks in publish order; a failed or timed-out
// publish is sent again, identically, with capped exponential backoff and
// full jitter. Only an ack advances the spool, which then deletes wholly
// acknowledged segment files.
//
// # Expiry
//
// A class with a MaxAge (none by default) expires the events older than it
// when their batch is cut, as its Expire says. ExpireDrop leaves them out,
// counted in ClassStats.Expired, and acknowledges them in the spool.
// ExpireDemote (the default once a MaxAge is set) sets them aside and ships
// the class's newer events first; the old ones follow, whenever the class
// has no newer batch ready, in batches of their own with the header
// Sluice-Stale (the max age in seconds) on the class's subject, counted in
// ClassStats.Demoted. Nothing is lost: set-aside events stay in the spool,
// unclaimed, until their own batch is acknowledged, and a node that stops
// with some finds them again after its next start. With Link.Unshaped
// nothing expires.
//
// # Exactly once into the stream
//
// A batch's Nats-Msg-Id is a function of the spool id, the class and the
// batch's spool range (wire.MsgID), and the range is claimed durably before
// the first publish. After a crash or a hard stop, New republishes every
// claimed but unacknowledged range as the same batch before cutting new
// ones, and JetStream's duplicate window drops the copies of those that had
// arrived. The stream the node creates has Options.DuplicateWindow (10
// minutes by default); an existing stream is used as configured.
//
// # Caveats
//
//   - Order: within a class, batches are published in spool order, but a
//     batch that is retried may land in the stream after batches cut after
//     it, and demoted (stale) batches go after newer ones.
//   - Out-of-order acks are kept in memory only: after a restart, ranges
//     acknowledged out of order are republished and deduplicated upstream.
//     A restart later than the duplicate window after the first publish of
//     a batch can therefore deliver it twice. Demotion makes such ranges
//     last: the batches acknowledged after set-aside events stay above the
//     persisted cursor until those events are sent.
//   - A JetStream ack is not an fsync on the server (see docs/wire.md).
//   - Every class name Ingest sees gets a lane and a spool directory; the
//     set of classes is not bounded here.
package aggregator
