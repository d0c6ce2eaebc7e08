package ingest

import (
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// This file holds what the decoders of the tracking-SDK wire formats
// share. Each decoder turns one (decompressed) request body into events:
//
//	decodeArray         POST /v1/events, a JSON array of objects
//	decodeSegment       Segment and RudderStack /v1/batch, /v1/track, …
//	decodeSnowplow      Snowplow POST /com.snowplowanalytics.snowplow/tp2
//	decodeSnowplowQuery Snowplow GET /i (the pixel)
//	decodePostHog       PostHog /batch/, /capture/, /e/
//
// They never decode an event into a map or struct. jsonx.Members scans
// the envelope without validating what the decoder ignores, jsonx.Elements
// splits the batch array, and jsonx.ObjectMembers validates each element
// exactly as jsonx.Object does while listing its top-level members, in one
// pass. An event that needs no change aliases the body; one that does (a
// member added, stripped or renamed, or white space with newlines removed)
// is built in one buffer per request.
//
// The rules all decoders share:
//
//   - An error means the whole body is unusable: not JSON, or not the
//     envelope the format defines. Its message says what is wrong, for the
//     client, in a 400.
//   - Otherwise each element of the batch is kept or rejected on its own,
//     so a bad element costs only itself: len(Events)+len(Rejected) is the
//     number of elements, and Rejection.Line is the element's 1-based
//     position (1 for a body that is one event).
//   - An element over maxEvent bytes as received, or whose event would be
//     after normalization, is rejected with "event of N bytes, limit M".
//   - Event.Body is one JSON object on one line: an element with a raw
//     newline or carriage return (pretty-printed JSON) is compacted, all
//     white space outside strings removed; other elements keep their
//     bytes.
//   - The write key the body carries (Segment "writeKey", PostHog
//     "api_key") goes to Decoded.WriteKey and is stripped from every event.
//     An event whose own key differs from the request's is rejected, so one
//     request never mixes sources.
//   - Where a member that matters appears twice, the last one counts, as in
//     encoding/json and JavaScript; members are matched by their name with
//     escapes decoded.
//
// Caveats:
//
//   - Where an element ends is found by counting brackets outside strings,
//     not by matching them, so an element with a stray or mismatched
//     bracket can take its neighbours with it or make the whole body
//     unusable. JSON that a serializer wrote never has one.
//   - Events alias the body: it must stay untouched (not go back to a
//     pool) until the events are durable.

// Event is one decoded event on its way to the spool.
type Event struct {
	// Body is exactly one JSON object on one line (no '\n' or '\r'), at
	// most maxEvent bytes. It may alias the request body; its capacity is
	// cut to its length.
	Body []byte
	// ID is the SDK's own event id, which lets a later stage drop client
	// retries: Segment/RudderStack "messageId", Snowplow "eid", PostHog
	// "uuid", with escapes decoded. It is nil when the member is absent,
	// not a string, or empty. It may alias the request body or Body.
	ID []byte
}

// Decoded is what a decoder made of one request body.
type Decoded struct {
	Events   []Event
	Rejected []Rejection // Line is the 1-based position of the element in the batch
	// WriteKey is the key carried in the body (Segment "writeKey", PostHog
	// "api_key"), "" if none. It is never left in an event body.
	WriteKey string
}

// sdkDecoder collects the Decoded of one request.
type sdkDecoder struct {
	name      string // prefixes body errors: "segment: …"
	maxEvent  int
	maxEvents int // elements of the batch array, 0 for no limit
	out       Decoded
	arena     []byte // the bytes of the events built rather than aliased
	hint      int    // the body's size, to size the arena
	unq, dec  []byte // reused for decoding values (Snowplow)
}

// newDecoder returns the decoder of body for the format name.
func newDecoder(name string, body []byte, maxEvent, maxEvents int) sdkDecoder {
	// Most SDK events are a few hundred bytes: reserve room for that many
	// events, within reason, rather than grow the slice one doubling at a
	// time.
	return sdkDecoder{name: name, maxEvent: maxEvent, maxEvents: maxEvents, hint: len(body),
		out: Decoded{Events: make([]Event, 0, min(len(body)/256+1, 1024))}}
}

// bodyErr formats an error about the whole body.
func (d *sdkDecoder) bodyErr(format string, args ...any) error {
	return fmt.Errorf(d.name+": "+format, args...)
}

func (d *sdkDecoder) reject(line int, msg string) {
	d.out.Rejected = append(d.out.Rejected, Rejection{Line: line, Error: msg})
}

// scan checks that element line, raw, is a JSON object of at most
// maxEvent bytes and calls fn for each of its members, in one pass. It
// rejects the element and returns false if not; what fn learnt is then
// void.
func (d *sdkDecoder) scan(line int, raw []byte, fn func(m jsonx.Member) error) bool {
	if len(raw) > d.maxEvent {
		d.reject(line, fmt.Sprintf("event of %d bytes, limit %d", len(raw), d.maxEvent))
		return false
	}
	if err := jsonx.ObjectMembers(raw, fn); err != nil {
		d.reject(line, err.Error())
		return false
	}
	return true
}

// keep appends the event ev of element line, after compacting it if it
// holds a newline and checking its final size. built says that ev is the
// tail of d.arena (and may be compacted in place, or dropped).
func (d *sdkDecoder) keep(line int, ev, id []byte, built bool) {
	if jsonx.HasNewline(ev) {
		if built { // ev is the arena's tail: compact it in place
			n := len(ev)
			ev = jsonx.AppendCompact(ev[:0], ev)
			d.arena = d.arena[:len(d.arena)-n+len(ev)]
		} else {
			start := len(d.arena)
			d.arena = jsonx.AppendCompact(d.arena, ev)
			ev, built = d.arena[start:], true
		}
	}
	if len(ev) > d.maxEvent {
		d.reject(line, fmt.Sprintf("event of %d bytes after normalization, limit %d", len(ev), d.maxEvent))
		if built {
			d.arena = d.arena[:len(d.arena)-len(ev)]
		}
		return
	}
	d.out.Events = append(d.out.Events, Event{Body: ev[:len(ev):len(ev)], ID: id})
}

// build appends to d.arena the valid JSON object obj rebuilt: each member
// goes through edit, which appends the member's bytes to dst (m's own
// bytes obj[m.Start:m.End] to keep it as is, nothing to drop it), then the
// members of extra follow. The result is compacted if obj spans lines. It
// returns the new event, the arena's tail.
func (d *sdkDecoder) build(obj []byte, edit func(dst []byte, m jsonx.Member) []byte, extra ...sdkMember) []byte {
	if d.arena == nil { // the first event built: most likely not the last
		d.arena = make([]byte, 0, max(min(d.hint, 32<<10), 2*len(obj)+64))
	}
	start := len(d.arena)
	dst := append(d.arena, '{')
	n := 0
	jsonx.Members(obj, func(m jsonx.Member) error {
		mark := len(dst)
		if n > 0 {
			dst = append(dst, ',')
		}
		before := len(dst)
		if dst = edit(dst, m); len(dst) == before {
			dst = dst[:mark]
		} else {
			n++
		}
		return nil
	})
	for _, x := range extra {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, x.key...)
		dst = append(dst, '"', ':')
		dst = append(dst, x.value...)
		n++
	}
	dst = append(dst, '}')
	if jsonx.HasNewline(obj) { // pretty-printed: compact all of it
		dst = dst[:start+len(jsonx.AppendCompact(dst[start:start], dst[start:]))]
	}
	d.arena = dst
	return d.arena[start:]
}

