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
//   - Merging batch-level members into each message (Segment "context"
//     and "integrations") is the one way a body grows: the events of one
//     body may total at most decodeLimits.maxExpansion times its size, as
//     they would be stored, checked before each copy is made (413 past
//     it), and every byte built is charged to the request's meter before
//     it is allocated (429 when the budget is spent).

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
	// meta is what the door's validating pass learnt of Body for routing
	// and stamping (scan.go); zero when the event was not scanned so.
	meta eventMeta
}

// Decoded is what a decoder made of one request body.
type Decoded struct {
	Events   []Event
	Rejected []Rejection // Line is the 1-based position of the element in the batch
	// WriteKey is the key carried in the body (Segment "writeKey", PostHog
	// "api_key"), "" if none. It is never left in an event body.
	WriteKey string
}

// DefaultMaxExpansion is Options.MaxExpansion's default.
const DefaultMaxExpansion = 8

// minStoredBytes is the least a body may store whatever its size, so
// that a small single call can take its added "type" and stamps.
const minStoredBytes = 64 << 10

// decodeLimits bound what a decoder makes of one body.
type decodeLimits struct {
	maxEvent  int // bytes of one event, as received and as stored
	maxEvents int // elements of a batch array; 0 for no limit
	// maxExpansion bounds the bytes of all the events of the body, as
	// they would be stored (before stamps), to this multiple of the
	// body's size (at least minStoredBytes); 0 takes DefaultMaxExpansion.
	maxExpansion float64
	// meter is charged for what the decoder allocates: events built,
	// the event and rejection lists. Nil charges nothing.
	meter *meter
	// plan is what the validating pass collects to route each event
	// (scan.go).
	plan scanPlan
	// authorize, when set, checks the write key the body carries as soon
	// as the decoder finds it (the envelope's, else the first event's),
	// and no event is built (a member added or stripped) before it has
	// passed: a body without a key in its envelope or first event stops
	// at the first event to build with errKeyFirst.
	authorize func(key string) error
}

// errKeyFirst stops a body that needs its write key checked before an
// event is built, when the decoder has not found one yet.
var errKeyFirst = errors.New("missing write key: send it in a header, or in the body's envelope or its first event")

// errExpansion stops a body whose events would be stored larger than
// decodeLimits allow; the handler answers 413 with its message.
type errExpansion struct{ limit, body int64 }

func (e *errExpansion) Error() string {
	return fmt.Sprintf("events would be stored larger than %d bytes, the limit for a body of %d bytes (ingest.max_expansion times its size): batch-level \"context\" or \"integrations\" is copied into every message without its own; send smaller batches", e.limit, e.body)
}

// sdkDecoder collects the Decoded of one request.
type sdkDecoder struct {
	name      string // prefixes body errors: "segment: …"
	maxEvent  int
	maxEvents int // elements of the batch array, 0 for no limit
	out       Decoded
	ab        meteredBuf // the bytes of the events built rather than aliased
	unq, dec  []byte     // reused for decoding values (Snowplow)
	meter     *meter
	authorize func(string) error // nil once the key passed (see decodeLimits)
	stored    int64              // bytes of the events kept so far
	maxStored int64
	bodyLen   int64
	growth    int   // a built event is at most growth × its element, plus the members added
	credit    int64 // bytes charged ahead for the event and rejection lists
	err       error // why decoding stopped early (errExpansion, errBusy); sticky
	col       eventScan
	meta      eventMeta // of the element scan last validated
	// whole is the body when it is one event (a single call): scan
	// validates it, white space around included, and a syntax error in it
	// is the body's, not a rejection.
	whole []byte
}

// newDecoder returns the decoder of body for the format name.
func newDecoder(name string, body []byte, lim decodeLimits) sdkDecoder {
	ratio := lim.maxExpansion
	if ratio <= 0 {
		ratio = DefaultMaxExpansion
	}
	d := sdkDecoder{name: name, maxEvent: lim.maxEvent, maxEvents: lim.maxEvents, meter: lim.meter, authorize: lim.authorize, growth: 1,
		maxStored: max(int64(ratio*float64(len(body))), minStoredBytes), bodyLen: int64(len(body)), col: newEventScan(lim.plan)}
	// Most SDK events are a few hundred bytes: reserve room for that many
	// events, within reason, rather than grow the slice one doubling at a
	// time.
	n := min(len(body)/256+1, 1024)
	if d.take(int64(n) * eventSize) {
		d.out.Events = make([]Event, 0, n)
	}
	return d
}

