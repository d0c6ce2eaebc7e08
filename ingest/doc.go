// Package ingest is sluice's front door: an HTTP handler that speaks NDJSON
// and the wire formats of real tracking SDKs, and a NATS source. Both are
// doors of one Pipeline, which hands events to a Sink (an *aggregator.Node
// in the binary); each acknowledges only after the Sink made them durable.
//
// # Pipeline
//
// An event takes one path whichever door it came in by: the door's
// decoder validates it once (one JSON object, at most MaxEventBytes, made
// one line); the pipeline drops repeats (dedup), routes it to its class,
// stamps it, groups the batch's events by class and makes one Sink call
// per class. Its bytes are walked once: the validating pass also finds its
// id, the values of the top-level members the routing rules name (the
// event is routed from them) and whether it carries a stamp member, so
// that dedup, routing and the stamp read nothing again (scan.go says
// which rebuilt events are walked once more); the door translates the outcome once (an HTTP status; a NATS
// ack, delayed nak or term). The doors share the routing, the stamp, the
// limits, the memory budget (Options.MaxInflightBytes) and the dedup
// window, and Pipeline.Reconfigure changes the routing, the stamp and the
// event limits of both at once.
//
// # Endpoints
//
//	POST /v1/events                       NDJSON (one JSON object a line) or a JSON array of objects
//	POST /v1/batch                        Segment and RudderStack: {"batch":[…],"writeKey":…}
//	POST /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group, /v1/alias
//	                                      Segment single calls: one message
//	POST /com.snowplowanalytics.snowplow/tp2
//	                                      Snowplow: {"schema":…payload_data…,"data":[…]}
//	GET  /i?e=pv&…                        Snowplow pixel: answered with a 1×1 GIF
//	POST /batch/, /capture/, /e/          PostHog (with or without the slash): {"api_key":…,"batch":[…]},
//	                                      one event, or an array
//	GET  /healthz                         200 "ok"
//
// Bodies are decoded by Content-Encoding (gzip, x-gzip, deflate, zstd, or a
// list of them), never by Content-Type: RudderStack sends gzip labelled as
// form data. An identity body that starts with gzip's magic bytes is
// gunzipped too. The formats' rules (required fields, Segment's
// batch-level context, Snowplow's base64 ue_px and cx made plain ue_pr and
// co) are in sdk.go and the decoder of each format.
//
// # Events
//
// Each event is validated on its own: a bad line or batch element is
// listed in "rejected" with its 1-based position and the reason, and the
// good events beside it are kept. Accepted events get two members, first:
// "receivedAt" (the request's arrival, RFC 3339 UTC with milliseconds) and
// "sluiceNode" (Options.Node), replacing members of those names. Write keys
// carried in bodies are never stored.
//
// The class of an event is, in order: the request's ?class= or
// X-Sluice-Class; the class of its write key; the routing rules
// (Options.Router), which see the event's fields and its source endpoint
// ("events", "segment", "snowplow", "posthog"); Options.DefaultClass.
// A class must be 1-64 bytes of [A-Za-z0-9_-], not "quarantine".
//
// SDKs retry with the same event id (Segment messageId, Snowplow eid,
// PostHog uuid). A window of Options.DedupWindow (10 minutes, at most
// Options.DedupEntries ids) drops exact repeats before the Sink and counts
// them; an id is recorded only once its event is durable, so a request
// refused with 429 or 503 is retried whole without loss. Two copies in
// flight at the same moment may both pass. /v1/events bodies carry no id.
//
// # Keys
//
// With Options.Keys set, a request must present one: as the user of
// Authorization: Basic (Segment, RudderStack), as a Bearer token, in
// X-Sluice-Key, or in the body (Segment "writeKey", PostHog "api_key").
// Otherwise it gets 401 with WWW-Authenticate. Keys are compared in
// constant time and never logged or echoed.
//
// # Responses
//
//	200 {"accepted":N,"duplicates":D,"rejected":[{"line":L,"error":"…"}]}   N events are durable
//	200 {"accepted":0,"dropped":N,"rejected":[…]}        a class is full, policy drop_newest: N events refused and counted
//	400 {"error":"…","rejected":[…]}                     bad class, bad body, no valid event
//	401 {"error":"…"}                                    missing or unknown write key
//	405 {"error":"…"}                                    wrong method (Allow says which)
//	413 {"error":"…"}                                    body or decoded body over its limit, which the message names
//	415 {"error":"…"}                                    an unsupported Content-Encoding (Accept-Encoding lists ours)
//	429 {"error":"…","accepted":N,…} + Retry-After: 1    a class is full (policy block): retry later
//	503 {"error":"…","accepted":N,…} + Retry-After: 5    the node is shutting down
//	500 {"error":"…","accepted":N,…}                     anything else
//
// A request whose events span classes makes one Sink call per class; when
// a later class refuses, "accepted" counts what earlier classes made
// durable. At most Options.MaxRejected rejections are listed;
// "rejected_omitted" counts the rest.
//
// # NATS subjects
//
// StartNATS ingests the messages of NATS subjects through the same
// Pipeline. A message body is one JSON object (it may span lines; it is
// compacted onto one) or NDJSON; its events get the Subscription's Class,
// or are routed by Options.Router under the source "nats:"+Subject, and
// are stamped as HTTP events are. Messages that arrive together are
// ingested together, one Sink call per class and MaxBatch events.
//
// NATS traffic is charged to the pipeline's memory budget as HTTP bodies
// are, before it is read: a JetStream fetch reserves NATSOptions.MaxBatchBytes
// (at least the connection's max payload) before it asks the server for
// messages, and a core message is charged as it is taken from the
// subscription. While the budget is spent a JetStream subscription does
// not fetch (its messages wait in the stream, unacknowledged), a batch
// whose stamped copies do not fit is handed back for redelivery after
// NakDelay, and a core subscription takes no more messages, so that the
// client's pending limits bound what waits (NATSCounts.Busy counts the
// waits).
// Subscriptions that could overlap the node's own upstream subjects
// (NATSOptions.ExcludeSubjects, default "sluice.>") or each other are
// refused, so the node never ingests its own output or one message twice.
//
// A JetStream subscription (Stream set) reads through a durable pull
// consumer and acknowledges a message only after the Sink made its events
// durable. When the Sink refuses (full, closed, failing) the message is
// redelivered after NakDelay and fetching pauses; a message with no valid
// event is terminated with the reason and counted, never redelivered.
// Delivery is at least once: a crash between the spool's commit and the
// ack, a lost ack, or a message whose events span classes and was refused
// in one of them ingests events again, so consumers deduplicate by event id.
//
// Core NATS subscriptions are at most once before the spool: core NATS
// has no acknowledgement, so what NATS delivered and the spool had not
// committed is lost by a crash, events the Sink refuses are dropped and
// counted (Stats().Total.Refused), and messages beyond the subscription's
// pending limit are dropped by the client and counted (SlowConsumer). Use a
// JetStream source where durability matters.
//
// # Caveats
//
// The whole decoded body is held in memory, bounded by Options.MaxBodyBytes
// and Options.MaxDecodedBytes, and charged to Options.MaxInflightBytes. A
// core NATS subscription's pending messages are the NATS client's, bounded
// by NATSOptions.PendingMsgs and PendingBytes, not by the budget; and a
// core batch that waits for the budget to stamp its events holds its
// messages (at most MaxBatchBytes) while it waits. A Sink must not retain the event slices
// after Ingest returns.
//
// The NATS source is the one place outside aggregator that starts
// goroutines: one per subscription, owned by the NATSSource and waited for
// by Shutdown. A JetStream pull that Shutdown cancels may already have been
// answered by the server; that message is redelivered after the
// consumer's AckWait (30 s). The consumer's configuration is sluice's:
// StartNATS updates an existing durable of the same name. A Subscription
// Class the node does not know makes every Ingest fail (logged once): the
// messages are redelivered forever (JetStream) or dropped (core).
//
// The package imports aggregator only for its error values (which are the
// spool's), translated once in errors.go into what each door answers.
package ingest
