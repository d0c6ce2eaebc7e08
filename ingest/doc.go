// Package ingest is sluice's HTTP front door: POST /v1/events takes
// newline-delimited JSON (one JSON object per line) and hands the good
// lines to a Sink (an *aggregator.Node in the binary), answering only after
// the Sink made them durable.
//
// # Requests
//
//	POST /v1/events?class=ingest      NDJSON body, one JSON object per line
//	X-Sluice-Class: ingest            alternative to ?class=; the query wins
//	Content-Encoding: gzip            optional; a gzip body is also detected by its magic bytes
//	GET /healthz                      200 "ok"
//
// The class defaults to Options.DefaultClass ("ingest") and must be 1-64
// bytes of [A-Za-z0-9_-], not "quarantine" (it names a spool directory and
// a NATS subject token).
//
// # Responses
//
// Every line is validated on its own: a line that is not a JSON object is
// listed in "rejected" with its 1-based line number and the reason, and the
// good lines beside it are kept (blank lines are skipped). The status says
// what happened to the good lines:
//
//	200 {"accepted":N,"rejected":[{"line":L,"error":"…"}]}   N events are durable
//	200 {"accepted":0,"dropped":N,"rejected":[…]}            the class is full, policy drop_newest: N events were refused and counted
//	400 {"error":"…","rejected":[…]}                         bad class, bad gzip, empty body, or no valid line
//	405 {"error":"…"}                                        wrong method (Allow says which)
//	413 {"error":"…"}                                        body or decompressed body over its limit, which the message names
//	415 {"error":"…"}                                        Content-Encoding other than gzip or identity
//	429 {"error":"…"} + Retry-After: 1                       the class is full (policy block): retry later
//	503 {"error":"…"} + Retry-After: 5                       the node is shutting down
//	500 {"error":"…"}                                        anything else; nothing of the request is known to be durable
//
// At most Options.MaxRejected rejections are listed; "rejected_omitted"
// counts the rest.
//
// # Caveats
//
// The whole (decompressed) body is held in memory, bounded by
// Options.MaxBodyBytes and Options.MaxDecodedBytes, so the handler's memory
// is those limits times the concurrent requests. A Sink must not retain the
// event slices after Ingest returns.
//
// The package imports aggregator only for its error values, which decide
// the status codes.
package ingest