// eventSize is what one Event costs in Decoded.Events, and rejectionSize
// one Rejection besides its message.
const eventSize, rejectionSize = 56, 32

// creditStep is the least the decoder charges its meter at a time: events
// and rejections are charged ahead in steps, not each on the budget's lock.
const creditStep = 16 << 10

// take charges n bytes before they are allocated, from credit charged
// ahead. It returns false, with d.err set, when the budget refuses.
func (d *sdkDecoder) take(n int64) bool {
	if d.err != nil {
		return false
	}
	if d.credit >= n {
		d.credit -= n
		return true
	}
	step := max(n-d.credit, creditStep)
	if err := d.meter.charge(step); err != nil {
		d.err = err
		return false
	}
	d.credit += step - n
	return true
}

// room makes room in the arena for an event of up to n bytes, charged
// first, once the stored total allows it. It returns false, with d.err
// set, when it does not.
func (d *sdkDecoder) room(n int) bool {
	if d.err != nil {
		return false
	}
	if d.authorize != nil {
		d.err = errKeyFirst
		return false
	}
	if d.stored+int64(n) > d.maxStored {
		d.err = &errExpansion{limit: d.maxStored, body: d.bodyLen}
		return false
	}
	// The arena holds built events only, all counted in stored: it never
	// needs more than maxStored.
	if _, err := d.ab.reserve(d.meter, n, d.maxStored); err != nil {
		d.err = err
		return false
	}
	return true
}

// bodyErr formats an error about the whole body.
func (d *sdkDecoder) bodyErr(format string, args ...any) error {
	return fmt.Errorf(d.name+": "+format, args...)
}

func (d *sdkDecoder) reject(line int, msg string) {
	if !d.take(rejectionSize + int64(len(msg))) {
		return
	}
	d.out.Rejected = append(d.out.Rejected, Rejection{Line: line, Error: msg})
}

// scan checks that element line, raw, is a JSON object of at most
// maxEvent bytes and calls fn (if not nil) for each of its members, in
// one pass, the validating pass that also collects the event's meta for
// keep. It rejects the element and returns false if not; what fn learnt
// is then void.
func (d *sdkDecoder) scan(line int, raw []byte, fn func(m jsonx.Member) error) bool {
	if d.whole != nil {
		m, err := d.col.validate(d.whole, fn)
		if err != nil {
			d.err = d.syntaxErr(err, 0)
			return false
		}
		if len(raw) > d.maxEvent {
			d.reject(line, fmt.Sprintf("event of %d bytes, limit %d", len(raw), d.maxEvent))
			return false
		}
		d.meta = m
		return true
	}
	if len(raw) > d.maxEvent {
		d.reject(line, fmt.Sprintf("event of %d bytes, limit %d", len(raw), d.maxEvent))
		return false
	}
	m, err := d.col.validate(raw, fn)
	if err != nil {
		d.reject(line, err.Error())
		return false
	}
	d.meta = m
	return true
}

