// Package spool is sluice's durable per-class FIFO queue of events on bbolt.
//
// Producers' events (opaque byte slices) are appended to a class and
// acknowledged to the producer only once committed under the fsync policy.
// The batcher reads them back in seq order, claims each batch's range before
// publishing it, and acknowledges ranges once upstream acknowledged them;
// fully acknowledged segment files are then deleted whole. The spool knows
// nothing of what classes mean, of NATS or of compression, and starts no
// goroutines.
//
// # Seqs
//
// Every event gets a seq, starting at 1 in each class. Seqs are never reused,
// even across crashes and damaged files, because upstream deduplicates batches
// by an id derived from their range: a reused seq would be dropped as a copy.
// Seqs may jump over dropped or quarantined ranges; readers see the real seq.
//
// # Layout
//
//	dir/ID                          random 128-bit hex id of this spool (temp + rename + fsync)
//	dir/meta.db                     bbolt: per class, ack cursor, newest segment's first seq
//	dir/<class>/seg-<first>.db      bbolt segment, <first> is its first seq as %020d
//	dir/quarantine/                 damaged files moved aside, named <class>.<file>.<UTC time>
//
// A segment holds one record per Append call: key the 8-byte big-endian seq
// of its first event, value
//
//	[version=1][CRC32C of the rest, 4 bytes][append time unix ns, 8 bytes]
//	[uvarint count] count × ([uvarint len][event])
//
// in bucket "r": a commit of 1 KiB of records or more puts them in a bucket
// of its own inside "r", keyed by the key of its first record, a smaller one
// directly in "r" (layout 2), so that a commit never rewrites the large
// records of earlier ones: bbolt splits a leaf only past four entries and
// rewrites a modified leaf whole, so with every record directly in "r"
// (layout 1, segments written before layout 2, still read and, for a tail
// found at Open, appended to until it is sealed) each record of a large
// Append was written to disk several times. Bucket "m" holds the
// segment's class, first seq and layout ("version", 1 or 2), and bucket "c"
// (made at the first claim) the claims committed while it was the tail: key
// the 8-byte big-endian First, value the 8-byte Last. Record keys only grow,
// so their pages are filled completely (FillPercent 1.0). A segment is the tail
// until its file reaches Options.SegmentBytes; then it is sealed (fsynced if
// commits were not) and a new tail starts at the next seq. bbolt's MaxSize is
// the hard bound 1.25 × SegmentBytes; an Append whose encoded events cannot
// fit in an empty segment fails with ErrTooLarge. Segment files are grown in
// small steps (AllocSize SegmentBytes/16, 64 KiB to 16 MiB) and mapped at the
// hard bound from the start, so readers never wait for a remap.
//
// # Group commit
//
// Concurrent Appends and Claims on one class queue up; the first becomes
// leader and commits the queued requests that fit the tail in one bbolt
// transaction (one fsync for all), wakes the others with their ranges, and
// hands leadership to the next waiter. A Claim is queued ahead of the
// waiting Appends (behind earlier Claims), so that it rides the next commit
// however many Appends wait. Classes commit independently.
//
// # Claims
//
// A batch's range is claimed before its first publish so that a restart
// republishes the identical batch. A Claim is a request on the class's
// commit queue like an Append: written to the tail segment's bucket "c" in
// the same transaction as the appends queued with it, so while appends flow
// a claim costs no fsync of its own (an idle class's claim commits alone, one
// commit as before), and Claim returns once that commit is durable (under
// FsyncInterval a commit carrying a claim is fsynced at once). One Claim may
// carry several ranges (the batches a reader cut while its previous claim
// committed): they are written in the same transaction, all or none. A claim
// replaces an earlier one with the same First (a split batch).
//
// Open reads the claims of meta.db (where versions before this layout kept
// them, with an fsync of their own each), then of every segment from the
// oldest to the newest, a later claim with the same First replacing an
// earlier one; claims fully acknowledged are dropped. Live claims found only
// in meta.db are written to the tail and deleted from meta.db, so an upgrade
// loses none and no stale copy outlives its replacement.
//
// Deletion cannot lose a live claim: a claim written while segment S was the
// tail covers seqs issued by then, so its Last is at most the last seq S can
// hold, and S is deleted only once sealed and acknowledged through that seq
// (or dropped whole by DropOldest, its seqs then counted as dropped). A new
// tail starts without claims; those of the old one stay in it until it is
// deleted.
//
// # Reading and deletion
//
// Sealed segments are opened read-only on demand and closed once the reader
// has moved past them, so at most the tail and two sealed segments per class
// are mapped however large the backlog. Event data handed to a Read callback
// points into the mmap and is valid only during the call. On Linux, each
// time Reads have passed 4 MiB of a segment's records, the segment's pages
// are dropped from the process's page tables (MADV_DONTNEED; the page cache
// keeps them and later accesses fault them back), so that events already
// read do not stay in the process's resident memory until the segment is
// closed. A segment is
// deleted (whole file, no compaction) when the contiguous ack cursor passes
// its last seq; the tail is never deleted, so the next seq is always derivable
// from disk.
//
// # Caps
//
// Caps (per class and in total) are on disk bytes of segment files, checked
// before each commit from an estimate of the commit's growth; a cap can be
// overshot by at most one commit's growth (per class concurrently appending
// for the total cap) plus one new empty segment. Block refuses with ErrFull,
// DropNewest with ErrDropped (counted), DropOldest deletes whole segments.
//
// # Recovery
//
// Open checks every segment (bbolt open, buckets, metadata, key and CRC of its
// first and last records, panics recovered) and every record of the tail. A
// damaged segment is moved to quarantine/, logged at Warn and counted in
// Stats.Quarantined and, where its seq bounds are known (a sealed segment), in
// Dropped["quarantine"] (its events above the persisted cursor); the spool
// never refuses to start because of one bad segment. A tail with a damaged
// record in the middle is sealed as it is (Warn) and a new tail started after
// it, so that appends and reads go on. A damaged record or a bbolt panic met
// in a sealed segment while reading quarantines it the same way, counting the
// events from the reader's position on, and the read goes on with the next
// segment. A damaged meta.db is quarantined and rebuilt empty (Error log):
// unpersisted cursor progress is lost, so ranges may be re-sent; claims live
// in the segments and are kept. If the tail is lost, the next
// seq becomes its first seq plus the hard bound (no record could have reached
// it; an event takes at least one byte) or the reservation kept in meta.db,
// whichever is higher, and a new tail is created at once. Acked(class) after
// Open is the persisted cursor, or just below the oldest segment if higher.
//
// # Caveats
//
//   - FsyncInterval: a power loss or OS crash can lose up to
//     Options.FsyncInterval of acknowledged appends, and since bbolt then
//     writes without ordering barriers the tail may be found damaged and
//     quarantined whole. A process crash loses nothing (the page cache
//     survives). FsyncNever widens the window to everything since the last
//     Sync, Close or sealed segment, and does not fsync claims either.
//   - A reader that publishes to an at-most-once-deduplicating upstream
//     (JetStream with Nats-Msg-Id) must Claim a range before its first
//     publish and republish exactly the claimed ranges after a restart.
//   - The ack cursor is persisted lazily (Sync, Close, a new segment, or
//     about every second of commits): after a crash, acknowledged ranges may
//     be read again.
//   - A quarantined segment takes its claims with it (logged at Warn): the
//     ranges they covered that are still live are cut again, maybe
//     differently, so those ranges alone are delivered at least once rather
//     than exactly once. A segment quarantined while reading keeps its
//     claims in memory until the next Open. A claim whose replacement (same
//     First) was in a quarantined segment comes back in its older form.
//   - Versions before claims moved to the segments ignore bucket "c": a
//     downgrade loses the claims, with the same effect.
//   - Versions before layout 2 quarantine layout-2 segments as damaged: a
//     downgrade loses the events in them. Drain the spool before one.
//   - DropOldest works on whole segments (SegmentBytes of events at a time),
//     and may seal a small tail early to drop it.
//   - Caps are on disk bytes of segment files, including bbolt's page
//     overhead and growth steps, not on event bytes.
//   - Segment files are deleted or moved while possibly still mapped by a
//     reader; this relies on POSIX unlink/rename semantics.
//   - The class name "quarantine" is reserved.
//   - A full filesystem (ENOSPC) or quota (EDQUOT) fails appends with
//     ErrNoSpace and nothing written; the spool logs a Warn when the disk
//     fills and when it has room again, not per append. NoSpace reports the
//     state and, while it lasts, checks for room at most once a second by
//     writing a 64 KiB probe file (dir/.space-probe).
package spool
