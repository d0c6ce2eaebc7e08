// Package wire is the batch envelope that sluice publishes to NATS JetStream
// and that consumers decode: one NATS message per batch, its body a single
// zstd frame of NDJSON (one JSON object per line), its metadata in NATS
// headers.
//
// The package is small on purpose: a consumer imports it to decode batches
// without pulling in the edge node's spool (bbolt) or shaper. The format is
// documented for people in docs/wire.md; this package is its reference.
//
// A batch's identity is its Nats-Msg-Id, derived from the spool id, the
// class and the spool range (see MsgID). The same batch always gets the same
// id, so a retry or a republish after a restart is dropped by JetStream's
// duplicate window instead of delivered twice.
//
// A batch of format version 2 (VersionDict) was compressed with a trained
// zstd dictionary, named by its Sluice-Dict header and by its zstd frame.
// The dictionaries of a stream live in a JetStream key-value bucket
// (DictBucket, one key per id: DictKey), each written and acknowledged
// before the first batch that uses it; ids are never reused. A Decoder made
// WithDictionaries decodes both versions: it gets a dictionary from its
// Dictionaries source the first time a batch names it and keeps it.
// NewBucketDictionaries is the source that reads a stream's bucket.
//
// MsgOverhead and EncoderLevel are the envelope's costs for whoever sizes
// batches: the bytes a batch message carries besides its body, and the zstd
// level of a class's compression name, one function each for the edge node
// and for the planning model (package plan), so that the two agree.
//
// # Caveats
//
// Decode bounds the decompressed size (Decoder.MaxSize) so a hostile message
// cannot expand without limit. Events are returned as slices of one buffer:
// copy them if they must outlive the next Decode on the same Decoder.
//
// ErrDict is not a verdict on the batch: its dictionary cannot be had now
// (no source, bucket unreachable, key not there yet: a KV read may be served
// by a replica that lags). Keep the message and decode it later; never drop
// or terminate it for that. ErrBadDict means the source holds something
// else than the dictionary under that id: the batch is likely fine, the
// bucket is not. A dictionary that passes the checks but is not the one the
// batch was compressed with (its id reused against the rule) makes the body
// fail to decode (ErrBody, usually a checksum mismatch).
//
// A Decoder checks that every frame of a version 2 batch names the header's
// dictionary (or none) before it fetches anything, bounds each dictionary to
// MaxDictSize, and keeps at most 16 (16 MiB); a consumer that interleaves
// more dictionaries than that fetches them again from its source, which
// keeps 64 (32 MiB).
package wire
