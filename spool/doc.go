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
//	dir/meta.db                     bbolt: per class, ack cursor, claims, newest segment's first seq
//	dir/<class>/seg-<first>.db      bbolt segment, <first> is its first seq as %020d
//	dir/quarantine/                 damaged files moved aside, named <class>.<file>.<UTC time>
//
// A segment holds in bucket "r" one record per Append call: key the 8-byte
// big-endian seq of its first event, value
//
//	[version=1][CRC32C of the rest, 4 bytes][append time unix ns, 8 bytes]
//	[uvarint count] count × ([uvarint len][event])
//
// and in bucket "m" its class, first seq and format version. Keys only grow,
// so pages are filled completely (FillPercent 1.0). A segment is the tail
// until its file reaches Options.SegmentBytes; then it is sealed (fsynced if
// commits were not) and a new tail starts at the next seq. bbolt's MaxSize is
// the hard bound 1.25 × SegmentBytes; an Append whose encoded events cannot
// fit in an empty segment fails with ErrTooLarge. Segment files are grown in
// small steps (AllocSize SegmentBytes/16, 64 KiB to 16 MiB) and mapped at the
// hard bound from the start, so readers never wait for a remap.
//
// # Group commit
//
// Concurrent Appends on one class queue up; the first becomes leader and
// commits the queued requests that fit the tail in one bbolt transaction (one
// fsync for all), wakes the others with their ranges, and hands leadership to
// the next waiter. Classes commit independently.
//
// # Reading and deletion
//
// Sealed segments are opened read-only on demand and closed once the reader
// has moved past them, so at most the tail and two sealed segments per class
// are mapped however large the backlog. Event data handed to a Read callback
// points into the mmap and is valid only during the call. A segment is
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
// first and last records, panics recovered). A damaged segment is moved to
// quarantine/, logged at Warn and counted in Stats.Quarantined and, where its
// seq bounds are known (a sealed segment), in Dropped["quarantine"]; the spool
// never refuses to start because of one bad segment. A damaged record or a
// bbolt panic met in a sealed segment while reading quarantines it the same
// way and the read goes on with the next segment. A damaged meta.db is
// quarantined and rebuilt empty (Error log): claims and unpersisted cursor
// progress are lost, so ranges may be re-sent. If the tail is lost, the next
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
//   - The ack cursor is persisted lazily (Claim, Sync, Close, or about every
//     second of appends): after a crash, acknowledged ranges may be read again.
//   - DropOldest works on whole segments (SegmentBytes of events at a time),
//     and may seal a small tail early to drop it.
//   - Caps are on disk bytes of segment files, including bbolt's page
//     overhead and growth steps, not on event bytes.
//   - Segment files are deleted or moved while possibly still mapped by a
//     reader; this relies on POSIX unlink/rename semantics.
//   - The class name "quarantine" is reserved.
package spool