// sdkMember is a member that build adds: key needs no escaping and value is
// valid JSON.
type sdkMember struct {
	key   string
	value []byte
}

// keepMember is an edit for build that keeps every member as it is but
// those named drop.
func keepMember(obj []byte, drop string) func(dst []byte, m jsonx.Member) []byte {
	return func(dst []byte, m jsonx.Member) []byte {
		if string(m.Key) == drop {
			return dst
		}
		return append(dst, obj[m.Start:m.End]...)
	}
}

// object checks that body is a JSON object, before its members are
// scanned: it must start (after white space) with '{'.
func (d *sdkDecoder) object(body []byte) error {
	return d.startsWith(body, '{', "object")
}

// firstNonSpace returns the first byte of b that is not JSON white space.
func firstNonSpace(b []byte) (byte, bool) {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, true
		}
	}
	return 0, false
}

func (d *sdkDecoder) startsWith(body []byte, want byte, what string) error {
	switch c, ok := firstNonSpace(body); {
	case !ok:
		return d.bodyErr("empty body")
	case c != want:
		return d.bodyErr("body is not a JSON %s: starts with %s", what, describeByte(c))
	}
	return nil
}

// syntaxErr formats a *jsonx.SyntaxError found at offset base of the body.
func (d *sdkDecoder) syntaxErr(err error, base int) error {
	if err == nil {
		return nil
	}
	var se *jsonx.SyntaxError
	if errors.As(err, &se) {
		return d.bodyErr("invalid JSON at byte %d: %s", base+se.Offset, se.Msg)
	}
	return err
}

