package ingest

import (
	"fmt"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// segmentTypes are the message types of the Segment spec, which RudderStack
// shares; each is also a single-call endpoint, /v1/<type>.
var segmentTypes = [...]string{"track", "identify", "page", "screen", "group", "alias"}

const segmentTypeList = "track, identify, page, screen, group or alias"

// decodeSegment decodes a Segment or RudderStack HTTP API body. call is the
// endpoint's last path element: "batch" for /v1/batch, whose body is
// {"batch":[…],"writeKey":"…",…}, or one of the message types for
// /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group and /v1/alias,
// whose body is one message.
//
// A message must be a JSON object. In a batch it needs a string "type",
// one of the six, compared ASCII case-insensitively (real SDKs send odd
// casings; the event keeps its bytes). A single call's message that has no
// "type" gets "type":"<call>"; one whose type is a different one is
// rejected. The event ID is "messageId".
//
// The write key is the envelope's "writeKey", else the first message's;
// "writeKey" members are stripped from the events, and a message whose key
// differs from the request's is rejected. The batch-level "context" and
// "integrations" objects, which the HTTP API applies to every message of
// the batch, are added as they are to each message that has no member of
// that name (there is no deeper merge; an empty object or null is
// ignored). Other envelope members ("sentAt", RudderStack's "timestamp")
// are ignored and not validated.
func decodeSegment(body []byte, call string, lim decodeLimits) (Decoded, error) {
	d := newDecoder("segment", body, lim)
	if call != "batch" && !segmentType([]byte(call), true) {
		return Decoded{}, d.bodyErr("unknown call %q: want batch, %s", call, segmentTypeList)
	}
	if err := d.object(body); err != nil {
		return Decoded{}, err
	}
	if call == "batch" {
		return d.result(d.segmentBatch(body))
	}
	d.whole = body // validated by segmentMessage's scan
	d.segmentMessage(1, trimJSONSpace(body), call, nil, nil)
	return d.result(nil)
}

func (d *sdkDecoder) segmentBatch(body []byte) error {
	var batch, key, ctx, integ []byte
	batchAt, keyAt, ctxAt, integAt := -1, 0, 0, 0
	err := jsonx.Members(body, func(m jsonx.Member) error {
		switch string(m.Key) {
		case "batch":
			batch, batchAt = m.Value, valueOffset(m)
		case "writeKey":
			key, keyAt = m.Value, valueOffset(m)
		case "context":
			ctx, ctxAt = m.Value, valueOffset(m)
		case "integrations":
			integ, integAt = m.Value, valueOffset(m)
		}
		return nil
	})
	if err != nil {
		return d.syntaxErr(err, 0)
	}
	if key != nil {
		if err := d.bodyKey("writeKey", key, keyAt); err != nil {
			return err
		}
	}
	if batchAt < 0 {
		return d.bodyErr(`body has no "batch"`)
	}
	if err := d.arrayMember("batch", batch); err != nil {
		return err
	}
	if ctx, err = d.batchObject("context", ctx, ctxAt); err != nil {
		return err
	}
	if integ, err = d.batchObject("integrations", integ, integAt); err != nil {
		return err
	}
	return d.elements(batch, batchAt, func(line int, raw []byte) {
		d.segmentMessage(line, raw, "", ctx, integ)
	})
}

// batchObject checks the batch-level member name, whose raw value v is at
// offset base of the body, and returns it to add to messages: nil when
// absent, null or {}, compacted if it spans lines.
func (d *sdkDecoder) batchObject(name string, v []byte, base int) ([]byte, error) {
	if v == nil || string(v) == "null" {
		return nil, nil
	}
	if len(v) == 0 || v[0] != '{' {
		return nil, d.bodyErr("%q is %s, want an object", name, jsonKind(v))
	}
	if err := jsonx.Object(v); err != nil {
		return nil, d.syntaxErr(err, base)
	}
	if string(trimJSONSpace(v[1:])) == "}" {
		return nil, nil
	}
	if jsonx.HasNewline(v) {
		v = jsonx.AppendCompact(nil, v)
	}
	return v, nil
}

// segmentMessage decodes one message: element line of a batch (call "")
// or the body of a single call. ctx and integ are the batch-level members
// to add.
func (d *sdkDecoder) segmentMessage(line int, raw []byte, call string, ctx, integ []byte) {
	var typ, id []byte
	var hasType, hasCtx, hasInteg, hasKey bool
	ok := d.scan(line, raw, func(m jsonx.Member) error {
		switch string(m.Key) {
		case "type":
			typ, hasType = m.Value, true
		case "messageId":
			id = m.Value
		case "writeKey":
			hasKey = true
		case "context":
			hasCtx = true
		case "integrations":
			hasInteg = true
		}
		return nil
	})
	if !ok {
		return
	}
	if why := checkSegmentType(typ, hasType, call); why != "" {
		d.reject(line, why)
		return
	}
	if hasKey {
		if why := d.eventKeys(raw, "writeKey"); why != "" {
			d.reject(line, why)
			return
		}
	}
	var extra [3]sdkMember
	n := 0
	if !hasType {
		extra[n] = sdkMember{"type", []byte(`"` + call + `"`)}
		n++
	}
	if ctx != nil && !hasCtx {
		extra[n] = sdkMember{"context", ctx}
		n++
	}
	if integ != nil && !hasInteg {
		extra[n] = sdkMember{"integrations", integ}
		n++
	}
	if n == 0 && !hasKey {
		d.keep(line, raw, idValue(id), false)
		return
	}
	d.keep(line, d.build(raw, keepMember(raw, "writeKey"), extra[:n]...), idValue(id), true)
}

// checkSegmentType returns why a message whose "type" member is typ
// (hasType false when it has none) cannot be kept for call ("" in a
// batch), or "".
func checkSegmentType(typ []byte, hasType bool, call string) string {
	if !hasType {
		if call == "" {
			return `missing "type"`
		}
		return ""
	}
	t, ok := stringValue(typ)
	switch {
	case !ok:
		return fmt.Sprintf(`"type" is %s, want a string`, jsonKind(typ))
	case call == "" && !segmentType(t, false):
		return fmt.Sprintf(`unknown "type" %.40q: want %s`, string(t), segmentTypeList)
	case call != "" && !equalFoldASCII(t, call):
		return fmt.Sprintf(`"type" %.40q does not match the call %q`, string(t), call)
	}
	return ""
}

// segmentType reports whether t is one of segmentTypes, exactly when exact
// is set, else ASCII case-insensitively.
func segmentType(t []byte, exact bool) bool {
	for _, s := range segmentTypes {
		if exact && string(t) == s || !exact && equalFoldASCII(t, s) {
			return true
		}
	}
	return false
}

// equalFoldASCII reports whether b equals s, which is lower-case ASCII,
// ignoring the case of ASCII letters only.
func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// trimJSONSpace trims the JSON white space around b.
func trimJSONSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b[:len(b):len(b)]
}