// keep appends the event ev of element line, after compacting it if it
// holds a newline and checking its final size. built says that ev is the
// tail of the arena (and may be compacted in place, or dropped); when it
// is not, ev is the element scan last validated. A nil ev (build
// stopped: d.err says why) is not kept.
func (d *sdkDecoder) keep(line int, ev, id []byte, built bool) {
	if ev == nil {
		return
	}
	changed := built
	if jsonx.HasNewline(ev) {
		changed = true
		if built { // ev is the arena's tail: compact it in place
			n := len(ev)
			ev = jsonx.AppendCompact(ev[:0], ev)
			d.ab.b = d.ab.b[:len(d.ab.b)-n+len(ev)]
		} else {
			if !d.room(len(ev)) {
				return
			}
			start := len(d.ab.b)
			d.ab.b = jsonx.AppendCompact(d.ab.b, ev)
			ev, built = d.ab.b[start:], true
		}
	}
	if len(ev) > d.maxEvent {
		d.reject(line, fmt.Sprintf("event of %d bytes after normalization, limit %d", len(ev), d.maxEvent))
		if built {
			d.ab.b = d.ab.b[:len(d.ab.b)-len(ev)]
		}
		return
	}
	if len(d.out.Events) == cap(d.out.Events) && !d.growEvents() {
		return
	}
	meta := d.meta
	if changed {
		meta = d.col.rescan(ev) // not the bytes validated
	}
	d.stored += int64(len(ev))
	d.out.Events = append(d.out.Events, Event{Body: ev[:len(ev):len(ev)], ID: id, meta: meta})
}

// growEvents makes room in the event list for more events, charged
// before it is allocated. The events kept so far and the bytes they took
// tell about how many the rest of the body holds: the list grows to that
// and an eighth more, so that a body whose first guess (newDecoder) fell a
// little short is not listed at twice its size; when they tell nothing
// more (built events larger than their elements), it doubles.
func (d *sdkDecoder) growEvents() bool {
	n := len(d.out.Events)
	more := max(n, 16)
	if n > 0 && d.stored > 0 {
		if est := int(int64(n) * d.bodyLen / d.stored); est > n {
			more = min(more, est-n+est/8+1)
		}
	}
	if !d.take(int64(more) * eventSize) {
		return false
	}
	evs := make([]Event, n, n+more)
	copy(evs, d.out.Events)
	d.out.Events = evs
	return true
}

// build appends to the arena the valid JSON object obj rebuilt: each member
// goes through edit, which appends the member's bytes to dst (m's own
// bytes obj[m.Start:m.End] to keep it as is, nothing to drop it, at most
// d.growth times them to rewrite it), then the members of extra follow.
// The result is compacted if obj spans lines. It returns the new event,
// the arena's tail; or nil, with d.err set, when the event would take the
// request past its stored bound or its budget: that is checked with the
// event's largest size before a byte is copied.
func (d *sdkDecoder) build(obj []byte, edit func(dst []byte, m jsonx.Member) []byte, extra ...sdkMember) []byte {
	upper := d.growth*len(obj) + 2
	for _, x := range extra {
		upper += len(x.key) + len(x.value) + 4
	}
	if !d.room(upper) {
		return nil
	}
	start := len(d.ab.b)
	dst := append(d.ab.b, '{')
	n := 0
	if traceScan != nil {
		traceScan(obj)
	}
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
	d.ab.b = dst
	return d.ab.b[start:]
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
		d.adopt(string(k))
	case string(k) != d.out.WriteKey:
		return fmt.Sprintf("%q differs from the request's", name)
	}
	return ""
}

// eventKeys checks each member name (the write key) of the valid object
// ev against the request's key.
func (d *sdkDecoder) eventKeys(ev []byte, name string) (why string) {
	if traceScan != nil {
		traceScan(ev)
	}
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
	d.adopt(string(k))
	return d.err
}

// adopt makes key the request's write key and has it checked, if asked
// to (decodeLimits.authorize): a key that fails stops decoding (d.err).
func (d *sdkDecoder) adopt(key string) {
	d.out.WriteKey = key
	if d.authorize == nil || d.err != nil {
		return
	}
	if err := d.authorize(key); err != nil {
		d.err = err
		return
	}
	d.authorize = nil
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
		return d.err // stop at a stored bound or a spent budget
	})
	if d.err != nil {
		return d.err
	}
	return d.syntaxErr(err, base)
}

// errTooManyEvents stops decoding a batch of more than its maxEvents
// elements; the handler answers 413.
var errTooManyEvents = errors.New("too many events")

// result returns the decoded body, or the error alone.
func (d *sdkDecoder) result(err error) (Decoded, error) {
	if err == nil {
		err = d.err
	}
	if err != nil {
		return Decoded{}, err
	}
	return d.out, nil
}
