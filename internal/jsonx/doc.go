// Package jsonx validates ingested events cheaply before they are made
// durable.
//
// [Object] answers one question for every event on the hot path: is this
// byte slice exactly one JSON object (RFC 8259), with valid UTF-8 in every
// string and no deeper nesting than [MaxDepth]? It is an iterative byte
// scanner with a fixed-size state stack: it never recurses, never allocates
// on valid input and scans the bodies of strings eight bytes at a time.
// [HasNewline] is the companion check for newline-delimited storage.
//
// The SDK decoders of package ingest walk request bodies without decoding
// them into maps: [Elements] splits an array into its raw elements,
// [Members] lists an object's top-level members with their positions (and
// [ObjectMembers] does so while validating, in one pass), [Unquote] and
// [AppendQuote] convert strings as encoding/json and JavaScript do, and
// [AppendCompact] removes white space as json.Compact does. Elements and
// Members check structure only: a malformed element or value reaches the
// caller, to be refused on its own.
//
// It is the project's only JSON scanner: package priority routes events
// and drops their fields with ObjectMembers and Members, so an event is
// judged valid by the same rules everywhere. Object and ObjectMembers are
// one scanner: a loop over the outer object's members that validates each
// value with one fixed-stack state machine.
//
// # Caveats
//
//   - Object validates; it does not decode. Duplicate keys are accepted and
//     numbers are only checked against the RFC grammar, not for range, as
//     encoding/json.Valid does.
//   - \u escapes of lone surrogates (such as "\ud800") are accepted, as
//     encoding/json accepts them; raw UTF-8 encodings of surrogates are not.
//   - A byte order mark is not whitespace: input starting with one is
//     reported as not an object.
package jsonx
