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
package wire
