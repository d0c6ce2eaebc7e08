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
// Ingest refuses a class that is not configured (ErrInvalidClass). Each
// configured class, and each class found only in the spool at New (drained
// with the last configured class's settings, never fed), has a lane that
// runs the stages design.md draws, one file each:
//
//   - batcher.go: the batcher reads the class's spool from its cursor,
//     expires events past the class's max age (below), drops low-priority
//     fields as the degradation level says, claims the batch's range
//     durably in the spool before it is sent, and compresses it with a
//     reused zstd encoder into the wire envelope. It knows nothing of NATS.
//   - pipeline.go: the pipeline carries a class's batches from cut to
//     publish: the lane's shipper cuts them in spool order, a claimer
//     claims them (every batch cut while the previous claim committed, in
//     one spool commit, so the shipper never waits for an fsync), one
//     compression worker per core (GOMAXPROCS), each with its own
//     encoders, compresses them in parallel, and a sequencer hands them to
//     the publisher in the order they were cut, each once claimed. At
//     most 2×(workers+1) batches are cut and not yet published.
//   - compress.go: the compression policy: a class with a fixed level
//     keeps it; an automatic one (priority.CompressionAuto) has its level
//     and batch size chosen at each cut by shaper.ChooseCompression, from
//     the link's target, whether sends waited for the link, its workers'
//     busy fraction and each level's ratio and speed measured on its own
//     batches. Each worker keeps one encoder, at the level in use and
//     with the class's current dictionary (or none), remade when either
//     changes: per class, workers+1 encoders (the +1 compresses a split's
//     halves), each with a window that holds the class's Batch.MaxBytes.
//   - driver.go: the shaper driver holds the shaper's token-bucket lanes,
//     link-health estimator, degradation controller and retrier under one
//     mutex, runs the tick that turns link health into a target rate and
//     a level, and admits each batch (the class's Rate and Ceil, the
//     level's plan, bytes in flight). It is handed the backlog and the
//     compression ratio, and its clock.
//   - publisher.go: the publisher publishes asynchronously, at most
//     Options.MaxInFlight batches per class unacknowledged, waits for
//     JetStream's acks, sends a failed or timed-out batch again,
//     identically, when the shaper's retrier says (capped exponential
//     backoff with full jitter, under a retry budget), splits a batch the
//     server finds too large, and acknowledges acked ranges to the spool.
//     Only an ack advances the spool, which then deletes wholly
//     acknowledged segment files.
//   - lane.go: the lane's shipper loop decides when a batch is due (the
//     class's Batch limits MaxEvents, MaxBytes and Linger; at once while
//     draining; never while the level defers the class), takes the level's
//     decision for it as it is cut, and wires batcher, pipeline, driver
//     and publisher for its class.
//
// # Dictionaries
//
// dict.go and dictlane.go: each class whose Options.Dictionary mode is not
// off samples its batches as they are compressed (one event in eight, its
// newest DictOptions.SampleBytes, no two alike) and, on a trainer
// goroutine of its own (one training at a time in the node), trains a zstd
// dictionary at the level its policy compresses at then (a dictionary
// trained at one level compresses at any). One sample in five is held out:
// cut in batches of the class's mean size and compressed by fresh encoders
// with and without the dictionary, the former decoded and compared.
// DictAuto (the default) uses the dictionary only if those batches shrink
// by MinGain (1.05), DictOn if they shrink at all. The dictionary is
// written with KV Create to the bucket wire.DictBucket(Stream) (created if
// missing: no TTL, one value per key, the stream's replicas) under a
// random unused id in [wire.MinDictID, wire.MaxDictID], and only once
// JetStream acknowledged it do the workers compress with it (one encoder
// per worker, at the policy's level, for it) and name it in the batch
// (wire format version 2, Sluice-Dict). Every Interval the class measures
// its dictionary on its recent events, at the level it was trained at, and
// retrains when the ratio fell below 95% of the ratio at adoption (a
// change of level alone is not a drift); Node.RetrainDictionary forces a
// retrain. A bucket that cannot be written (unreachable, refused) is
// counted in ClassStats.DictPublishErrors and retried every Interval; the
// class meanwhile ships with its last acknowledged dictionary, or none.
//
// A batch is compressed once: its retries send the same body. A batch cut
// again (a split's halves, a claim republished after a restart) is
// compressed with the dictionary current then; it decodes to the same
// events under the same Nats-Msg-Id either way.
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
// arrived.
//
// Past the duplicate window that no longer holds, so stream_once.go looks
// first: an attempt of a batch whose first attempt may be older than the
// retry horizon (a batch this process first sent that long ago, or a claim
// found at New whose oldest event is that old) reads the Nats-Msg-Ids of
// the class's subject since the first attempt could have been made, and
// acknowledges the batch without sending it if it is there; if not, it
// publishes it on condition that the subject's last message is still the
// last one read (Nats-Expected-Last-Subject-Sequence), and reads on when
// it is not. onceGuard's doc has the argument and its assumptions.
//
// # The stream
//
// stream.go: the node creates a missing stream with Options.StreamConfig
// (replicas, placement, max age and bytes, its duplicate window, 10
// minutes by default; file storage, limits retention, discard new), and
// checks one that exists, at the start and at every reconnection, against
// the promises above: subjects that cover every class, a duplicate window
// at least the node's, file storage, limits retention, nothing that
// discards acknowledged batches, enough replicas. A stream that breaks one
// is refused (StreamOptions.OnMismatch): no batch is sent to it, events
// keep spooling, Node.StreamRefused says why, and the node looks again
// every RetryMax until it is fixed; or, with MismatchWarn, only logged.
// The node never changes an existing stream.
//
// # Caveats
//
//   - Order: within a class, batches are published in spool order, but a
//     batch that is retried may land in the stream after batches cut after
//     it, and demoted (stale) batches go after newer ones.
//   - Out-of-order acks are kept in memory only: after a restart, ranges
//     acknowledged out of order are republished and deduplicated upstream,
//     by the duplicate window or, past it, by the lookup above. Demotion
//     makes such ranges last: the batches acknowledged after set-aside
//     events stay above the persisted cursor until those events are sent.
//   - The lookup past the window holds under onceGuard's assumptions: an
//     attempt reaches the stream within the window minus the horizon or
//     never (no reconnect buffer), the node's clock is at most a minute
//     ahead of the servers', the earlier copy is still in the stream (not
//     past its max age), the subject prefix did not change. A class
//     subject busy with other nodes' batches can keep refusing the
//     conditional publish: the batch then waits in the spool, retried.
//   - A JetStream ack is not an fsync on the server (see docs/wire.md).
//   - Dictionaries are not remembered across restarts: a node trains anew
//     after New (its first batches go without), so it never names a
//     dictionary it has not itself seen acknowledged. Published
//     dictionaries stay in the bucket, which the node never deletes from:
//     a batch in the stream may need them, for as long as the stream keeps
//     it. Each adoption adds one (at most one per class per Interval, or
//     per RetrainDictionary).
//   - Someone who deletes the dictionary bucket or its keys makes the
//     batches that name them undecodable; the node does not notice until
//     its next publish to the bucket fails.
//   - A class found in the spool but no longer configured gets a lane that
//     drains it, with the last configured class's settings; Ingest does
//     not accept it.
package aggregator