// valueOffset returns the offset of value, a member's value, in its object.
func valueOffset(m jsonx.Member) int { return m.End - len(m.Value) }

// describeByte formats c for a message: 'x' when printable ASCII, else
// 0xNN.
func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f && c != '\'' {
		return "'" + string(rune(c)) + "'"
	}
	return fmt.Sprintf("0x%02x", c)
}

// jsonKind names the JSON type of the raw value v for a message.
func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "empty"
	}
	switch c := v[0]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || c-'0' <= 9:
		return "a number"
	}
	return "not JSON"
}

// stringValue returns the contents of the raw JSON string v, and false if v
// is not a valid string. It aliases v when v has no escape.
func stringValue(v []byte) ([]byte, bool) {
	if len(v) == 0 || v[0] != '"' {
		return nil, false
	}
	s, err := jsonx.Unquote(v)
	return s, err == nil
}

// idValue returns the event id held by the raw value v: its contents if v
// is a non-empty string, else nil.
func idValue(v []byte) []byte {
	if s, ok := stringValue(v); ok && len(s) > 0 {
		return s
	}
	return nil
}

// checkKey compares the write key v (a raw value) an event carries with
// the request's, adopting it if the request has none yet. It returns why
// the event must be rejected, or "". null counts as no key.
func (d *sdkDecoder) checkKey(name string, v []byte) string {
	if string(v) == "null" {
		return ""
	}
	k, ok := stringValue(v)
	switch {
	case !ok:
		return fmt.Sprintf("%q is %s, want a string", name, jsonKind(v))
	case d.out.WriteKey == "":
		d.out.WriteKey = string(k)
	case string(k) != d.out.WriteKey:
		return fmt.Sprintf("%q differs from the request's", name)
	}
	return ""
}

// eventKeys checks each member name (the write key) of the valid object
// ev against the request's key.
func (d *sdkDecoder) eventKeys(ev []byte, name string) (why string) {
	jsonx.Members(ev, func(m jsonx.Member) error {
		if why == "" && string(m.Key) == name {
			why = d.checkKey(name, m.Value)
		}
		return nil
	})
	return why
}

// bodyKey reads the write key the envelope carries, the raw value v of
// member name at offset base of the body; null counts as none.
func (d *sdkDecoder) bodyKey(name string, v []byte, base int) error {
	if string(v) == "null" {
		return nil
	}
	k, err := d.stringMember(name, v, base)
	if err != nil {
		return err
	}
	d.out.WriteKey = string(k)
	return nil
}

// stringMember returns the contents of v, the raw value of the envelope's
// member name at offset base of the body, which must be a string.
func (d *sdkDecoder) stringMember(name string, v []byte, base int) ([]byte, error) {
	if len(v) == 0 || v[0] != '"' {
		return nil, d.bodyErr("%q is %s, want a string", name, jsonKind(v))
	}
	s, err := jsonx.Unquote(v)
	if err != nil {
		return nil, d.syntaxErr(err, base)
	}
	return s, nil
}

// arrayMember checks that v, the raw value of member name of the
// envelope, is an array.
func (d *sdkDecoder) arrayMember(name string, v []byte) error {
	if len(v) == 0 || v[0] != '[' {
		return d.bodyErr("%q is %s, want an array", name, jsonKind(v))
	}
	return nil
}

// elements runs fn on each element of the array a, found at offset base of
// the body, with the element's 1-based position.
func (d *sdkDecoder) elements(a []byte, base int, fn func(line int, raw []byte)) error {
	err := jsonx.Elements(a, func(i int, raw []byte) error {
		if d.maxEvents > 0 && i == d.maxEvents {
			// Stop before the events and rejections of a batch that will
			// be refused whole cost memory in proportion to its elements.
			return errTooManyEvents
		}
		fn(i+1, raw)
		return nil
	})
	return d.syntaxErr(err, base)
}

// errTooManyEvents stops decoding a batch of more than its maxEvents
// elements; the handler answers 413.
var errTooManyEvents = errors.New("too many events")

// result returns the decoded body, or the error alone.
func (d *sdkDecoder) result(err error) (Decoded, error) {
	if err != nil {
		return Decoded{}, err
	}
	return d.out, nil
}
